"""Plan-time checks that need the solver and operator code: run by the Snakefile right after the plan is built,
so ``snakemake -n`` fails, naming the config key, for every value that would otherwise fail only inside a job
(with the message only in that job's log).

Checked, for the selected suite:

1. every task's operator is built (``make_operator(operator, image_size, **params)``: an SR factor that does not
   divide the image size, an unknown parameter, ...);
2. every method x task x variant: the hyper-parameters resolve against the solver's declaration
   (:meth:`dwgf.solvers.hyper.HyperSpec.resolve`, which also checks combinations) and ``n_steps`` fits the
   solver's time grid (:func:`dwgf.solvers.base.make_timesteps`);
3. bundled test ids (and bundled reference ids) name a crop that exists (unknown ids are listed with close matches);
4. ``device: cuda`` has a CUDA device -- only when the jobs run in this process's machine (local execution or a
   dry run of it). A cluster submission (e.g. ``--profile workflow/profiles/slurm``) skips it: the submit host may
   have no GPU, the jobs' nodes do. ``DWGF_ALLOW_MISSING_CUDA=1`` skips it explicitly (e.g. to list the paper
   suite's jobs on a laptop).

Building operators and resolving hyper-parameters is cheap (no model, no data); this module imports torch.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from dwgf.pipeline.config import ConfigError
from dwgf.pipeline.variants import MAIN, SOLVE_ARGUMENTS, Suite

#: Environment variable that skips the CUDA check (check 4).
ALLOW_MISSING_CUDA = "DWGF_ALLOW_MISSING_CUDA"


class _MeasurementStandIn:
    """Stands in for the ``y_clean`` tensor that ``dwgf solve`` supplies (only its presence is checked here)."""

    shape = ()
    dtype = "float32"


LOCAL_EXECUTORS = ("local", "dryrun", "touch")


def executor_from_argv(argv: list[str], cwd: str | os.PathLike = ".") -> str:
    """The executor a ``snakemake`` command line selects: ``--executor/-e NAME``, else the ``executor:`` key of the
    ``--profile`` / ``--workflow-profile`` it names (a folder or a name under ``workflow/profiles/``), else ``local``.

    At Snakefile parse time Snakemake has not created its executor yet (``workflow.executor_plugin`` is None and
    ``workflow.local_exec`` is True even for ``--profile workflow/profiles/slurm``), so the command line is read.

    >>> executor_from_argv(["snakemake", "-n", "--executor", "slurm"])
    'slurm'
    >>> executor_from_argv(["snakemake", "-c", "2"])
    'local'
    """
    import yaml

    def value(flags: tuple[str, ...]) -> str | None:
        for i, word in enumerate(argv):
            for flag in flags:
                if word == flag and i + 1 < len(argv):
                    return argv[i + 1]
                if word.startswith(flag + "="):
                    return word.split("=", 1)[1]
        return None

    executor = value(("--executor", "-e"))
    if executor:
        return executor
    for flag in (("--profile",), ("--workflow-profile",)):
        profile = value(flag)
        if not profile:
            continue
        for folder in (Path(cwd) / profile, Path(cwd) / "workflow" / "profiles" / profile, Path(profile)):
            file = folder / "config.yaml"
            if file.is_file():
                executor = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("executor")
                if executor:
                    return str(executor)
    return "local"


def check_plan(plan: Suite, *, jobs_run_here: bool = True) -> None:
    """Run checks 1-4 (module docstring); raise :class:`ConfigError` naming the key of the first failure."""
    check_operators(plan)
    check_methods(plan)
    check_bundled_ids(plan)
    plan.check_data()  # the user's own images (folder / archive sources)
    if jobs_run_here:
        check_device(plan)


def _where(plan: Suite, *keys: str) -> str:
    return ".".join(["suites", plan.suite, *keys])


def check_operators(plan: Suite) -> None:
    from dwgf.operators import make_operator

    size = plan.spec["image_size"]
    for task, entry in plan.spec["tasks"].items():
        try:
            make_operator(entry["operator"], size, **(entry.get("params") or {}))
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"config key {_where(plan, 'tasks', task, 'params')!r}: operator {entry['operator']!r} at "
                f"image_size {size}: {error}"
            ) from error


def _settings_key(plan: Suite, method: str, task: str, variant: str, name: str) -> str:
    """The config key that sets ``name`` (``hyper`` or a solve argument) for this method/task/variant."""
    if variant != MAIN:
        ablation, _ = plan.variant_info(variant)
        parameter = ablation.parameter
        if parameter == name or (name == "hyper" and parameter not in SOLVE_ARGUMENTS):
            return _where(plan, "ablations", ablation.name, "values")
    override = (plan.spec["methods"][method].get("per_task") or {}).get(task) or {}
    if name in override:
        return _where(plan, "methods", method, "per_task", task, name)
    return _where(plan, "methods", method, name)


def check_methods(plan: Suite) -> None:
    from dwgf.solvers import solver_hyper
    from dwgf.solvers.base import make_timesteps

    for method in plan.methods:
        spec = solver_hyper(plan.solver(method))
        for task in plan.method_tasks(method):
            sigma_y = plan.spec["tasks"][task]["sigma_y"]
            for variant in plan.variants(method, task):
                settings = plan.settings(method, task, variant)
                hyper = dict(settings["hyper"])
                if hyper.get("per_particle_noise") and "y_clean" in spec.names:
                    hyper.update(y_clean=_MeasurementStandIn(), sigma_y=float(sigma_y))  # what `dwgf solve` adds
                try:
                    resolved = spec.resolve(hyper)
                except ValueError as error:
                    key = _settings_key(plan, method, task, variant, "hyper")
                    raise ConfigError(f"config key {key!r} (task {task}, variant {variant}): {error}") from error
                if resolved.get("langevin"):
                    continue  # its flow repeats timesteps (dwgf.solvers.dwgf.langevin_timesteps): any n_steps >= 1
                t_max, t_min = spec.timestep_range(resolved)
                try:
                    make_timesteps(settings["n_steps"], t_max=t_max, t_min=t_min)
                except ValueError as error:
                    key = _settings_key(plan, method, task, variant, "n_steps")
                    raise ConfigError(
                        f"config key {key!r} (task {task}, variant {variant}): {error} (the {spec.label} time grid)"
                    ) from error


def _bundled_id_error(image_id: str, size: int) -> str | None:
    """Why ``image_id`` is not a bundled crop of side ``size`` (None if it is one), with close matches."""
    from dwgf.data.bundled import SOURCE_IMAGES, parse_crop_id, source_image

    try:
        name, row, col = parse_crop_id(image_id)
    except ValueError as error:
        # the image name is the part people mistype; keep the position they wrote
        head, _, tail = str(image_id).partition("-")
        names = difflib.get_close_matches(head, SOURCE_IMAGES, n=3, cutoff=0.6)
        guesses = [f"{name}-{tail}" if tail else name for name in names]
        hint = f"; close matches: {guesses}" if guesses else ""
        return f"{error}{hint}"
    height, width = source_image(name).shape[:2]
    if row + size > height or col + size > width:
        return (
            f"a {size}x{size} crop at row {row}, col {col} does not fit in {name!r} ({height}x{width}); the "
            f"largest corner is r{height - size:04d}-c{width - size:04d}"
        )
    return None


def check_bundled_ids(plan: Suite) -> None:
    size = plan.spec["image_size"]
    sets: list[tuple[str, Any]] = []
    for name, part in plan.image_sets.items():
        if part["source"]["kind"] == "bundled":
            sets.append((plan._where_ids(name), part["ids"]))
    reference = plan.reference
    if reference and reference["source"]["kind"] == "bundled" and isinstance(reference["ids"], list):
        sets.append((_where(plan, "metrics", "set_level", "reference", "ids"), reference["ids"]))
    for key, ids in sets:
        if not isinstance(ids, list):
            raise ConfigError(
                f"config key {key!r}: a bundled source needs a list of crop ids '<image>-r<row>-c<col>', got {ids!r}"
            )
        for index, image_id in enumerate(ids):
            problem = _bundled_id_error(image_id, size)
            if problem:
                raise ConfigError(
                    f"config key '{key}[{index}]': unknown bundled id {image_id!r}: {problem}. A bundled source takes "
                    "bundled crop ids only; for your own images use data.source: {kind: folder, path: DIR} with ids "
                    "= their file names without extension"
                )


def check_device(plan: Suite) -> None:
    if plan.spec["device"] != "cuda" or os.environ.get(ALLOW_MISSING_CUDA) == "1":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"config key {_where(plan, 'device')!r}: 'cuda', but torch.cuda.is_available() is False here and the "
            f"jobs would run on this machine. Run on a GPU machine, submit to a cluster (snakemake --profile "
            f"workflow/profiles/slurm: the check is skipped because the jobs run on GPU nodes), choose a CPU suite, "
            f"or set {ALLOW_MISSING_CUDA}=1 to plan anyway (the solve jobs will still need a GPU)"
        )
