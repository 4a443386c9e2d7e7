"""DWGF: Diffusion-regularised Wasserstein Gradient Flow (Wang & Akyildiz, arXiv 2509.19276).

This module re-implements the official update (``src/algos/dwgf.py`` of ``isomorphicdude/DWGF``, described in
docs/method.md#dwgf) for B observations with N particles each, solved as one batch of B N particles (every term
below is per image: the KDE couples only an image's own particles, and the normalisations count its own N).
Per step t (999 -> 2):

1. eps ~ N(0, I) fresh; z_t = sqrt(abar) z + sqrt(1 - abar) eps.
2. eps_hat = prior.eps(z_t, t) under no_grad (the UNet with the empty prompt for Stable Diffusion).
3. eps_tilde = closed-form noise estimate of the particle KDE of the noised cloud
   (:func:`dwgf.solvers.base.kde_noise_estimate`).
4. Prior gradient on z, no back-propagation:  g_prior = gamma * s_t * (eps_hat - eps_tilde) / (N d_z),
   s_t = sqrt((1 - abar) / abar). The official code obtains the same gradient from the surrogate loss
   gamma * s_t * sqrt(1 - abar) * [mean(sg(score_KDE) z) - mean(sg(score_theta) z)]; here g_prior is *added* to
   the autograd gradient of the other two terms before the Adam step (identical gradient, no surrogate).
5. x = D(z) with grad; xi ~ N(0, sigma_dec^2 I);
   L_lik = sum ||y - A(x + xi)||^2 / (2 N d_y)   (:func:`dwgf.solvers.base.mean_data_fit`; no 1/sigma_y^2).
6. Under no_grad c = -(D(E(x + xi)) - x) with a stochastic encoder sample and the *same* xi;
   L_vjp = sum(x * sg(c)) / (N d_x), whose gradient kappa * J_D^T (x - D(E(x + xi))) / (N d_x) pulls D(z)
   towards the autoencoder's reconstruction of its noisy version.
7. grad = d(L_lik + kappa L_vjp)/dz + g_prior; one Adam step on z (lr 1.0, betas (0.9, 0.999), eps 1e-8).

Normalisations (docs/method.md#normalisations, docs/official-code.md): the official code takes arithmetic means
over whole tensors, so the prior, likelihood and vjp terms are divided by N d_z, N d_y and N d_x respectively (d_z
latent size per particle, d_y real measurements, d_x pixels x channels). Adam is invariant to a global rescaling of
the loss but not to these relative weights, so they are kept exactly (:func:`term_normalisers`).

Deliberate departures from the repository, each switchable to the repository's behaviour (docs/official-code.md):

* ``per_particle_noise=False``: one y shared by all particles. ``True`` draws an independent measurement-noise
  realisation per particle from ``y_clean`` and ``sigma_y`` (repo bug 5).
* ``decode_before_last_step=False``: return D(z) after the final update. ``True`` returns the decode computed
  before the final Adam step, as the repository does (bug 2). Both are always available: the other one sits in
  ``extras``.
* ``decoder_noise_in_likelihood=True`` is the last official commit; ``False`` is the first commit (A(x) without xi).
* The VAE/UNet weights never receive gradients (``torch.autograd.grad`` with respect to z only; repo bug 4), and
  only the last decode is kept (repo bug 3).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dwgf.operators.base import LinearOperator, add_measurement_noise
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
    kde_noise_estimate,
    keep_rows,
    make_timesteps,
    mean_data_fit,
    noise_level,
    per_image_trace,
    progress_bar,
    randn_per_image,
)

#: Official hyper-parameters (docs/method.md#hyper-parameters, ``configs/algo/dwgf.yaml`` + ``scripts/test_*.sh``)
#: and the
#: reproduction flags. ``n_particles`` (official 4) and ``n_steps`` (official 998) are arguments of :func:`solve`.
DEFAULTS: dict[str, Any] = {
    "gamma": 0.15,  # official ``algo.w_t`` (the paper's gamma); ``algo.gamma`` is unused by DWGF
    "lr": 1.0,  # official ``algo.lr_z``
    "kappa": 0.1,  # official ``algo.vjp_coeff``
    "sigma_dec": 0.01,  # official ``algo.decoder_std``
    "betas": (0.9, 0.999),
    "adam_eps": 1e-8,
    "per_particle_noise": False,
    "y_clean": None,  # (1, *y_shape) clean measurement A x; only with per_particle_noise=True
    "sigma_y": None,  # measurement-noise std on the [-1, 1] scale; only with per_particle_noise=True
    "decode_before_last_step": False,
    "decoder_noise_in_likelihood": True,
    "trace": False,
}

#: Scalars recorded per step when ``trace=True``: ``likelihood`` is L_lik, ``vjp`` is L_vjp (before kappa),
#: ``loss`` is L_lik + kappa L_vjp (the prior enters as a gradient, so it has no loss value); ``prior_grad_norm`` is
#: ||g_prior||; ``kde_self_weight`` is mean_i pi_ii (1 = particles do not interact, docs/method.md#dwgf step 4).
TRACE_KEYS = ("likelihood", "vjp", "prior_grad_norm", "kde_self_weight", "loss")


def term_normalisers(n_particles: int, d_z: int, d_x: int, d_y: int) -> dict[str, int]:
    """Element counts the official code divides each term by (its ``mean`` over the whole tensor).

    ``prior``: N d_z (latents, 16384 per particle for SD at 512 px); ``likelihood``: N d_y (606,432 for the
    half-face box at 512 px, 12,288 for SR x8); ``vjp``: N d_x (786,432 per particle at 512 px).
    docs/method.md#normalisations.

    >>> term_normalisers(4, 16384, 786432, 12288)
    {'prior': 65536, 'likelihood': 49152, 'vjp': 3145728}
    """
    return {"prior": n_particles * d_z, "likelihood": n_particles * d_y, "vjp": n_particles * d_x}


def resolve_hyper(hyper: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS updated with ``hyper``; ValueError naming any unknown key or invalid value."""
    unknown = sorted(set(hyper) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown DWGF hyper-parameter(s) {unknown}; valid keys are {sorted(DEFAULTS)}")
    resolved = {**DEFAULTS, **hyper}
    for key in ("gamma", "kappa", "sigma_dec"):
        value = resolved[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"DWGF hyper-parameter {key!r} must be a finite number >= 0, got {value!r}")
    for key in ("lr", "adam_eps"):
        value = resolved[key]
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"DWGF hyper-parameter {key!r} must be a number > 0, got {value!r}")
    betas = resolved["betas"]
    if len(tuple(betas)) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
        raise ValueError(f"DWGF hyper-parameter 'betas' must be two numbers in [0, 1), got {betas!r}")
    resolved["betas"] = (float(betas[0]), float(betas[1]))
    for key in ("per_particle_noise", "decode_before_last_step", "decoder_noise_in_likelihood", "trace"):
        if not isinstance(resolved[key], bool):
            raise ValueError(f"DWGF hyper-parameter {key!r} must be a bool, got {resolved[key]!r}")
    if resolved["per_particle_noise"]:
        if resolved["y_clean"] is None or resolved["sigma_y"] is None:
            raise ValueError(
                "DWGF per_particle_noise=True needs the clean measurement and its noise level: pass "
                "y_clean=<A x, shape (1, *y_shape)> and sigma_y=<float> (the repository draws one noise "
                "realisation per particle), or set per_particle_noise=False to share y"
            )
    elif resolved["y_clean"] is not None or resolved["sigma_y"] is not None:
        raise ValueError("DWGF hyper-parameters 'y_clean' and 'sigma_y' are only used with per_particle_noise=True")
    return resolved


