# Shared wiring helpers. Everything about *what* runs comes from PLAN (dwgf.pipeline.plan.Plan).

R = PLAN.root


def spec(builder, *args):
    """Param function giving the canonical JSON of a Plan spec (a param, so a config change re-runs the job).

    A function, not a string: Snakemake would otherwise expand the braces inside the JSON as wildcards.
    """
    return lambda wc: Plan.dumps(builder(*args))


def shard_spec(kind):
    """Param function for rules with {method}/{task}/{variant} wildcards."""
    builder = {"solve": PLAN.solve_spec, "evaluate": PLAN.evaluate_spec, "set_metrics": PLAN.set_metrics_spec}[kind]
    return lambda wc: Plan.dumps(builder(wc.method, wc.task, wc.variant))


def protocol():
    """Param function with the protocol paragraph the report captions print."""
    return lambda wc: PLAN.protocol()


def raw_parameters():
    """Param function with the collapsed block of raw parameters (the report spec as JSON) beneath a caption."""
    from dwgf.reporting.captions import raw_parameters_rst

    return lambda wc: raw_parameters_rst(PLAN.report_spec())


def resources(group):
    """Snakemake resources of a rule group from the suite's `resources` (none unless the suite sets them)."""
    return dict((PLAN.spec.get("resources") or {}).get(group) or {})
