"""PSLD: Posterior Sampling with Latent Diffusion (Rout et al., NeurIPS 2023, arXiv 2307.00619).

Re-implemented from the update described in docs/method.md#psld (the official ``ldm/models/diffusion/psld.py`` of
``LituRout/PSLD``): a DDIM sampler in latent space whose every step is corrected by the gradient, taken with
respect to the *noisy* latent z_t through the UNet, the decoder and the encoder, of

    L(z_t) = omega * ||y - A D(zhat_0)||  +  gamma * ||E(A^+ y + (I - A^+ A) D(zhat_0)) - zhat_0||,

with zhat_0 = (z_t - sqrt(1 - abar_t) eps(z_t, t)) / sqrt(abar_t) (Tweedie/DDIM prediction). Both norms are plain
(not squared) Euclidean norms, as in the official code. One step, t -> t' (the next timestep of the list):

    sigma_t = eta * sqrt((1 - abar_t') / (1 - abar_t)) * sqrt(1 - abar_t / abar_t')
    z_t'    = sqrt(abar_t') zhat_0 + sqrt(1 - abar_t' - sigma_t^2) eps + sigma_t n  -  grad_{z_t} L,   n ~ N(0, I).

The first term of L is the latent-DPS data-fit ("Latent-DPS", :mod:`dwgf.solvers.latent_dps`). The second is the
"gluing" (goodness) term: the image that agrees with y on the measured subspace and with D(zhat_0) elsewhere must be
a fixed point of the autoencoder. ``gluing="autoencoder"`` replaces the glued image by D(zhat_0) itself, which is the
"GML-DPS" (goodness-modified latent DPS) variant of the PSLD paper.

Choices, each stated because the official code differs or is silent:

* **Pseudo-inverse, not transpose.** The official gluing uses A^T, which is the orthogonal projector only when A has
  orthonormal rows (a mask). For the 8x8 block-average SR operator A A^T = I/64, so A^T y is 64x too dark; the
  projection here is x + A^+(y - A x) with the operator's pseudo-inverse (nearest replication for SR), as
  docs/method.md#psld
  recommends. For a mask A^+ = A^T and nothing changes.
* **Per-particle norms.** The official code runs one image per batch and takes ``torch.linalg.norm`` over the whole
  batch tensor. Solving N particles as one batch with a single norm would couple their step sizes
  (grad = r_i / ||r||_batch), so the loss here is the sum over particles of per-particle norms: each particle gets
  exactly the update it would get if it were solved alone.
* **Timesteps.** The official DDIM loop uses 1000 steps over t = 999..0 (``n_steps=1000`` and the DEFAULTS
  ``t_min=0``). ``abar_prev`` is the abar of the next timestep in the list and 1 after the last one, so the final
  step returns zhat_0 minus the last correction (:func:`ddim_coefficients`).
* **Prediction noise.** The official code adds fresh measurement noise to A D(zhat_0) before the norm (its
  ``noiser``); ``prediction_noise_std`` reproduces that (it is the task's sigma_y there). Default 0: at the paper's
  sigma_y = 0.001 the effect is negligible and it only adds variance to the guidance.
* **Encoder sample.** ``get_first_stage_encoding`` of the official code samples the VAE posterior; with
  ``encoder_sample=True`` (default) so does :meth:`prior.encode`, from ``generator``.

Per-task settings of the official runs live in :data:`TASK_DEFAULTS`, keyed by operator name. :func:`solve` does
*not* look them up: the caller (CLI/config) merges ``{**DEFAULTS, **TASK_DEFAULTS.get(operator.name, {})}`` with
its own overrides so that the resolved values are explicit in the run config and its provenance record.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dwgf.operators.base import LinearOperator
from dwgf.priors.base import LatentPrior
from dwgf.solvers.base import (
    STATUS_DIVERGED,
    STATUS_OK,
    ImageMask,
    SolveResult,
    as_generators,
    check_problem,
    finite_per_image,
    keep_rows,
    make_timesteps,
    per_image_trace,
    progress_bar,
    randn_per_image,
)
from dwgf.solvers.hyper import Hyper, HyperSpec, OfficialTask

#: The hyper-parameters, declared once (:mod:`dwgf.solvers.hyper`): defaults of the PSLD reference code
#: (docs/method.md#psld), general/SR setting gamma = 0.1, omega = 1, DDIM eta = 0, 1000 DDIM steps over t = 999..0
#: (``n_steps`` is an argument of :func:`solve`, default 1000). Official per-task settings: LituRout/PSLD README/run
#: scripts as summarised in docs/method.md#psld ("defaults gamma = 0.1, omega = 1 (SR and general); box inpainting
#: gamma = 1e-2, omega = 1e-1"), keyed by operator name (:func:`dwgf.operators.make_operator`).
_PSLD_REPO = "`LituRout/PSLD` (docs/method.md#psld)"
_PSLD_TASKS = "`LituRout/PSLD` README / run scripts (docs/method.md#psld)"
GLUING_MODES = ("projected", "autoencoder")

HYPER = HyperSpec(
    solver="psld",
    label="PSLD",
    n_particles=4,
    n_steps=1000,
    source="the PSLD reference code `LituRout/PSLD` (docs/method.md#psld)",
    schedule=(999, 0),
    params=[
        Hyper("omega", "float", 1.0, "weight of the measurement error ||y - A D(zhat_0)||", _PSLD_REPO, minimum=0),
        Hyper("gamma", "float", 0.1, "weight of the gluing error ||E(glued) - zhat_0|| (0: Latent-DPS)", _PSLD_REPO,
              minimum=0),
        Hyper("eta", "float", 0.0, "DDIM stochasticity (0: deterministic DDIM)", _PSLD_REPO, minimum=0, maximum=1),
        Hyper("t_max", "int", 999, "first timestep of the DDIM grid", _PSLD_REPO, minimum=0, maximum=999),
        Hyper("t_min", "int", 0, "last timestep of the DDIM grid", _PSLD_REPO, minimum=0, maximum=999),
        Hyper("gluing", "choice", "projected", "projected (PSLD) or autoencoder (GML-DPS: E(D(zhat_0)) without "
              "projection)", _PSLD_REPO, choices=GLUING_MODES),
        Hyper("encoder_sample", "bool", True, "sample the encoder posterior (official) or use its mean",
              "official `get_first_stage_encoding`"),
        Hyper("prediction_noise_std", "float", 0.0, "the official `noiser` on A D(zhat_0); 0 disables it",
              "official `noiser` (docs/method.md#psld)", minimum=0),
        Hyper("trace", "bool", False, "record per-step scalars", "diagnostics", configurable=False,
              config_note="set by `dwgf solve`"),
    ],
    official={
        "box_inpainting": OfficialTask({"gamma": 1e-2, "omega": 1e-1}, _PSLD_TASKS),
        "sr_avgpool": OfficialTask({"gamma": 0.1, "omega": 1.0}, _PSLD_TASKS),
        "sr_bicubic": OfficialTask({"gamma": 0.1, "omega": 1.0}, _PSLD_TASKS),
    },
)  # fmt: skip

#: Derived from :data:`HYPER`: name -> default, and operator name -> official settings (operators not listed use
#: the defaults).
DEFAULTS: dict[str, Any] = HYPER.defaults
TASK_DEFAULTS: dict[str, dict[str, Any]] = HYPER.task_defaults

#: Default number of DDIM steps (official PSLD: 1000).
N_STEPS = HYPER.n_steps

#: Per-step scalars recorded when ``trace=True`` (means over particles).
TRACE_KEYS = ("measurement_error", "gluing_error", "grad_norm")


def resolve_hyper(hyper: dict[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` updated with ``hyper``; ValueError naming any bad key or value (:data:`HYPER`)."""
    return HYPER.resolve(hyper)


