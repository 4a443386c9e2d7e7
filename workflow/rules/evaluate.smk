# Steps 5-6: per-shard metrics, set-level metrics, aggregation.


if PLAN.reference:

    rule reference_stats:
        output:
            stats=PLAN.reference_stats_files(),
            record=[f + ".prov.json" for f in PLAN.reference_stats_files()],
        params:
            spec=spec(PLAN.reference_spec),
            root=R,
        log:
            PLAN.log("reference_stats", "reference_stats"),
        benchmark:
            PLAN.benchmark("reference_stats", "reference_stats")
        resources:
            **resources("evaluate"),
        shell:
            "dwgf reference-stats --spec {params.spec:q} --root {params.root:q} --out {output.stats:q} > {log:q} 2>&1"


if PLAN.metrics_jobs == "per_shard":

    rule evaluate:
        input:
            shard=PLAN.path("shard"),
            images=PLAN.path("images_manifest"),
            observations=PLAN.path("observations"),
            prior=PLAN.path("prior"),
            weights=PLAN.metric_weight_inputs(),
        output:
            parquet=PLAN.path("shard_metrics"),
            record=PLAN.path("shard_metrics") + ".prov.json",
        params:
            spec=shard_spec("evaluate"),
            root=R,
        log:
            PLAN.log("evaluate", "{method}/{task}/{variant}/shard-{shard}"),
        benchmark:
            PLAN.benchmark("evaluate", "{method}/{task}/{variant}/shard-{shard}")
        resources:
            **resources("evaluate"),
        shell:
            "dwgf evaluate --spec {params.spec:q} --root {params.root:q} --shard {input.shard:q} --images {input.images:q}"
            " --observations {input.observations:q} --prior {input.prior:q} --out {output.parquet:q} > {log:q} 2>&1"


    rule set_metrics:
        input:
            shards=lambda wc: PLAN.shard_records(wc.method, wc.task, wc.variant),
            images=PLAN.path("images_manifest"),
            weights=PLAN.metric_weight_inputs(),
            reference=PLAN.reference_stats_files(),
        output:
            parquet=PLAN.path("set_metrics"),
            record=PLAN.path("set_metrics") + ".prov.json",
        params:
            spec=shard_spec("set_metrics"),
            root=R,
        log:
            PLAN.log("set_metrics", "{method}/{task}/{variant}"),
        benchmark:
            PLAN.benchmark("set_metrics", "{method}/{task}/{variant}")
        resources:
            **resources("evaluate"),
        shell:
            "dwgf set-metrics --spec {params.spec:q} --root {params.root:q} --shards {input.shards:q}"
            " --images {input.images:q} --out {output.parquet:q} > {log:q} 2>&1"


else:
    # metrics.jobs: per_task -- one process per task writes every file the two rules above would write, with the
    # same records (dwgf.pipeline.evaluate.evaluate_batch). One rule per task, so each lists its outputs exactly.
    for _task in PLAN.tasks:

        rule:
            name:
                f"evaluate_batch_{_task}"
            input:
                shards=PLAN.task_shard_records(_task),
                images=PLAN.path("images_manifest"),
                observations=PLAN.path("observations", task=_task),
                prior=PLAN.path("prior"),
                weights=PLAN.metric_weight_inputs(),
                reference=PLAN.reference_stats_files(),
            output:
                PLAN.task_metric_outputs(_task),
            params:
                batch=spec(PLAN.evaluate_batch_spec, _task),
                root=R,
            log:
                PLAN.log("evaluate_batch", _task),
            benchmark:
                PLAN.benchmark("evaluate_batch", _task)
            resources:
                **resources("evaluate"),
            shell:
                "dwgf evaluate-batch --spec {params.batch:q} --root {params.root:q} > {log:q} 2>&1"


rule aggregate:
    input:
        metrics=PLAN.shard_metric_files(),
        set_metrics=PLAN.set_metric_files(),
    output:
        metrics=PLAN.path("metrics"),
        set_metrics=PLAN.path("set_metrics_all"),
        record=PLAN.path("aggregate_record"),
    params:
        spec=spec(PLAN.base_spec),
        root=R,
    log:
        PLAN.log("aggregate", "aggregate"),
    benchmark:
        PLAN.benchmark("aggregate", "aggregate")
    shell:
        "dwgf aggregate --spec {params.spec:q} --root {params.root:q} --metrics {input.metrics:q}"
        " --set-metrics {input.set_metrics:q} --out {output.metrics:q}"
        " --out-set {output.set_metrics:q} > {log:q} 2>&1"
