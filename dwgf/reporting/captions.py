"""Caption text of the report: the protocol of a suite in words, from the report spec of its tables and plots.

:func:`protocol_text` takes the spec that ``dwgf tables`` / ``dwgf plots`` receive
(:meth:`dwgf.pipeline.jobspecs.JobSpecs.report_spec`), so a caption states exactly the settings its figure was
made with: which images, which operator and noise per task, each method's N, step count and the hyper-parameters
the config sets (the rest are the solver defaults of docs/hyperparameters.md), and what each metric number is.
The prose comes first; :func:`raw_parameters_rst` adds the same spec as JSON in a collapsed block beneath it
(``<details>``, closed until clicked), for a reader who wants the exact values.
"""

from __future__ import annotations

import json
from typing import Any

#: The summary line of the collapsed block with a caption's raw parameters.
RAW_PARAMETERS_SUMMARY = "Raw parameters (the job's report spec, JSON)"


def _task_text(task: dict[str, Any]) -> str:
    params = ", ".join(f"{k} = {v}" for k, v in task["params"].items())
    operator = f"operator {task['operator']}" + (f" ({params})" if params else "")
    return f"{task['label']}: {operator}, Gaussian noise sigma_y = {task['sigma_y']} on the [-1, 1] scale"


def _settings_text(settings: dict[str, Any]) -> str:
    hyper = ", ".join(f"{k} = {v}" for k, v in sorted(settings["hyper"].items()))
    text = f"N = {settings['n_particles']} particles, {settings['n_steps']} steps"
    return text + (f", {hyper}" if hyper else ", solver defaults")


def _method_text(label: str, per_task: dict[str, dict[str, Any]], task_labels: dict[str, str]) -> str:
    """A method's settings in words; ``per_task`` holds the tasks it runs on (its ``tasks`` key), the rest are
    named as not run."""
    texts = {task: _settings_text(s) for task, s in per_task.items()}
    only = ""
    if len(per_task) < len(task_labels):
        only = "; run on " + ", ".join(task_labels[t] for t in per_task) + " only"
    if len(set(texts.values())) == 1:
        return f"{label} ({next(iter(texts.values()))}{only})"
    return f"{label} (" + "; ".join(f"{task_labels[t]}: {text}" for t, text in texts.items()) + only + ")"


def protocol_text(spec: dict[str, Any]) -> str:
    """One paragraph stating the protocol of a report spec (data, operators, methods, metrics)."""
    tasks = spec["tasks"]
    task_labels = {name: task["label"] for name, task in tasks.items()}
    methods = [_method_text(label, spec["settings"][method], task_labels) for method, label in spec["methods"].items()]
    metrics = spec["metrics"]
    nets = "/".join((metrics.get("lpips") or {}).get("nets", ["alex"]))
    set_level = metrics["set_level"]
    reference = set_level.get("reference")
    against = f"the {len(spec['ids'])} ground-truth images"
    if reference:
        against += f" and, separately, the reference set {reference['name']!r}"
    policies = " and ".join(p.replace("_", " ") for p in set_level["policies"])
    return (
        f"Suite {spec['suite']}: {len(spec['ids'])} test images at {spec['image_size']} px, prior {spec['prior']}, "
        f"base seed {spec['seed']} (per-image seeds derived from it). "
        f"Tasks: {'; '.join(_task_text(t) for t in tasks.values())}. "
        f"Methods (hyper-parameters not listed are the solver defaults, docs/hyperparameters.md): "
        f"{', '.join(methods)}. "
        f"Metrics: PSNR (dB) and SSIM (11x11 Gaussian window) on clamped 8-bit images scaled to [0, 1]; LPIPS "
        f"({nets}, inputs in [-1, 1]; empty when its backbone is not cached); each per-image value is the mean over "
        f"the image's N particles, and tables show mean ± standard deviation over images. FID and KID use the "
        f"Inception {metrics['fid_network']} (clean-fid 'clean' resize) on {policies} of all images, against "
        f"{against}."
    )


def raw_parameters_rst(spec: dict[str, Any]) -> str:
    """reStructuredText for the end of a caption: ``spec`` as indented JSON in a collapsed HTML ``<details>`` block.

    The JSON is a literal block (docutils escapes it); only the ``<details>`` tags are raw HTML. The caption
    template prints this at column 0, so its lines keep their indentation.

    >>> print(raw_parameters_rst({"suite": "s", "ids": ["a"]}))  # doctest: +NORMALIZE_WHITESPACE
    .. raw:: html
    <BLANKLINE>
       <details><summary>Raw parameters (the job's report spec, JSON)</summary>
    <BLANKLINE>
    ::
    <BLANKLINE>
       {
        "ids": [
         "a"
        ],
        "suite": "s"
       }
    <BLANKLINE>
    .. raw:: html
    <BLANKLINE>
       </details>
    """
    text = json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=False)
    body = "\n".join("   " + line for line in text.splitlines())
    return (
        f".. raw:: html\n\n   <details><summary>{RAW_PARAMETERS_SUMMARY}</summary>\n\n"
        f"::\n\n{body}\n\n.. raw:: html\n\n   </details>\n"
    )