def ddim_coefficients(alphas_cumprod: torch.Tensor, timesteps: list[int], eta: float) -> list[dict[str, float]]:
    """Per-step DDIM scalars for a descending timestep list.

    For step k at t = timesteps[k] with t' = timesteps[k + 1] (abar_t' = 1 after the last step)::

        sigma   = eta * sqrt((1 - abar_t') / (1 - abar_t)) * sqrt(1 - abar_t / abar_t')
        a_prev  = sqrt(abar_t'),  dir = sqrt(max(0, 1 - abar_t' - sigma^2))

    so z_t' = a_prev * zhat_0 + dir * eps + sigma * n (Song et al. 2021, eq. 12).

    >>> import torch
    >>> c = ddim_coefficients(torch.tensor([0.9, 0.5]), [1, 0], eta=0.0)
    >>> round(c[0]["sqrt_abar_prev"] ** 2, 6), c[1]["sqrt_abar_prev"], c[1]["dir"]
    (0.9, 1.0, 0.0)
    """
    coefficients = []
    for k, t in enumerate(timesteps):
        abar = float(alphas_cumprod[t])
        abar_prev = float(alphas_cumprod[timesteps[k + 1]]) if k + 1 < len(timesteps) else 1.0
        sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar)) * math.sqrt(max(0.0, 1.0 - abar / abar_prev))
        coefficients.append(
            {
                "t": t,
                "sqrt_abar": math.sqrt(abar),
                "sqrt_one_minus_abar": math.sqrt(1.0 - abar),
                "sqrt_abar_prev": math.sqrt(abar_prev),
                "dir": math.sqrt(max(0.0, 1.0 - abar_prev - sigma**2)),
                "sigma": sigma,
            }
        )
    return coefficients