def _recordable(hyper: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as JSON-friendly values (the y_clean tensor is summarised by its shape)."""
    out = dict(hyper)
    if isinstance(out["y_clean"], torch.Tensor):
        out["y_clean"] = f"tensor{tuple(out['y_clean'].shape)}"
    out["betas"] = list(out["betas"])
    return out


def _measurements(
    y: torch.Tensor,
    hyper: dict[str, Any],
    operator: LinearOperator,
    n: int,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """The y each particle is fitted to: y itself (B, ...), image b's shared by its particles, or N noisy copies
    of image b's y_clean per image (B * N, ...; repo bug 5), drawn from image b's generator.

    Entries of a masked-image y that are not measurements are zeroed (``operator.zero_unmeasured``), so the data
    fit sums over exactly ``measurement_dim`` entries (they are constant in z, so only the traced value changes).
    """
    if not hyper["per_particle_noise"]:
        return operator.zero_unmeasured(y)
    y_clean = hyper["y_clean"]
    expected = (len(generators), *operator.y_shape)
    if not isinstance(y_clean, torch.Tensor) or tuple(y_clean.shape) != expected:
        shape = tuple(y_clean.shape) if isinstance(y_clean, torch.Tensor) else type(y_clean).__name__
        raise ValueError(f"DWGF hyper-parameter 'y_clean' must be a tensor of shape {expected}, got {shape}")
    y_clean = y_clean.to(device=y.device, dtype=y.dtype)
    rows = [
        add_measurement_noise(y_clean[b : b + 1].expand(n, *operator.y_shape), float(hyper["sigma_y"]), generator)
        for b, generator in enumerate(generators)
    ]
    return operator.zero_unmeasured(rows[0] if len(rows) == 1 else torch.cat(rows))


def solve(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n_particles: int,
    generators: torch.Generator | list[torch.Generator],
    *,
    n_steps: int = 998,
    progress: bool = True,
    **hyper: Any,
) -> SolveResult | list[SolveResult]:
    """Run DWGF on B observations ``y`` (B, *y_shape) with ``n_particles`` particles each (module docstring).

    ``generators``: one per image (a list; returns one result per image), or a single generator with y of shape
    (1, *y_shape) (returns one result). ``n_steps=998`` is the official loop t = 999, ..., 2; fewer steps take an
    evenly strided subset (:func:`dwgf.solvers.base.make_timesteps`). Hyper-parameters: :data:`DEFAULTS`
    (``y_clean`` is (B, *y_shape)).

    Random draws, from each image's generator and in this order: its initial latents, then (only with
    ``per_particle_noise``) its N measurement-noise realisations, then per step the forward noise eps, the decoder
    noise xi and the encoder sample. The latents are optimised in float32 (float64 if the prior is float64) and
    cast to the prior's dtype for every model call, so bf16/fp16 priors still get float32 Adam state. The batch
    of B images is one (B N)-row batch; the KDE and the 1/(N d) normalisations are per image.

    A non-finite decode, loss or gradient of an image freezes that image before its update without raising:
    ``status="diverged"``, ``diverged_at_step`` is the 0-based index of that step, and its result holds its last
    (finite) latents and their decode; the other images go on (:class:`dwgf.solvers.base.ImageMask`).
    """
    generators, single = as_generators(generators)
    b = len(generators)
    latent_shape = check_problem(prior, operator, y, n_particles, b)
    hp = resolve_hyper(hyper)
    timesteps = make_timesteps(n_steps)
    device, model_dtype = prior.device, prior.dtype
    dtype = torch.promote_types(model_dtype, torch.float32)
    if float(hp["lr"]) > torch.finfo(dtype).max:
        raise ValueError(f"DWGF hyper-parameter 'lr'={hp['lr']!r} is not representable in the latent dtype {dtype}")
    n = n_particles
    d_z, d_x, d_y = math.prod(latent_shape), math.prod(operator.x_shape), operator.measurement_dim
    norm = term_normalisers(n, d_z, d_x, d_y)
    alphas_cumprod = prior.alphas_cumprod
    kappa, gamma, sigma_dec = float(hp["kappa"]), float(hp["gamma"]), float(hp["sigma_dec"])

    z = randn_per_image((n, *latent_shape), generators, device, dtype).requires_grad_(True)
    y_fit = _measurements(y.to(device=device, dtype=dtype), hp, operator, n, generators)
    optimiser = MaskedAdam(z, lr=float(hp["lr"]), betas=hp["betas"], eps=float(hp["adam_eps"]))
    mask = ImageMask(b, n, device)
    history: dict[str, list[torch.Tensor]] | None = {key: [] for key in TRACE_KEYS} if hp["trace"] else None

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return prior.decode(latents.to(model_dtype)).to(dtype)

    pre_update: torch.Tensor | None = None
    with prior.rows_per_image(n):
        for step in progress_bar(range(len(timesteps)), progress, "dwgf"):
            t = timesteps[step]
            sqrt_abar, sqrt_one_minus_abar = noise_level(alphas_cumprod, t)
            s_t = sqrt_one_minus_abar / sqrt_abar

            # Prior term: UNet noise prediction minus the particle-KDE noise prediction, injected as a gradient.
            with torch.no_grad():
                eps = randn_per_image((n, *latent_shape), generators, device, dtype)
                z_t = sqrt_abar * z + sqrt_one_minus_abar * eps
                eps_hat = prior.eps(z_t.to(model_dtype), t).to(dtype)
                eps_tilde, pi = kde_noise_estimate(z_t, z, sqrt_abar, sqrt_one_minus_abar, n_images=b)
                g_prior = (gamma * s_t / norm["prior"]) * (eps_hat - eps_tilde)

            # Likelihood and encoder-decoder (vjp) terms through the decoder (per-image values, summed only for
            # autograd: each image's gradient is that of its own terms).
            x = decode(z)
            xi = sigma_dec * randn_per_image((n, *operator.x_shape), generators, device, dtype)
            a_x = operator(x + xi) if hp["decoder_noise_in_likelihood"] else operator(x)
            loss_lik = mean_data_fit(y_fit, a_x, d_y, n_images=b)
            with torch.no_grad():
                x_tilde = (x + xi).to(model_dtype)
                latents_tilde = prior.encode_per_image(x_tilde, generators, sample=True)
                residual = x - prior.decode(latents_tilde).to(dtype)  # = -c of docs/method.md#dwgf step 6
            loss_vjp = (x * residual).reshape(b, -1).sum(dim=1) / norm["vjp"]
            loss = loss_lik + kappa * loss_vjp
            (grad,) = torch.autograd.grad(loss.sum(), z)
            grad = grad + g_prior

            # 1. Per-image finiteness on the device; a non-finite image is frozen before this update.
            keep = mask.update(step, finite_per_image(b, loss, grad, x))
            pre_update = x.detach() if pre_update is None else keep_rows(keep, x.detach(), pre_update)
            if history is not None:
                history["likelihood"].append(loss_lik.detach())
                history["vjp"].append(loss_vjp.detach())
                history["prior_grad_norm"].append(g_prior.reshape(b, -1).norm(dim=1))
                history["kde_self_weight"].append(pi.diagonal(dim1=1, dim2=2).mean(dim=1))
                history["loss"].append(loss.detach())

            # 2. Adam's update is bounded by about lr per coordinate, so finite latents stay finite (lr is checked
            # to be representable above); divergence shows up in the next step's decode or loss.
            optimiser.step(grad, keep)
            if mask.all_diverged(step):
                break

    final_latents = z.detach()
    with torch.no_grad(), prior.rows_per_image(n):
        post_update = decode(final_latents)
    diverged = mask.statuses()
    recorded = {**_recordable(hp), "n_particles": n, "n_steps": n_steps, "timesteps": [timesteps[0], timesteps[-1]]}
    if isinstance(hp["y_clean"], torch.Tensor):
        recorded["y_clean"] = f"tensor{(1, *operator.y_shape)}"
    traces = per_image_trace(history, b)
    results = []
    for image, diverged_at in enumerate(diverged):
        rows = slice(image * n, (image + 1) * n)
        steps_done = len(timesteps) if diverged_at is None else diverged_at
        extras: dict[str, torch.Tensor] = {}
        has_pre = pre_update is not None and steps_done > 0
        if hp["decode_before_last_step"] and has_pre:
            particles = pre_update[rows]
            extras["post_update_particles"] = post_update[rows].cpu()
        else:
            particles = post_update[rows]
        if has_pre:
            extras["pre_update_particles"] = pre_update[rows].cpu()
        results.append(
            SolveResult(
                particles=particles.cpu(),
                latents=final_latents[rows].cpu(),
                status=STATUS_OK if diverged_at is None else STATUS_DIVERGED,
                diverged_at_step=diverged_at,
                n_steps=steps_done,
                hyper=dict(recorded),
                trace=None if traces is None else {k: v[:steps_done] for k, v in traces[image].items()},
                extras=extras,
            )
        )
    return results[0] if single else results
