"""Latent-DPS: diffusion posterior sampling run in the latent space of a latent diffusion model.

The baseline of the PSLD paper (Rout et al. 2023, arXiv 2307.00619; docs/method.md#psld) obtained by dropping PSLD's
gluing term: DDIM in latent space, each step corrected by

    z_t' <- z_t' - omega * grad_{z_t} ||y - A D(zhat_0(z_t))||,
    zhat_0 = (z_t - sqrt(1 - abar_t) eps(z_t, t)) / sqrt(abar_t),

with the gradient taken through the UNet and the decoder (the DPS step of Chung et al. 2023 with the pixel denoiser
replaced by D o zhat_0; the norm is not squared, as in DPS and PSLD). It shares PSLD's loop
(:func:`dwgf.solvers.psld.guided_ddim`) with gamma = 0, so the two differ in exactly one term.

Naming: the PSLD paper also has "GML-DPS" (goodness-modified latent DPS), which *adds* gamma ||E(D(zhat_0)) -
zhat_0||; that variant is ``psld`` with ``gluing="autoencoder"``, not this module.

Defaults: omega = 1 (PSLD's general setting), DDIM eta = 0 and 1000 steps over t = 999..0, as for PSLD.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from dwgf.operators.base import LinearOperator
from dwgf.priors.base import LatentPrior
from dwgf.solvers.base import SolveResult
from dwgf.solvers.hyper import HyperSpec, OfficialTask
from dwgf.solvers.psld import HYPER as PSLD_HYPER
from dwgf.solvers.psld import N_STEPS, guided_ddim

#: The hyper-parameters, declared once: PSLD's declarations without the gluing term (omega = 1 is PSLD's general
#: setting). Per-task settings are [inferred]: no official Latent-DPS settings exist for these tasks; this baseline
#: keeps PSLD's per-task measurement weights (docs/method.md#psld: box inpainting omega = 1e-1, SR/general omega = 1)
#: so that it differs from PSLD only by the gluing term.
_INFERRED = "[inferred] PSLD's omega for this task (docs/method.md#psld)"
HYPER = HyperSpec(
    solver="latent_dps",
    label="Latent-DPS",
    n_particles=PSLD_HYPER.n_particles,
    n_steps=PSLD_HYPER.n_steps,
    source="PSLD without its gluing term (docs/method.md#psld); no official Latent-DPS code for these tasks",
    schedule=PSLD_HYPER.schedule,
    params=[
        replace(PSLD_HYPER["omega"], meaning="DPS step size on ||y - A D(zhat_0)|| (PSLD's general omega)"),
        *(PSLD_HYPER[name] for name in ("eta", "t_max", "t_min", "prediction_noise_std", "trace")),
    ],
    official={
        operator: OfficialTask({"omega": task.hyper["omega"]}, _INFERRED)
        for operator, task in PSLD_HYPER.official.items()
    },
    derived={"gamma": "PSLD's gluing weight, always 0 here (Latent-DPS is PSLD without the gluing term)"},
)

#: Derived from :data:`HYPER`.
DEFAULTS: dict[str, Any] = HYPER.defaults
TASK_DEFAULTS: dict[str, dict[str, Any]] = HYPER.task_defaults


def resolve_hyper(hyper: dict[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` updated with ``hyper``; ValueError naming any bad key or value (:data:`HYPER`)."""
    return HYPER.resolve(hyper)


def solve(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n_particles: int,
    generator: torch.Generator | list[torch.Generator],
    *,
    n_steps: int = N_STEPS,
    progress: bool = True,
    **hyper: Any,
) -> SolveResult | list[SolveResult]:
    """Run Latent-DPS on B observations ``y`` (B, *y_shape) with ``n_particles`` independent DDIM chains each, one
    generator per image (a single generator with y (1, ...) returns one result).

    Hyper-parameters: :data:`DEFAULTS`. Random draws from each image's generator: the initial latents, then per
    step the prediction noise (if enabled) and the DDIM noise (eta > 0). Divergence is reported per image, not
    raised (``status="diverged"``).
    """
    resolved = resolve_hyper(hyper)
    return guided_ddim(
        prior,
        operator,
        y,
        n_particles,
        generator,
        n_steps=n_steps,
        progress=progress,
        hyper={**resolved, "gamma": 0.0},
        spec=HYPER,
    )
