# dwgf: regenerate every result of the DWGF reproduction with one command.
#
#   snakemake -c 2                         the demo suite (CPU, offline, a few minutes)
#   snakemake -c 1 --config suite=paper    the paper reproduction (GPU; workflow/README.md)
#   snakemake --report report.html         tables, plots and captions after a run
#   snakemake -c 2 verify                  build, then re-hash every result (dwgf verify); fails on a broken link
#
# Only wiring lives here and in workflow/rules/*.smk: each rule calls one `dwgf` verb with the JSON spec of its
# job (dwgf.pipeline.plan.Plan); the verbs do the work and write provenance records.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


from pathlib import Path

from dwgf.pipeline.config import validate_config
from dwgf.pipeline.plan import Plan, WILDCARD_CONSTRAINTS

# Fails before any job with "config key 'suites.<suite>.<...>': <reason>". The schema file is completed with the
# solver and operator registries (dwgf.pipeline.config.full_schema), so it is applied here rather than by
# snakemake.utils.validate, which would see the file alone.
validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

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
