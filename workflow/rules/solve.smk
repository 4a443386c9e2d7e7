# Step 4: one job per method x task x variant x shard.


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
