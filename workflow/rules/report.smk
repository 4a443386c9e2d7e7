# Steps 7-9: tables, plots and the qualitative grid, marked for `snakemake --report`; then the `verify` target.

from dwgf.reporting.front_page import FrontPage

# The report's first page (workflow/report/workflow.rst prints it): suite, results commit, verify status and the
# main numbers, built from the files on disk when `snakemake --report` renders it (Jinja sees only the config).
config["report_front_page"] = FrontPage(R, PLAN.report_spec(), PLAN.spec.get("description", ""))


def decoder_note():
    """The qualitative caption's note on what a linear decoder can show (test bed only; one source, in dwgf)."""
    from dwgf.reporting.qualitative import LINEAR_DECODER_NOTE

    return LINEAR_DECODER_NOTE if PLAN.spec["prior"]["kind"] == "gaussian_mixture" else ""


rule tables:
    input:
        metrics=PLAN.path("metrics"),
        set_metrics=PLAN.path("set_metrics_all"),
        runtime=f"{R}/runtime.parquet",
    output:
        main=report(
            PLAN.path("table_main", ext="html"),
            caption="../report/table_main.rst",
            category="Tables",
            labels={"table": "main"},
        ),
        runtime=report(
            PLAN.path("table_runtime", ext="html"),
            caption="../report/table_runtime.rst",
            category="Tables",
            labels={"table": "runtime"},
        ),
        ablations=[
            report(
                PLAN.path("table_ablation", ablation=a.name, ext="html"),
                caption="../report/table_ablation.rst",
                category="Tables",
                labels={"table": f"ablation {a.name}"},
            )
            for a in PLAN.ablations
        ],
        paper=[
            report(
                PLAN.path("table_paper", ext="html"),
                caption="../report/table_paper.rst",
                category="Tables",
                labels={"table": "paper (reported) vs this run"},
            )
        ]
        if PLAN.paper_reference
        else [],
        others=[p for p in PLAN.table_files() if not p.endswith(".html")],
        record=PLAN.path("tables_record"),
    params:
        spec=spec(PLAN.report_spec),
        protocol=protocol(),
        raw_parameters=raw_parameters(),
        root=R,
        out_dir=PLAN.path("tables_folder"),
    log:
        PLAN.log("tables", "tables"),
    benchmark:
        PLAN.benchmark("tables", "tables")
    shell:
        "dwgf tables --spec {params.spec:q} --root {params.root:q} --metrics {input.metrics:q}"
        " --set-metrics {input.set_metrics:q} --runtime {input.runtime:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot_ablation:
    input:
        metrics=PLAN.path("metrics"),
    output:
        png=report(
            PLAN.path("plot_ablation"),
            caption="../report/plot_ablation.rst",
            category="Ablations",
            labels={"ablation": "{ablation}"},
        ),
        record=PLAN.path("plot_ablation") + ".prov.json",
    params:
        spec=spec(PLAN.report_spec),
        protocol=protocol(),
        raw_parameters=raw_parameters(),
        root=R,
    log:
        PLAN.log("plot_ablation", "{ablation}"),
    benchmark:
        PLAN.benchmark("plot_ablation", "{ablation}")
    shell:
        "dwgf plots --spec {params.spec:q} --root {params.root:q} --metrics {input.metrics:q}"
        " --ablation {wildcards.ablation:q} --out {output.png:q} > {log:q} 2>&1"


rule qualitative:
    input:
        images=PLAN.path("images_manifest"),
        observations=PLAN.path("observations"),
        shards=lambda wc: PLAN.qualitative_shards(wc.task),
        prior=PLAN.path("prior"),  # the test bed's grid shows the exact posterior mean and a sample
    output:
        png=report(
            PLAN.path("plot_qualitative"),
            caption="../report/qualitative.rst",
            category="Qualitative",
            labels={"task": "{task}"},
        ),
        record=PLAN.path("plot_qualitative") + ".prov.json",
    params:
        spec=spec(PLAN.report_spec),
        protocol=protocol(),
        raw_parameters=raw_parameters(),
        decoder_note=lambda wc: decoder_note(),
        root=R,
    log:
        PLAN.log("qualitative", "{task}"),
    benchmark:
        PLAN.benchmark("qualitative", "{task}")
    shell:
        "dwgf qualitative --spec {params.spec:q} --root {params.root:q} --task {wildcards.task:q}"
        " --images {input.images:q} --observations {input.observations:q} --shards {input.shards:q}"
        " --prior {input.prior:q} --out {output.png:q} > {log:q} 2>&1"


# The root record: the hash of every artifact the suite's plan expects (records included), the resolved suite config
# and the invocation that completed the run (dwgf/audit/root.py). Last job of the default target.
rule seal:
    input:
        PLAN.targets(),
    output:
        PLAN.path("root_record"),
    params:
        spec=lambda wc: Plan.dumps(suite_config(config)),
        root=R,
    log:
        PLAN.log("seal", "seal"),
    shell:
        "dwgf seal --spec {params.spec:q} --root {params.root:q} --out {output:q} > {log:q} 2>&1"


# `snakemake -c 2 verify`: build everything, then re-hash the whole suite with `dwgf verify` (dwgf/audit/README.md).
# It exits non-zero on any broken provenance link; the log names each file and the `snakemake --forcerun` command
# that repairs it.
# No declared output on purpose: Snakemake always runs an output-less job when it is requested, so a file tampered
# with after an earlier verify is still caught (a declared verify.json would make a second `verify` a no-op, and on
# failure Snakemake would delete the report). The JSON report goes to audit/, a folder verify itself exempts, and
# `verify` is not among the default target's inputs.
rule verify:
    localrule: True
    input:
        PLAN.targets(),
        PLAN.path("root_record"),
    params:
        root=R,
        report=PLAN.path("verify"),
    log:
        PLAN.log("verify", "verify"),
    shell:
        "dwgf verify {params.root:q} --recompute 2 --json-out {params.report:q} 2>&1 | tee {log:q}"
