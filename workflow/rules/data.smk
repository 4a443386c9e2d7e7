# Steps 1-3: test images, prior, observations.


rule acquire_images:
    output:
        PLAN.path("images_manifest"),
    params:
        spec=spec(PLAN.acquire_spec),
        root=R,
    log:
        PLAN.log("acquire_images", "acquire_images"),
    benchmark:
        PLAN.benchmark("acquire_images", "acquire_images")
    shell:
        "dwgf acquire-images --spec {params.spec:q} --root {params.root:q} --out {output:q} > {log:q} 2>&1"


if PLAN.spec["prior"]["kind"] == "gaussian_mixture":

    rule fit_prior:
        output:
            PLAN.path("prior"),
        params:
            spec=spec(PLAN.prior_spec),
            root=R,
        log:
            PLAN.log("fit_prior", "fit_prior"),
        benchmark:
            PLAN.benchmark("fit_prior", "fit_prior")
        resources:
            **resources("prior"),
        shell:
            "dwgf fit-prior --spec {params.spec:q} --root {params.root:q} --out {output:q} > {log:q} 2>&1"

else:

    rule acquire_weights:
        output:
            PLAN.path("prior"),
        params:
            spec=spec(PLAN.prior_spec),
            root=R,
        log:
            PLAN.log("acquire_weights", "acquire_weights"),
        benchmark:
            PLAN.benchmark("acquire_weights", "acquire_weights")
        resources:
            **resources("prior"),
        shell:
            "dwgf acquire-weights --spec {params.spec:q} --root {params.root:q} --out {output:q} > {log:q} 2>&1"


if PLAN.metric_weight_inputs():

    rule acquire_metric_weights:
        output:
            PLAN.path("metric_weights"),
        params:
            spec=spec(PLAN.metric_weights_spec),
            root=R,
        log:
            PLAN.log("acquire_metric_weights", "acquire_metric_weights"),
        benchmark:
            PLAN.benchmark("acquire_metric_weights", "acquire_metric_weights")
        shell:
            "dwgf acquire-metric-weights --spec {params.spec:q} --root {params.root:q} --out {output:q} > {log:q} 2>&1"


# Everything the suite fetches from outside, and nothing else: `snakemake -c 1 download --config suite=paper`
# (on a machine with network access, e.g. to carry the caches to an air-gapped one; workflow/README.md).
rule download:
    localrule: True
    input:
        PLAN.path("images_manifest"),
        PLAN.path("prior"),
        PLAN.metric_weight_inputs(),


rule observe:
    input:
        images=PLAN.path("images_manifest"),
    output:
        PLAN.path("observations"),
    params:
        spec=lambda wc: Plan.dumps(PLAN.observe_spec(wc.task)),
        root=R,
    log:
        PLAN.log("observe", "{task}"),
    benchmark:
        PLAN.benchmark("observe", "{task}")
    shell:
        "dwgf observe --spec {params.spec:q} --root {params.root:q} --images {input.images:q} --out {output:q}"
        " > {log:q} 2>&1"
