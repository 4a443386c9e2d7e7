"""Site values of the Slurm profile (``workflow/profiles/slurm/config.yaml``), read and checked here.

The profile is a YTE template; its ``__definitions__`` call :func:`load_site` and fill the scheduling, resource
and GPU settings in from the returned dict. Each value comes from an environment variable ``DWGF_SLURM_<KEY>`` or
from a small YAML site file: ``$DWGF_SLURM_SITE``, else ``workflow/profiles/slurm/site.yaml`` (relative to the
working directory; copy ``site.example.yaml``); the environment wins over the file. Keys
(workflow/profiles/slurm/README.md):

* text: ``partition`` (CPU jobs; unset: Slurm's default), ``gpu_partition`` (solve jobs; unset: ``partition``),
  ``account`` (``sbatch -A``), ``qos``, ``gpu_model`` (``--gpus=<model>:1``);
* integers: ``solve_gpus`` (GPUs per solve job, 0 for CPU-only sites; default 1), ``cpus_per_gpu`` (CPUs per
  solve job; 4), ``gpu_mem_mb`` (memory of a solve job, first attempt; 32000), ``mem_mb`` (other jobs; 4000).

This module does not import torch (the profile is read before the Snakefile).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TEXT_KEYS = ("partition", "gpu_partition", "account", "qos", "gpu_model")
INT_DEFAULTS = {"solve_gpus": 1, "cpus_per_gpu": 4, "gpu_mem_mb": 32000, "mem_mb": 4000}
DEFAULT_SITE_FILE = "workflow/profiles/slurm/site.yaml"


def load_site(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The site values: file, then environment overrides, then checks and defaults (module docstring).

    Raises FileNotFoundError when ``DWGF_SLURM_SITE`` names no file, ValueError naming the key (and the file or
    variable it came from) for an unknown key, a non-integer or out-of-range integer, or ``gpu_model`` with
    ``solve_gpus: 0``.
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get("DWGF_SLURM_SITE")
    path = Path(explicit or DEFAULT_SITE_FILE)
    site: dict[str, Any] = {}
    if explicit and not path.is_file():
        raise FileNotFoundError(
            f"DWGF_SLURM_SITE={explicit!r} is not a file: unset it, or create it from "
            "workflow/profiles/slurm/site.example.yaml"
        )
    if path.is_file():
        site = yaml.safe_load(path.read_text()) or {}
        if not isinstance(site, dict):
            raise ValueError(f"Slurm site file {path}: expected a mapping, got {type(site).__name__}")
        unknown = sorted(set(site) - set(TEXT_KEYS) - set(INT_DEFAULTS))
        if unknown:
            raise ValueError(
                f"Slurm site file {path}: unknown key(s) {unknown}; allowed: {list(TEXT_KEYS) + list(INT_DEFAULTS)}"
            )
    for key in (*TEXT_KEYS, *INT_DEFAULTS):
        if environ.get(f"DWGF_SLURM_{key.upper()}"):
            site[key] = environ[f"DWGF_SLURM_{key.upper()}"]
    site = {k: str(v).strip() for k, v in site.items() if v is not None and str(v).strip()}
    for key, default in INT_DEFAULTS.items():
        value = site.get(key, default)
        try:
            site[key] = int(value)
        except ValueError:
            raise ValueError(
                f"Slurm site value {key}={value!r} is not an integer (file {path}, or DWGF_SLURM_{key.upper()})"
            ) from None
        minimum = 0 if key == "solve_gpus" else 1
        if site[key] < minimum:
            raise ValueError(f"Slurm site value {key}={site[key]} is out of range (minimum {minimum})")
    if site["solve_gpus"] == 0 and "gpu_model" in site:
        raise ValueError("Slurm site values: gpu_model is set but solve_gpus is 0; drop one of them")
    if site.get("partition"):
        site.setdefault("gpu_partition", site["partition"])
    return site
