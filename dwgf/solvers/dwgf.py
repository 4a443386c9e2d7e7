"""DWGF: Diffusion-regularised Wasserstein Gradient Flow (Wang & Akyildiz, arXiv 2509.19276).

This module re-implements the official update (``src/algos/dwgf.py`` of ``isomorphicdude/DWGF``, described in
docs/method.md#dwgf) for one observation y and N particles solved as one batch. Per step t (999 -> 2):

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
    SolveResult,
    check_problem,
    kde_noise_estimate,
    make_timesteps,
    mean_data_fit,
    noise_level,
    progress_bar,
    randn,
)
from dwgf.solvers.hyper import Hyper, HyperSpec

#: The hyper-parameters, declared once (:mod:`dwgf.solvers.hyper`): official values of ``configs/algo/dwgf.yaml`` +
#: ``scripts/test_*.sh`` (docs/method.md#hyper-parameters) and the reproduction flags. ``n_particles`` (official 4)
#: and ``n_steps`` (official 998) are arguments of :func:`solve`.
_REPO = "`isomorphicdude/DWGF` configs/algo/dwgf.yaml"
_FLAG = "reproduction flag (docs/official-code.md)"


def _check_noise_inputs(resolved: dict[str, Any]) -> None:
    if resolved["per_particle_noise"]:
        if resolved["y_clean"] is None or resolved["sigma_y"] is None:
            raise ValueError(
                "DWGF per_particle_noise=True needs the clean measurement and its noise level: pass "
                "y_clean=<A x, shape (1, *y_shape)> and sigma_y=<float> (the repository draws one noise "
                "realisation per particle), or set per_particle_noise=False to share y"
            )
    elif resolved["y_clean"] is not None or resolved["sigma_y"] is not None:
        raise ValueError("DWGF hyper-parameters 'y_clean' and 'sigma_y' are only used with per_particle_noise=True")


HYPER = HyperSpec(
    solver="dwgf",
    label="DWGF",
    n_particles=4,
    n_steps=998,
    source="the official DWGF code (`isomorphicdude/DWGF`, docs/method.md#hyper-parameters)",
    params=[
        Hyper("gamma", "float", 0.15, "prior weight gamma", f"{_REPO} `algo.w_t` (`algo.gamma` is unused)", minimum=0),
        Hyper("lr", "float", 1.0, "Adam step size on the latents", f"{_REPO} `algo.lr_z`", minimum=0,
              exclusive_minimum=True),
        Hyper("kappa", "float", 0.1, "weight of the encoder-decoder (vjp) term", f"{_REPO} `algo.vjp_coeff`",
              minimum=0),
        Hyper("sigma_dec", "float", 0.01, "decoder noise std xi", f"{_REPO} `algo.decoder_std`", minimum=0),
        Hyper("betas", "float_pair", (0.9, 0.999), "Adam betas", "official code (torch.optim.Adam defaults)",
              minimum=0, maximum=1, exclusive_maximum=True),
        Hyper("adam_eps", "float", 1e-8, "Adam eps", "official code (torch.optim.Adam default)", minimum=0,
              exclusive_minimum=True),
        Hyper("per_particle_noise", "bool", False, "one noise draw of y per particle (repo bug 5) instead of one "
              "shared y", _FLAG),
        Hyper("y_clean", "tensor", None, "clean measurement A x, (1, *y_shape); only with per_particle_noise",
              "filled in by `dwgf solve`", configurable=False, config_note="filled in by `dwgf solve`"),
        Hyper("sigma_y", "float", None, "measurement-noise std on [-1, 1]; only with per_particle_noise",
              "filled in by `dwgf solve` from the task", minimum=0, nullable=True, configurable=False,
              config_note="filled in by `dwgf solve` from the task's sigma_y"),
        Hyper("decode_before_last_step", "bool", False, "return the decode before the last update (repo bug 2)",
              _FLAG),
        Hyper("decoder_noise_in_likelihood", "bool", True, "A(x + xi) in the likelihood (last official commit; "
              "False: the first commit's A(x))", "official code, last commit"),
        Hyper("trace", "bool", False, "record per-step loss terms", "diagnostics", configurable=False,
              config_note="set by `dwgf solve`"),
    ],
    checks=[_check_noise_inputs],
)  # fmt: skip

#: Defaults derived from :data:`HYPER` (name -> default).
DEFAULTS: dict[str, Any] = HYPER.defaults

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
    """DEFAULTS updated with ``hyper``; ValueError naming any unknown key or invalid value (:data:`HYPER`)."""
    return HYPER.resolve(hyper)


def _recordable(hyper: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as JSON-friendly values (the y_clean tensor is summarised by its shape)."""
    return HYPER.record(hyper)


def _measurements(
    y: torch.Tensor, hyper: dict[str, Any], operator: LinearOperator, n: int, generator: torch.Generator
) -> torch.Tensor:
    """The y each particle is fitted to: y itself (1, ...) shared, or N noisy copies of y_clean (repo bug 5).

    Entries of a masked-image y that are not measurements are zeroed (``operator.zero_unmeasured``), so the data
    fit sums over exactly ``measurement_dim`` entries (they are constant in z, so only the traced value changes).
    """
    if not hyper["per_particle_noise"]:
        return operator.zero_unmeasured(y)
    y_clean = hyper["y_clean"]
    expected = (1, *operator.y_shape)
    if not isinstance(y_clean, torch.Tensor) or tuple(y_clean.shape) != expected:
        shape = tuple(y_clean.shape) if isinstance(y_clean, torch.Tensor) else type(y_clean).__name__
        raise ValueError(f"DWGF hyper-parameter 'y_clean' must be a tensor of shape {expected}, got {shape}")
    y_rows = y_clean.to(device=y.device, dtype=y.dtype).expand(n, *operator.y_shape)
    return operator.zero_unmeasured(add_measurement_noise(y_rows, float(hyper["sigma_y"]), generator))