def glued_image(operator: LinearOperator, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A^+ y + (I - A^+ A) x: the measured subspace from y, its orthogonal complement from x (PSLD's gluing)."""
    return operator.pseudo_inverse(y) + x - operator.pseudo_inverse(operator(x))


def guided_ddim(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n_particles: int,
    generators: torch.Generator | list[torch.Generator],
    *,
    n_steps: int,
    progress: bool,
    hyper: dict[str, Any],
    spec: HyperSpec,
) -> SolveResult | list[SolveResult]:
    """The PSLD / Latent-DPS loop for resolved ``hyper`` (gamma = 0 turns the gluing term off: Latent-DPS);
    ``spec``, the calling solver's declaration, makes the recorded hyper-parameters (:meth:`HyperSpec.solve_record`,
    with ``gamma`` as a derived value when it is not one of the solver's keys).

    B observations ``y`` (B, *y_shape), one generator per image (or one generator with y (1, ...): one result).
    Random draws, from each image's generator, in this order: its initial latents z_T ~ N(0, I); then per step
    the encoder sample (gluing on, ``encoder_sample``), the prediction noise (``prediction_noise_std > 0``) and the
    DDIM noise n (``eta > 0``). The chains never interact, so batching only stacks rows; an image with a
    non-finite loss or latent keeps its last finite latents from that step on while the others go on.
    """
    generators, single = as_generators(generators)
    b = len(generators)
    latent_shape = check_problem(prior, operator, y, n_particles, b)
    n = n_particles
    timesteps = make_timesteps(n_steps, t_max=hyper["t_max"], t_min=hyper["t_min"])
    coefficients = ddim_coefficients(prior.alphas_cumprod, timesteps, float(hyper["eta"]))
    device, model_dtype = prior.device, prior.dtype
    dtype = torch.promote_types(model_dtype, torch.float32)
    omega, gamma = float(hyper["omega"]), float(hyper.get("gamma", 0.0))
    gluing = hyper.get("gluing", "projected")
    noise_std = float(hyper["prediction_noise_std"])
    y = y.to(device=device, dtype=dtype)
    y_rows = y if b == 1 else y.repeat_interleave(n, dim=0)  # image b's y for each of its particles
    history: dict[str, list[torch.Tensor]] | None = {key: [] for key in TRACE_KEYS} if hyper["trace"] else None

    z = randn_per_image((n, *latent_shape), generators, device, dtype)
    mask = ImageMask(b, n, device)
    with prior.rows_per_image(n):
        for step in progress_bar(range(len(timesteps)), progress, spec.solver):
            c = coefficients[step]
            z_t = z.detach().requires_grad_(True)
            with torch.enable_grad():
                eps = prior.eps(z_t.to(model_dtype), c["t"]).to(dtype)
                z0_hat = (z_t - c["sqrt_one_minus_abar"] * eps) / c["sqrt_abar"]
                x0_hat = prior.decode(z0_hat.to(model_dtype)).to(dtype)
                a_x = operator(x0_hat)
                if noise_std > 0:
                    a_x = a_x + noise_std * randn_per_image((n, *a_x.shape[1:]), generators, device, dtype)
                measurement_error = (y_rows - a_x).flatten(1).norm(dim=1)
                loss = omega * measurement_error.reshape(b, n).sum(dim=1)
                gluing_error = None
                if gamma > 0:
                    target = glued_image(operator, y_rows, x0_hat) if gluing == "projected" else x0_hat
                    z_glued = prior.encode_per_image(
                        target.to(model_dtype), generators, sample=bool(hyper["encoder_sample"])
                    ).to(dtype)
                    gluing_error = (z_glued - z0_hat).flatten(1).norm(dim=1)
                    loss = loss + gamma * gluing_error.reshape(b, n).sum(dim=1)
                (grad,) = torch.autograd.grad(loss.sum(), z_t)
            with torch.no_grad():
                z_next = c["sqrt_abar_prev"] * z0_hat + c["dir"] * eps - grad
                if c["sigma"] > 0:
                    z_next = z_next + c["sigma"] * randn_per_image((n, *latent_shape), generators, device, dtype)
            # Per-image finiteness on the device; a non-finite image keeps its last finite latents.
            keep = mask.update(step, finite_per_image(b, loss, z_next))
            if history is not None:
                history["measurement_error"].append(measurement_error.detach().reshape(b, n).mean(dim=1))
                history["gluing_error"].append(
                    gluing_error.detach().reshape(b, n).mean(dim=1)
                    if gluing_error is not None
                    else torch.zeros(b, dtype=dtype, device=device)
                )
                history["grad_norm"].append(grad.reshape(b, -1).norm(dim=1))
            z = keep_rows(keep, z_next.detach(), z)
            if mask.all_diverged(step):
                break

        with torch.no_grad():
            particles = prior.decode(z.to(model_dtype)).to(dtype)
    derived = {key: hyper[key] for key in spec.derived}
    recorded = spec.solve_record(hyper, n_particles=n, n_steps=n_steps, timesteps=timesteps, **derived)
    traces = per_image_trace(history, b)
    results = []
    for image, diverged_at in enumerate(mask.statuses()):
        rows = slice(image * n, (image + 1) * n)
        steps_done = len(timesteps) if diverged_at is None else diverged_at
        results.append(
            SolveResult(
                particles=particles[rows].cpu(),
                latents=z[rows].cpu(),
                status=STATUS_OK if diverged_at is None else STATUS_DIVERGED,
                diverged_at_step=diverged_at,
                n_steps=steps_done,
                hyper=dict(recorded),
                trace=None if traces is None else {k: v[:steps_done] for k, v in traces[image].items()},
            )
        )
    return results[0] if single else results


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
    """Run PSLD on B observations ``y`` (B, *y_shape) with ``n_particles`` independent DDIM chains each, one
    generator per image (a single generator with y (1, ...) returns one result).

    Hyper-parameters: :data:`DEFAULTS` (per-task official values in :data:`TASK_DEFAULTS`, merged by the caller).
    ``particles`` are D(z_0) of the final latents. A non-finite loss or latent stops the loop without raising
    (``status="diverged"``); the result then holds the last finite latents and their decode.
    """
    return guided_ddim(
        prior,
        operator,
        y,
        n_particles,
        generator,
        n_steps=n_steps,
        progress=progress,
        hyper=resolve_hyper(hyper),
        spec=HYPER,
    )
