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

from typing import Any

import torch

from dwgf.operators.base import LinearOperator
from dwgf.priors.base import LatentPrior
from dwgf.solvers.base import SolveResult
from dwgf.solvers.psld import N_STEPS, guided_ddim, resolve_hyper

DEFAULTS: dict[str, Any] = {
    "omega": 1.0,  # DPS step size on ||y - A D(zhat_0)|| (PSLD's general omega)
    "eta": 0.0,
    "t_max": 999,
    "t_min": 0,
    "prediction_noise_std": 0.0,
    "trace": False,
}

#: Per-task settings. [inferred] No official Latent-DPS settings exist for these tasks; this baseline keeps PSLD's
#: per-task measurement weights
#: (docs/method.md#psld: box inpainting omega = 1e-1, SR/general omega = 1) so that it differs
#: from PSLD only by the gluing term.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "box_inpainting": {"omega": 1e-1},
    "sr_avgpool": {"omega": 1.0},
    "sr_bicubic": {"omega": 1.0},
}


def solve(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n_particles: int,
    generators: torch.Generator | list[torch.Generator],
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
    resolved = resolve_hyper(hyper, defaults=DEFAULTS, name="Latent-DPS")
    return guided_ddim(
        prior,
        operator,
        y,
        n_particles,
        generators,
        n_steps=n_steps,
        progress=progress,
        hyper={**resolved, "gamma": 0.0},
        method="latent_dps",
    )
