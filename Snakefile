# dwgf: regenerate every result of the DWGF reproduction with one command.
#
#   snakemake -c 2                         the demo suite (CPU, offline, a few minutes)
#   snakemake -c 1 --config suite=paper    the paper reproduction (GPU; docs/workflow.md)
#   snakemake --report report.html         tables, plots and captions after a run
#
# Only wiring lives here and in workflow/rules/*.smk: each rule calls one `dwgf` verb with the JSON spec of its
# job (dwgf.pipeline.plan.Plan); the verbs do the work and write provenance records.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

from dwgf.pipeline.plan import Plan, WILDCARD_CONSTRAINTS

PLAN = Plan(config)


wildcard_constraints:
    **WILDCARD_CONSTRAINTS,


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/solve.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        PLAN.targets(),
