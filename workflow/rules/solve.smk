# Step 4: one job per method x task x variant x shard (`solve_jobs: per_shard`, the default), or one job per
# method x task solving all its variants and shards in one process (`solve_jobs: per_method_task`).


if PLAN.solve_jobs_mode == "per_shard":

    rule solve:
        input:
            prior=PLAN.path("prior"),
            observations=PLAN.path("observations"),
        output:
            PLAN.path("shard"),
        params:
            spec=shard_spec("solve"),
            ids=lambda wc: ",".join(PLAN.shard_ids(wc.method, wc.task, wc.variant, wc.shard)),
            batch_images=lambda wc: PLAN.batch_images(wc.method),
            root=R,
        log:
            PLAN.log("solve", "{method}/{task}/{variant}/shard-{shard}"),
        benchmark:
            PLAN.benchmark("solve", "{method}/{task}/{variant}/shard-{shard}")
        resources:
            **resources("solve"),
        shell:
            "dwgf solve --spec {params.spec:q} --root {params.root:q} --prior {input.prior:q}"
            " --observations {input.observations:q} --ids {params.ids:q} --batch-images {params.batch_images}"
            " --out {output:q} > {log:q} 2>&1"

else:
    # per_method_task -- one process per method x task writes every shard record (and image file) the rule above
    # would write, with the same specs and records (dwgf.pipeline.solve.solve_batch); the longest groups first.
    # One rule per method x task, so each lists its outputs exactly.
    for _method, _task in PLAN.solve_groups():

        rule:
            name:
                f"solve_{_method}_{_task}"
            input:
                prior=PLAN.path("prior"),
                observations=PLAN.path("observations", task=_task),
            output:
                PLAN.solve_group_records(_method, _task),
            params:
                batch=spec(PLAN.solve_batch_spec, _method, _task),
                batch_images=PLAN.batch_images(_method),
                root=R,
            log:
                PLAN.log("solve_batch", f"{_method}/{_task}"),
            benchmark:
                PLAN.benchmark("solve_batch", f"{_method}/{_task}")
            priority: PLAN.solve_group_priority(_method, _task)
            resources:
                **resources("solve"),
            shell:
                "dwgf solve-batch --spec {params.batch:q} --root {params.root:q}"
                " --batch-images {params.batch_images} > {log:q} 2>&1"
