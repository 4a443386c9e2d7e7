# Steps 1-3: test images, prior, observations.

import shlex


# A prior_samples data source draws its ground truths from the fitted prior: then this rule reads the prior.
rule acquire_images:
    input:
        prior=[PLAN.path("prior")] if PLAN.images_need_prior else [],
    output:
        PLAN.path("images_manifest"),
    params:
        spec=spec(PLAN.acquire_spec),
        root=R,
        prior=lambda wc, input: f"--prior {shlex.quote(input.prior[0])}" if input.prior else "",
    log:
        PLAN.log("acquire_images", "acquire_images"),
    benchmark:
        PLAN.benchmark("acquire_images", "acquire_images")
    shell:
        "dwgf acquire-images --spec {params.spec:q} --root {params.root:q} {params.prior} --out {output:q}"
        " > {log:q} 2>&1"


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
    _random_init = PLAN.spec["prior"].get("random_init")

    if _random_init:

        # Random-weight SD folder + its lock (prior.random_init; cost and DAG tests), acquired below like real weights.
        rule build_random_weights:
            output:
                folder=directory(PLAN.spec["prior"]["local_dir"]),
                lock=PLAN.spec["prior"]["lock"],
            params:
                arch=_random_init["arch"],
                seed=_random_init["seed"],
                image_size=PLAN.spec["image_size"],
            log:
                PLAN.log("build_random_weights", "build_random_weights"),
            benchmark:
                PLAN.benchmark("build_random_weights", "build_random_weights")
            shell:
                "dwgf build-random-sd --arch {params.arch} --seed {params.seed} --image-size {params.image_size}"
                " --out {output.folder:q} --lock {output.lock:q} > {log:q} 2>&1"

    rule acquire_weights:
        input:
            lock=[PLAN.spec["prior"]["lock"]] if _random_init else [],
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