def solve(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n_particles: int,
    generator: torch.Generator,
    *,
    n_steps: int = 998,
    progress: bool = True,
    **hyper: Any,
) -> SolveResult:
    """Run DWGF on one observation ``y`` (1, *y_shape) with ``n_particles`` particles (see the module docstring).

    ``n_steps=998`` is the official loop t = 999, ..., 2; fewer steps take an evenly strided subset
    (:func:`dwgf.solvers.base.make_timesteps`). Hyper-parameters: :data:`DEFAULTS`.

    Random draws, all from ``generator`` and in this order: the initial latents, then (only with
    ``per_particle_noise``) the N measurement-noise realisations, then per step the forward noise eps, the decoder
    noise xi and the encoder sample. The latents are optimised in float32 (float64 if the prior is float64) and
    cast to the prior's dtype for every model call, so bf16/fp16 priors still get float32 Adam state.

    A non-finite decode, loss or gradient stops the loop before the update without raising: ``status="diverged"``,
    ``diverged_at_step`` is the 0-based index of that step, and the result holds the last (finite) latents and their
    decode.
    """
    latent_shape = check_problem(prior, operator, y, n_particles)
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

    z = randn((n, *latent_shape), generator, device, dtype).requires_grad_(True)
    y_fit = _measurements(y.to(device=device, dtype=dtype), hp, operator, n, generator)
    optimiser = torch.optim.Adam([z], lr=float(hp["lr"]), betas=hp["betas"], eps=float(hp["adam_eps"]))
    trace: dict[str, list[float]] | None = {key: [] for key in TRACE_KEYS} if hp["trace"] else None

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return prior.decode(latents.to(model_dtype)).to(dtype)

    status, diverged_at = STATUS_OK, None
    pre_update: torch.Tensor | None = None
    for step in progress_bar(range(len(timesteps)), progress, "dwgf"):
        t = timesteps[step]
        sqrt_abar, sqrt_one_minus_abar = noise_level(alphas_cumprod, t)
        s_t = sqrt_one_minus_abar / sqrt_abar

        # Prior term: UNet noise prediction minus the particle-KDE noise prediction, injected as a gradient.
        with torch.no_grad():
            eps = randn(z.shape, generator, device, dtype)
            z_t = sqrt_abar * z + sqrt_one_minus_abar * eps
            eps_hat = prior.eps(z_t.to(model_dtype), t).to(dtype)
            eps_tilde, pi = kde_noise_estimate(z_t, z, sqrt_abar, sqrt_one_minus_abar)
            g_prior = (gamma * s_t / norm["prior"]) * (eps_hat - eps_tilde)

        # Likelihood and encoder-decoder (vjp) terms through the decoder.
        x = decode(z)
        xi = sigma_dec * randn(x.shape, generator, device, dtype)
        a_x = operator(x + xi) if hp["decoder_noise_in_likelihood"] else operator(x)
        loss_lik = mean_data_fit(y_fit, a_x, d_y)
        with torch.no_grad():
            x_tilde = (x + xi).to(model_dtype)
            reconstruction = prior.decode(prior.encode(x_tilde, generator=generator, sample=True)).to(dtype)
            residual = x - reconstruction  # = -c of docs/method.md#dwgf step 6
        loss_vjp = (x * residual).sum() / norm["vjp"]
        loss = loss_lik + kappa * loss_vjp
        (grad,) = torch.autograd.grad(loss, z)
        grad = grad + g_prior

        if not (torch.isfinite(loss) and torch.isfinite(grad).all() and torch.isfinite(x).all()):
            status, diverged_at = STATUS_DIVERGED, step
            break
        pre_update = x.detach()
        if trace is not None:
            trace["likelihood"].append(float(loss_lik.detach()))
            trace["vjp"].append(float(loss_vjp.detach()))
            trace["prior_grad_norm"].append(float(g_prior.norm()))
            trace["kde_self_weight"].append(float(pi.diagonal().mean()))
            trace["loss"].append(float(loss.detach()))

        # Adam's update is bounded by about lr per coordinate, so finite latents stay finite (lr is checked to be
        # representable below); divergence shows up in the next step's decode or loss.
        z.grad = grad
        optimiser.step()

    final_latents = z.detach()
    with torch.no_grad():
        post_update = decode(final_latents)
    extras: dict[str, torch.Tensor] = {}
    if hp["decode_before_last_step"] and pre_update is not None:
        particles = pre_update
        extras["post_update_particles"] = post_update.cpu()
    else:
        particles = post_update
    if pre_update is not None:
        extras["pre_update_particles"] = pre_update.cpu()
    return SolveResult(
        particles=particles.cpu(),
        latents=final_latents.cpu(),
        status=status,
        diverged_at_step=diverged_at,
        n_steps=len(timesteps) if diverged_at is None else diverged_at,
        hyper={**_recordable(hp), "n_particles": n, "n_steps": n_steps, "timesteps": [timesteps[0], timesteps[-1]]},
        trace=trace,
        extras=extras,
    )
