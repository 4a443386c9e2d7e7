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


from pathlib import Path

from dwgf.pipeline.config import read_yaml, validate_config

# Snakemake's own message for a YAML syntax error names neither file nor line: parse first, naming both. (A broken
# --configfile is read by Snakemake's command line before this file runs: check it with `dwgf plan --config FILE`.)
if Path("config.yaml").is_file():
    read_yaml(Path("config.yaml").resolve())


configfile: "config.yaml"


from dwgf.pipeline.plan import Plan, WILDCARD_CONSTRAINTS
from dwgf.pipeline.preflight import check_plan
from dwgf.suite_run import SuiteRun, suite_config

# Fails before any job with "config key 'suites.<suite>.<...>': <reason>". The schema file is completed with the
# solver and operator registries (dwgf.pipeline.config.full_schema), so it is applied here rather than by
# snakemake.utils.validate, which would see the file alone.
validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

PLAN = Plan(config)
# Operator params, hyper-parameters, step counts, bundled ids and (for jobs that run here) the CUDA device, checked
# now so that `snakemake -n` fails naming the key (dwgf.pipeline.preflight). Cluster jobs re-parse this file on
# their nodes (not the main process): they skip it, and so does a submission to a cluster executor (read from the
# command line: Snakemake creates its executor only after parsing this file).
import sys

from dwgf.pipeline.preflight import LOCAL_EXECUTORS, executor_from_argv

check_plan(PLAN, jobs_run_here=workflow.is_main_process and executor_from_argv(sys.argv) in LOCAL_EXECUTORS)

# One run per results folder (dwgf/suite_run.py): the main process locks results/<suite> before any job starts
# (a second run is refused naming the holder; the lock ends with the process, even after kill -9) and records how it
# was invoked (run/invocation.json: what `dwgf verify` replays to repair). Job processes are started with
# --no-hooks, so only the main process runs these.
RUN = SuiteRun(PLAN.root)


onstart:
    RUN.start(workflow, config)


onsuccess:
    RUN.finish()


onerror:
    RUN.finish()


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
        PLAN.path("root_record"),
