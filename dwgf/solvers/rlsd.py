"""RLSD: Repulsive Latent Score Distillation (Zilberstein, Mardani & Segarra, ICLR 2025, arXiv 2406.16683).

Re-implemented from docs/method.md#rlsd (the official ``constrained_sampling/algos/rsd.py`` and the DWGF repository's
copy). N particles of latent score distillation (RED-diff in latent space), optionally coupled to a pixel variable
by half-quadratic splitting and pushed apart by a feature-space repulsion. Per step t (999 -> 2, like DWGF):

    eps ~ N(0, I) fresh,  z_t = sqrt(abar) z + sqrt(1 - abar) eps,  eps_hat = eps_theta(z_t, t)   (no grad)
    r = eps_hat - eps - gamma_rep * sqrt(1 - abar) * Rep(z_t)                                   (residual)
    prior gradient on z:  w * s_t * r / (N d_z),   s_t = sqrt((1 - abar) / abar)

which is the gradient of the official surrogate ``w * s_t * mean(sg(r) * z)`` (mean over N d_z elements).

**Augmented** (default, ``augmented=True``): the variational variables are (x, z), coupled by (rho/2)||x - D(z)||^2.
Two Adam updates per step (official betas (0.9, 0.99)):

* z-step: minimise  sum ||sg(x) - D(z)||^2 / (2 N d_x)  +  w * s_t * mean(sg(r) z)      (Adam, lr_z)
* x-step: minimise  sum ||y - A x||^2 / (2 N d_y)  +  rho * sum ||x - sg(D(z_new))||^2 / (2 N d_x)   (Adam, lr_x)

  where D(z_new) is decoded again *after* the z-step (the official code decodes twice per step). The data fit is the
  official mean over the d_y real measurements, :func:`dwgf.solvers.base.mean_data_fit`. x starts from N(0, I) in
  pixel space, z from N(0, I), and **x (the pixel variable) is returned** as the particles (D(z) is in ``extras``).

**Prior weight w** (``prior_weight_over_rho``): the official RLSD code multiplies the prior by w_t / rho (its z-loss
is the coupling divided by rho), the DWGF repository's copy by w_t alone (docs/method.md#rlsd). Default ``True`` (w_t /
rho), because the per-task settings in :data:`TASK_DEFAULTS` come from the official RLSD runs and were tuned with
it; set ``False`` to reproduce the DWGF repository's RLSD. The flag has no effect when ``augmented=False``.

**Non-augmented** (``augmented=False``): a single latent variable,
loss = sum ||y - A D(z)||^2 / (2 N d_y) + w_t * s_t * mean(sg(r) z), one Adam step on z; the particles are D(z).
This is the loss of docs/method.md#rlsd (in the official repository it survives only as a commented-out block: the file
``rsd_nonaug.py`` still carries the x variable and differs from ``rsd.py`` only in where rho enters).

**Repulsion** (``repulsion_gamma > 0``; official ``gamma`` with ``dino_flag``): each noisy latent is decoded and
mapped by ``feature_extractor`` (a callable images (N, 3, H, W) -> features (N, ...), differentiable; officially
DINO ViT-S/16, which cannot be fetched here, so there is no default). With f_i the flattened features,
d_ij = ||f_i - f_j||, a per-particle median bandwidth h_i = median_{j != i}(d_ij)^2 / log(N - 1) (``torch.median``:
the lower middle value for an even count), k_ij = exp(-d_ij^2 / h_i) and g_i = sum_{j != i} 2 k_ij (f_i - f_j) / h_i
(= -grad_{f_i} sum_j k_ij at fixed h),

    Rep_i = J_i^T g_i / sum_{j != i} k_ij,    J_i = d f_i / d z_t^i  (through the decoder and the extractor),

see :func:`repulsion`. It is undefined for N < 3 (log(N - 1) <= 0), which raises. ``sigma_break=None`` applies it at
every step (official RLSD); an int T applies it only while t > T. The DWGF copy gates on sigma_t > sigma[k] with
k = int(num_steps / 1000 * sigma_break) = int(999 / 1000 * 600) = 599, an index into its *descending* 999-step
schedule t = 999, 998, ..., so sigma[599] is the sigma of t = 999 - 599 = 400; since sigma_t increases with t, the
gate holds for t = 999 ... 401, which is ``sigma_break=400`` here (not 599: 599 is a position, not a timestep).

Per-task official settings are data in :data:`TASK_DEFAULTS` / :data:`TASK_N_PARTICLES`; :func:`solve` does not look
them up: the caller (CLI/config) merges ``{**DEFAULTS, **TASK_DEFAULTS.get(operator.name, {})}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dwgf.operators.base import LinearOperator
from dwgf.priors.base import LatentPrior
from dwgf.solvers.base import (
    STATUS_DIVERGED,
    STATUS_OK,
    ImageMask,
    MaskedAdam,
    SolveResult,
    as_generators,
    check_problem,
    finite_per_image,
    make_timesteps,
    mean_data_fit,
    noise_level,
    per_image_trace,
    progress_bar,
    randn_per_image,
)
from dwgf.solvers.hyper import Hyper, HyperSpec, OfficialTask

#: The hyper-parameters, declared once (:mod:`dwgf.solvers.hyper`): defaults of the RLSD configuration file
#: ``configs/algo/rsd_stable.yaml`` (identical in the official RLSD repository and the DWGF copy; docs/method.md#rlsd):
#: w_t 0.1, rho 0.2, lr_x 0.2, lr_z 0.2, no repulsion (gamma 0, dino_flag False), Adam betas (0.9, 0.99).
#: ``n_particles`` (4) and ``n_steps`` (998: t = 999..2) are arguments. Official per-task settings of the RLSD
#: repository (``constrained_sampling/runs/*.sh``, docs/method.md#rlsd), all with sigma_y 0.001, 999 scheduler steps
#: and no repulsion, keyed by operator name: ``half_face.sh`` (inp_large_box): N 4, w_t 0.15, rho 0.07, lr_x 0.4,
#: lr_z 0.8; ``sr.sh`` (sr8): N 2, w_t 0.01, rho 0.05, lr_x 0.4, lr_z 0.6.
_RSD_YAML = "RLSD `configs/algo/rsd_stable.yaml`"


def _check_combinations(resolved: dict[str, Any]) -> None:
    if resolved["augmented"] and resolved["prior_weight_over_rho"] and not resolved["rho"] > 0:
        raise ValueError("RLSD hyper-parameter 'rho' must be > 0 when prior_weight_over_rho=True (weight w_t / rho)")
    if resolved["repulsion_gamma"] > 0 and resolved["feature_extractor"] is None:
        raise ValueError(
            "RLSD repulsion_gamma > 0 needs feature_extractor=<callable images -> features> (officially DINO "
            "ViT-S/16, which is not available offline); pass one or set repulsion_gamma=0"
        )


HYPER = HyperSpec(
    solver="rlsd",
    label="RLSD",
    n_particles=4,
    n_steps=998,
    source="the official RLSD code (`constrained_sampling/algos/rsd.py`, docs/method.md#rlsd)",
    schedule=(999, 2),
    params=[
        Hyper("augmented", "bool", True, "half-quadratic splitting with a pixel variable x (official RLSD)",
              "official `rsd.py`"),
        Hyper("w_t", "float", 0.1, "prior weight", _RSD_YAML, minimum=0),
        Hyper("rho", "float", 0.2, "x-z coupling weight", _RSD_YAML, minimum=0),
        Hyper("lr_x", "float", 0.2, "Adam step size on x", _RSD_YAML, minimum=0, exclusive_minimum=True),
        Hyper("lr_z", "float", 0.2, "Adam step size on z", _RSD_YAML, minimum=0, exclusive_minimum=True),
        Hyper("betas", "float_pair", (0.9, 0.99), "Adam betas", "official `rsd.py`", minimum=0, maximum=1,
              exclusive_maximum=True),
        Hyper("adam_eps", "float", 1e-8, "Adam eps", "torch.optim.Adam default", minimum=0, exclusive_minimum=True),
        Hyper("prior_weight_over_rho", "bool", True, "prior weight w_t / rho (official RLSD) or w_t (DWGF repo copy)",
              "official `rsd.py` vs the DWGF copy (docs/method.md#rlsd)"),
        Hyper("repulsion_gamma", "float", 0.0, "repulsion strength (official `gamma`); 0 disables it", _RSD_YAML,
              minimum=0, config_maximum=0,
              config_note="repulsion needs a feature extractor (DINO), which a config cannot provide"),
        Hyper("feature_extractor", "callable", None, "callable images -> features, needed when repulsion_gamma > 0",
              "officially DINO ViT-S/16 (not available offline)", configurable=False,
              config_note="a Python callable"),
        Hyper("sigma_break", "int", None, "None: repulsion at every step; T: only while t > T (DWGF copy: T = 400)",
              "DWGF copy of RLSD (sigma_break 600 in its 1000-step units)", minimum=0, maximum=999, nullable=True),
        Hyper("t_max", "int", 999, "first timestep", "official loop over `ts[:-1]`", minimum=0, maximum=999),
        Hyper("t_min", "int", 2, "last timestep", "official loop over `ts[:-1]`", minimum=0, maximum=999),
        Hyper("trace", "bool", False, "record per-step scalars", "diagnostics", configurable=False,
              config_note="set by `dwgf solve`"),
    ],
    checks=[_check_combinations],
    derived={"prior_weight": "the weight on the prior term: w_t / rho (augmented with prior_weight_over_rho) or w_t"},
    official={
        "box_inpainting": OfficialTask(
            {"w_t": 0.15, "rho": 0.07, "lr_x": 0.4, "lr_z": 0.8}, "RLSD `constrained_sampling/runs/half_face.sh`", 4
        ),
        "sr_avgpool": OfficialTask(
            {"w_t": 0.01, "rho": 0.05, "lr_x": 0.4, "lr_z": 0.6}, "RLSD `constrained_sampling/runs/sr.sh`", 2
        ),
    },
)  # fmt: skip

#: Derived from :data:`HYPER`: name -> default, operator -> official settings, operator -> official N.
DEFAULTS: dict[str, Any] = HYPER.defaults
TASK_DEFAULTS: dict[str, dict[str, Any]] = HYPER.task_defaults
TASK_N_PARTICLES: dict[str, int] = HYPER.task_n_particles

#: Default number of steps: t = 999, ..., 2 (the official loop over ``ts[:-1]``).
N_STEPS = HYPER.n_steps

#: Per-step scalars recorded when ``trace=True``.
TRACE_KEYS = ("data_fit", "coupling", "prior_grad_norm", "repulsion_norm")


def resolve_hyper(hyper: dict[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` updated with ``hyper``; ValueError naming any unknown key or invalid value (:data:`HYPER`)."""
    return HYPER.resolve(hyper)


def prior_weight(hyper: dict[str, Any]) -> float:
    """The weight w on s_t * mean(sg(r) z): w_t / rho (official RLSD, augmented) or w_t (DWGF copy, non-augmented)."""
    if hyper["augmented"] and hyper["prior_weight_over_rho"]:
        return float(hyper["w_t"]) / float(hyper["rho"])
    return float(hyper["w_t"])


def repulsion(
    z_t: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    feature_extractor: Callable[[torch.Tensor], torch.Tensor],
    n_images: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLSD's repulsion direction Rep (module docstring) for noisy latents ``z_t`` (B N, c, h, w), N >= 3.

    The rows are ``n_images`` = B images of N particles each; particles repel only the other particles of their own
    image (the kernel, its median bandwidth and its normalisation are per image). Returns ``(rep, kernel)``: rep of
    the shape of z_t and the (B N, N - 1) kernel values k_ij, j != i (row i lists its image's j = 0..N-1 without
    i). Only ``z_t`` receives gradients: the decoder's and the extractor's weights are used as they are
    (``torch.autograd.grad`` with respect to z_t alone).
    """
    rows = z_t.shape[0]
    if n_images < 1 or rows % n_images:
        raise ValueError(f"n_images={n_images!r} does not divide the {rows} rows of z_t")
    n = rows // n_images
    if n < 3:
        raise ValueError(
            f"RLSD repulsion needs n_particles >= 3 (median bandwidth / log(N - 1)), got {n}; set repulsion_gamma=0"
        )
    z_req = z_t.detach().requires_grad_(True)
    with torch.enable_grad():
        features = feature_extractor(decode(z_req))
        if not isinstance(features, torch.Tensor) or features.shape[0] != rows:
            raise ValueError(
                f"feature_extractor must return a tensor with one row per particle ({rows}), got "
                f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}"
            )
        flat = features.reshape(rows, -1)
        with torch.no_grad():
            per_image = flat.reshape(n_images, n, -1)
            off_diagonal = ~torch.eye(n, dtype=torch.bool, device=flat.device)
            diff = (per_image[:, :, None, :] - per_image[:, None, :, :])[:, off_diagonal]  # f_i - f_j, j != i
            diff = diff.reshape(n_images, n, n - 1, -1)
            dist = diff.norm(dim=-1)
            bandwidth = dist.median(dim=2).values ** 2 / math.log(n - 1)
            kernel = torch.exp(-(dist**2) / bandwidth[..., None])
            g = (2.0 * kernel[..., None] * diff / bandwidth[..., None, None]).sum(dim=2)
        (vjp,) = torch.autograd.grad(flat, z_req, grad_outputs=g.reshape(rows, -1))
    kernel = kernel.reshape(rows, n - 1)
    rep = vjp / kernel.sum(dim=1).reshape(rows, *([1] * (z_t.ndim - 1)))
    return rep.detach(), kernel


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
    """Run RLSD on B observations ``y`` (B, *y_shape) with ``n_particles`` particles each (module docstring), one
    generator per image (a single generator with y (1, ...) returns one result).

    Random draws, from each image's generator, in this order: its initial latents z ~ N(0, I), then (augmented)
    its initial pixels x ~ N(0, I), then per step the forward noise eps. ``particles`` are x (augmented) or D(z)
    (non-augmented); the augmented result also carries ``extras["decoded"] = D(z)``. The normalisations
    (1 / (N d)) and the repulsion are per image. An image with a non-finite loss, gradient or iterate is frozen at
    its state from before that step without raising (``status="diverged"``); the others go on.
    """
    generators, single = as_generators(generator)
    b = len(generators)
    latent_shape = check_problem(prior, operator, y, n_particles, b)
    hp = resolve_hyper(hyper)
    timesteps = make_timesteps(n_steps, t_max=hp["t_max"], t_min=hp["t_min"])
    device, model_dtype = prior.device, prior.dtype
    dtype = torch.promote_types(model_dtype, torch.float32)
    n = n_particles
    d_z, d_x, d_y = math.prod(latent_shape), math.prod(operator.x_shape), operator.measurement_dim
    augmented, rho, weight = hp["augmented"], float(hp["rho"]), prior_weight(hp)
    gamma_rep = float(hp["repulsion_gamma"])
    if gamma_rep > 0 and n < 3:
        raise ValueError(f"RLSD repulsion needs n_particles >= 3, got {n}; set repulsion_gamma=0")
    y = y.to(device=device, dtype=dtype)
    history: dict[str, list[torch.Tensor]] | None = {key: [] for key in TRACE_KEYS} if hp["trace"] else None

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return prior.decode(latents.to(model_dtype)).to(dtype)

    def per_image_sum(values: torch.Tensor) -> torch.Tensor:
        return values.reshape(b, -1).sum(dim=1)

    z = randn_per_image((n, *latent_shape), generators, device, dtype).requires_grad_(True)
    adam = {"betas": hp["betas"], "eps": float(hp["adam_eps"])}
    optimiser_z = MaskedAdam(z, lr=float(hp["lr_z"]), **adam)
    x: torch.Tensor | None = None
    if augmented:
        x = randn_per_image((n, *operator.x_shape), generators, device, dtype).requires_grad_(True)
        optimiser_x = MaskedAdam(x, lr=float(hp["lr_x"]), **adam)
    mask = ImageMask(b, n, device)

    with prior.rows_per_image(n):
        for step in progress_bar(range(len(timesteps)), progress, "rlsd"):
            t = timesteps[step]
            sqrt_abar, sqrt_one_minus_abar = noise_level(prior.alphas_cumprod, t)
            s_t = sqrt_one_minus_abar / sqrt_abar
            with torch.no_grad():
                eps = randn_per_image((n, *latent_shape), generators, device, dtype)
                z_t = sqrt_abar * z + sqrt_one_minus_abar * eps
                residual = prior.eps(z_t.to(model_dtype), t).to(dtype) - eps
            rep_norm = torch.zeros(b, dtype=dtype, device=device)
            if gamma_rep > 0 and (hp["sigma_break"] is None or t > hp["sigma_break"]):
                rep, _ = repulsion(z_t, decode, hp["feature_extractor"], n_images=b)
                residual = residual - gamma_rep * sqrt_one_minus_abar * rep
                rep_norm = rep.reshape(b, -1).norm(dim=1)
            g_prior = (weight * s_t / (n * d_z)) * residual
            keep_before = mask.rows()

            # 1. The updates of every image; a frozen image's rows are put back by MaskedAdam.
            if augmented:
                coupling = per_image_sum((x.detach() - decode(z)) ** 2) / (2.0 * n * d_x)
                (grad_z,) = torch.autograd.grad(coupling.sum(), z)
                optimiser_z.step(grad_z + g_prior, keep_before)
                with torch.no_grad():
                    decoded = decode(z)
                data_fit = mean_data_fit(y, operator(x), d_y, n_images=b)
                coupling_x = per_image_sum((x - decoded) ** 2) / (2.0 * n * d_x)
                loss_x = data_fit + rho * coupling_x
                (grad_x,) = torch.autograd.grad(loss_x.sum(), x)
                optimiser_x.step(grad_x, keep_before)
                finite = finite_per_image(b, loss_x, coupling, z, x, decoded)
            else:
                coupling = torch.zeros(b, dtype=dtype, device=device)
                data_fit = mean_data_fit(y, operator(decode(z)), d_y, n_images=b)
                (grad_z,) = torch.autograd.grad(data_fit.sum(), z)
                optimiser_z.step(grad_z + g_prior, keep_before)
                finite = finite_per_image(b, data_fit, z)

            # 2. An image first non-finite after this step goes back to its state from before it (values and
            # Adam moments), on the device.
            keep = mask.update(step, finite)
            optimiser_z.revert(keep)
            if x is not None:
                optimiser_x.revert(keep)
            if history is not None:
                history["data_fit"].append(data_fit.detach())
                history["coupling"].append(coupling.detach())
                history["prior_grad_norm"].append(g_prior.reshape(b, -1).norm(dim=1))
                history["repulsion_norm"].append(rep_norm)
            if mask.all_diverged(step):
                break

        with torch.no_grad():
            decoded = decode(z.detach())
    particles = x.detach() if augmented else decoded
    recorded = HYPER.solve_record(hp, n_particles=n, n_steps=n_steps, timesteps=timesteps, prior_weight=weight)
    traces = per_image_trace(history, b)
    results = []
    for image, diverged_at in enumerate(mask.statuses()):
        rows = slice(image * n, (image + 1) * n)
        steps_done = len(timesteps) if diverged_at is None else diverged_at
        results.append(
            SolveResult(
                particles=particles[rows].cpu(),
                latents=z.detach()[rows].cpu(),
                status=STATUS_OK if diverged_at is None else STATUS_DIVERGED,
                diverged_at_step=diverged_at,
                n_steps=steps_done,
                hyper=dict(recorded),
                trace=None if traces is None else {k: v[:steps_done] for k, v in traces[image].items()},
                extras={"decoded": decoded[rows].cpu()} if augmented else {},
            )
        )
    return results[0] if single else results
