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
from dwgf.solvers.hyper import Hyper, HyperSpec

#: The hyper-parameters, declared once (:mod:`dwgf.solvers.hyper`): official values of ``configs/algo/dwgf.yaml`` +
#: ``scripts/test_*.sh`` (docs/method.md#hyper-parameters) and the reproduction flags. ``n_particles`` (official 4)
#: and ``n_steps`` (official 998) are arguments of :func:`solve`.
_REPO = "`isomorphicdude/DWGF` configs/algo/dwgf.yaml"
_FLAG = "reproduction flag (docs/official-code.md)"
_VARIANT = "research variant (docs/findings.md); the default is the official behaviour"


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


#: Values the Langevin variant needs: it has no vjp term and no decoder noise (its target is the posterior itself),
#: and the KDE / repulsion / noise-draw variants belong to the KDE update it replaces.
_LANGEVIN_REQUIRES = {"kappa": 0.0, "sigma_dec": 0.0, "svgd_weight": 0.0, "feature_repulsion": 0.0,
                      "n_noise_draws": 1, "antithetic": False, "shared_noise": False, "control_variate": False,
                      "kde_weight": 1.0, "kde_bandwidth": 1.0, "per_particle_noise": False}  # fmt: skip


def _check_variants(resolved: dict[str, Any]) -> None:
    if resolved["antithetic"] and resolved["control_variate"]:
        raise ValueError(
            "DWGF antithetic=True already makes the mean noise zero, so control_variate=True would do nothing; "
            "choose one"
        )
    if resolved["lr_schedule"] == "constant" and resolved["lr_floor"] != 0.0:
        raise ValueError("DWGF hyper-parameter 'lr_floor' needs lr_schedule 'linear' or 'cosine'")
    if resolved["langevin"]:
        if resolved["likelihood_std"] is None:
            raise ValueError(
                "DWGF langevin=True samples the Bayesian posterior: set 'likelihood_std' (sigma_y of the task)"
            )
        clashing = sorted(key for key, value in _LANGEVIN_REQUIRES.items() if resolved[key] != value)
        if clashing:
            raise ValueError(
                f"DWGF langevin=True replaces the KDE/Adam update and targets the posterior itself; hyper-parameters "
                f"{clashing} do not apply to it (needs {_LANGEVIN_REQUIRES})"
            )


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
        # -- research variants (docs/findings.md); every default is the official behaviour, bit for bit --------
        Hyper("kde_weight", "float", 1.0, "weight of the particle-KDE (entropy) noise estimate in the prior term",
              _VARIANT, minimum=0),
        Hyper("kde_bandwidth", "float", 1.0, "KDE kernel std as a multiple of sqrt(1 - abar_t)", _VARIANT,
              minimum=0, exclusive_minimum=True),
        Hyper("svgd_weight", "float", 0.0, "SVGD kernel repulsion on the clean latents (RBF, median bandwidth)",
              _VARIANT, minimum=0),
        Hyper("feature_repulsion", "float", 0.0, "RLSD-style feature-space repulsion weight (0 = off)", _VARIANT,
              minimum=0),
        Hyper("feature_extractor", "callable", None, "images -> features for feature_repulsion; None = the noisy "
              "latent itself", _VARIANT, configurable=False, config_note="Python only; a config uses the latent"),
        Hyper("lr_schedule", "choice", "constant", "Adam step size over the flow: constant, or linear / cosine "
              "decay from lr to lr_floor * lr", _VARIANT, choices=("constant", "linear", "cosine")),
        Hyper("lr_floor", "float", 0.0, "final step size as a fraction of lr (linear / cosine schedules)",
              _VARIANT, minimum=0, maximum=1),
        Hyper("n_noise_draws", "int", 1, "noise draws eps averaged per step in the prior term (K)", _VARIANT,
              minimum=1),
        Hyper("antithetic", "bool", False, "each noise draw eps also evaluated at -eps (2K evaluations)", _VARIANT),
        Hyper("shared_noise", "bool", False, "one noise draw shared by all particles (instead of one each)",
              _VARIANT),
        Hyper("control_variate", "bool", False, "add beta * mean(eps) to the prior term, beta fitted per step "
              "(E[eps] = 0, so the mean is unchanged up to the fit)", _VARIANT),
        Hyper("sigma_enc", "float", None, "encoder noise std in the vjp term: None = the prior's own encoder "
              "sample; a number = encoder mean + sigma_enc * n", _VARIANT, minimum=0, nullable=True),
        Hyper("likelihood_std", "float", None, "None: the official mean normalisations; a number sigma: Bayesian "
              "weighting, sum ||y - A x||^2 / (2 sigma^2) + gamma (eps_hat - eps_tilde) / s_t per particle (the "
              "gradient of -log p(y | z) + KL(q_t | p_t); gamma = 1 is the posterior's own weight)", _VARIANT,
              minimum=0, exclusive_minimum=True, nullable=True),
        Hyper("encoder_sample", "bool", True, "vjp term uses an encoder sample (True, official) or its mean",
              _VARIANT),
        Hyper("langevin", "bool", False, "entropy by Langevin noise instead of the particle KDE: preconditioned "
              "annealed Langevin on -log p(y | z) - log p_t(sqrt(abar_t) z) (needs likelihood_std; "
              ":func:`langevin_solve`)", _VARIANT),
        Hyper("langevin_prior_precision", "float", 1.0, "c of the prior-curvature bound c / s_t^2 in the "
              "Langevin preconditioner G = 1 / (diag(J^T A^T A J) / sigma^2 + c / s_t^2)", _VARIANT, minimum=0,
              exclusive_minimum=True),
        Hyper("langevin_friction", "float", None, "None: overdamped Langevin; a number gamma: underdamped "
              "(kinetic) Langevin with friction gamma per unit time, velocity q, mass G^-1", _VARIANT, minimum=0,
              exclusive_minimum=True, nullable=True),
        Hyper("langevin_t_max", "int", 999, "first timestep of the Langevin flow: t falls linearly from it to 2 "
              "over the steps (integer t, repeated when there are more steps than timesteps)", _VARIANT, minimum=2,
              maximum=999),
        Hyper("langevin_probes", "int", 16, "Hutchinson probes of the Gauss-Newton diagonal at the first step "
              "(one per later step)", _VARIANT, minimum=1),
        Hyper("langevin_probe_weighting", "choice", "step", "weight of the first step's probe mean in the running "
              "Gauss-Newton diagonal: 'step' (one step's, Adam's bias correction) or 'count' (langevin_probes "
              "steps')", _VARIANT, choices=("step", "count")),
        Hyper("langevin_step_cap", "float", None, "None: the Langevin step is lr; a number k: per image h = min(lr, "
              "k x the integrator's stability limit), 2 / sqrt(lambda_max) kinetic, 2 / lambda_max overdamped, "
              "lambda_max of G (J^T A^T A J / sigma^2 + c / s_t^2) at the first step (power iteration)", _VARIANT,
              minimum=0, exclusive_minimum=True, maximum=1, nullable=True),
        Hyper("langevin_power_iterations", "int", 20, "power iterations of lambda_max for langevin_step_cap (first "
              "step only; each one Gauss-Newton product)", _VARIANT, minimum=1),
    ],
    checks=[_check_noise_inputs, _check_variants],
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


#: Hyper-parameters that change the prior term: any of them off its default routes the step through
#: :func:`prior_gradient` (the official path stays the literal code of steps 1-4).
_PRIOR_VARIANT_KEYS = ("kde_weight", "kde_bandwidth", "n_noise_draws", "antithetic", "shared_noise",
                       "control_variate", "feature_repulsion", "likelihood_std")  # fmt: skip


def _encode(
    prior: LatentPrior, x: torch.Tensor, generators: list[torch.Generator], hp: dict[str, Any], n: int
) -> torch.Tensor:
    """E(x) for the vjp term: the prior's encoder sample (official), its mean, or mean + sigma_enc * n."""
    if hp["sigma_enc"] is None:
        return prior.encode_per_image(x, generators, sample=bool(hp["encoder_sample"]))
    mean = prior.encode(x, sample=False)
    noise = randn_per_image((n, *mean.shape[1:]), generators, mean.device, mean.dtype)
    return mean + float(hp["sigma_enc"]) * noise


def lr_factor(schedule: str, floor: float, step: int, n_steps: int) -> float:
    """Step-size multiplier at 0-based ``step`` of ``n_steps``: 1 (constant), or floor + (1 - floor) f(u) with
    u = step / (n_steps - 1) and f(u) = 1 - u (linear) or (1 + cos(pi u)) / 2 (cosine).

    >>> [round(lr_factor("cosine", 0.1, k, 3), 3) for k in range(3)], lr_factor("linear", 0.0, 1, 3)
    ([1.0, 0.55, 0.1], 0.5)
    """
    if schedule == "constant":
        return 1.0
    u = step / (n_steps - 1) if n_steps > 1 else 1.0
    shape = 1.0 - u if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * u))
    return floor + (1.0 - floor) * shape


def kde_noise_estimate_scaled(
    z_t: torch.Tensor,
    z_0: torch.Tensor,
    sqrt_abar: float,
    sqrt_one_minus_abar: float,
    bandwidth: float,
    n_images: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dwgf.solvers.base.kde_noise_estimate` with kernel std h sqrt(1 - abar) instead of sqrt(1 - abar):

        pi_ij = softmax_j(-||z_t^i - sqrt(abar) z_0^j||^2 / (2 h^2 (1 - abar))),
        eps_tilde^i = (z_t^i - sqrt(abar) sum_j pi_ij z_0^j) / (h^2 sqrt(1 - abar)),

    i.e. -sqrt(1 - abar) times the score of the wider KDE. ``bandwidth=1`` calls the official estimate itself.
    """
    if bandwidth == 1.0:
        return kde_noise_estimate(z_t, z_0, sqrt_abar, sqrt_one_minus_abar, n_images=n_images)
    eps_tilde, pi = kde_noise_estimate(z_t, z_0, sqrt_abar, bandwidth * sqrt_one_minus_abar, n_images=n_images)
    return eps_tilde / bandwidth, pi  # (z_t - sqrt(abar) pi z_0) / (h sqrt(1 - abar)) -> one more 1/h


def svgd_repulsion(z: torch.Tensor, n_images: int = 1) -> torch.Tensor:
    """The repulsive half of SVGD on the particles z (B N, ...): phi_i = (1/N) sum_j k_ij 2 (z_i - z_j) / h.

    Particles interact only within their own image (B = ``n_images`` blocks of N rows). k_ij = exp(-||z_i -
    z_j||^2 / h) with the median heuristic h = median_{i<j} ||z_i - z_j||^2 / log N (Liu & Wang 2016; N = 2: the
    one distance / log 2); zero for N = 1. Moving z_i along +phi_i pushes the particles apart.
    """
    b = n_images
    n = z.shape[0] // b
    if n < 2:
        return torch.zeros_like(z)
    flat = z.reshape(b, n, -1)
    diff = flat[:, :, None, :] - flat[:, None, :, :]
    sq = (diff**2).sum(-1)  # (B, N, N)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=z.device), diagonal=1)
    pairs = sq[:, upper]  # (B, N (N - 1) / 2)
    h = pairs.median(dim=1).values / math.log(n) if n > 2 else pairs[:, 0] / math.log(2.0)
    h = torch.where(h > 0, h, torch.ones_like(h))  # identical particles: no direction to push along anyway
    kernel = torch.exp(-sq / h[:, None, None])
    phi = (2.0 / (n * h))[:, None, None] * (kernel[..., None] * diff).sum(2)
    return phi.reshape(z.shape)


def prior_gradient(
    prior: LatentPrior,
    z: torch.Tensor,
    t: int,
    generators: list[torch.Generator],
    hp: dict[str, Any],
    normaliser: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior term g_prior of step 4 (module docstring) and the KDE responsibilities pi of the first draw.

    Official (defaults): one eps per particle, g = gamma s_t (eps_hat - eps_tilde) / (N d_z). Variants:
    ``n_noise_draws`` K averages (eps_hat - kde_weight eps_tilde) over K draws (each also at -eps when
    ``antithetic``; one draw of shape (1, ...) for all particles when ``shared_noise``); ``control_variate`` adds
    beta * eps_bar (mean noise of the draws, E = 0) with beta = -<r, eps_bar> / <eps_bar, eps_bar> fitted on this
    step's residual r (the least-squares optimal coefficient, up to the O(1/(N d_z)) bias of fitting on the same
    draws); ``feature_repulsion`` subtracts w sqrt(1 - abar) Rep (RLSD's repulsion on the first draw's z_t, with
    the identity as the extractor unless ``feature_extractor`` is given). Draws come from each image's generator in
    order; z holds B = len(generators) images of N rows, and beta, the KDE and the repulsion are per image.
    With ``likelihood_std`` set (Bayesian weighting) the coefficient is gamma / s_t instead of gamma s_t / (N d_z):
    (eps_hat - eps_tilde) / s_t = sqrt(abar) (grad log q_t - grad log p_t)(z_t) is the gradient of KL(q_t | p_t) in z.
    """
    device, model_dtype, dtype = z.device, prior.dtype, z.dtype
    sqrt_abar, sqrt_one_minus_abar = noise_level(prior.alphas_cumprod, t)
    s_t = sqrt_one_minus_abar / sqrt_abar
    kde_weight, bandwidth = float(hp["kde_weight"]), float(hp["kde_bandwidth"])
    k_draws, signs = int(hp["n_noise_draws"]), ((1.0, -1.0) if hp["antithetic"] else (1.0,))
    b = len(generators)
    n = z.shape[0] // b
    residual, eps_sum, pi, first_z_t = None, None, None, None
    for _ in range(k_draws):
        if hp["shared_noise"]:
            eps_draw = randn_per_image((1, *z.shape[1:]), generators, device, dtype).repeat_interleave(n, dim=0)
        else:
            eps_draw = randn_per_image((n, *z.shape[1:]), generators, device, dtype)
        for sign in signs:
            eps = eps_draw if sign == 1.0 else -eps_draw
            z_t = sqrt_abar * z + sqrt_one_minus_abar * eps
            eps_hat = prior.eps(z_t.to(model_dtype), t).to(dtype)
            eps_tilde, pi_draw = kde_noise_estimate_scaled(z_t, z, sqrt_abar, sqrt_one_minus_abar, bandwidth, b)
            term = eps_hat - eps_tilde if kde_weight == 1.0 else eps_hat - kde_weight * eps_tilde
            residual = term if residual is None else residual + term
            eps_sum = eps if eps_sum is None else eps_sum + eps
            if pi is None:
                pi, first_z_t = pi_draw, z_t
    count = k_draws * len(signs)
    if count > 1:
        residual, eps_sum = residual / count, eps_sum / count
    if hp["control_variate"]:
        r, e = residual.reshape(b, -1), eps_sum.reshape(b, -1)
        beta = -(r * e).sum(1) / (e * e).sum(1).clamp_min(1e-30)
        residual = (r + beta[:, None] * e).reshape(residual.shape)
    if hp["feature_repulsion"] > 0:
        from dwgf.solvers.rlsd import repulsion

        extractor = hp["feature_extractor"]
        if extractor is None:
            rep, _ = repulsion(first_z_t, lambda latents: latents, lambda features: features, n_images=b)
        else:
            decode = lambda latents: prior.decode(latents.to(model_dtype)).to(dtype)  # noqa: E731
            rep, _ = repulsion(first_z_t, decode, extractor, n_images=b)
        residual = residual - float(hp["feature_repulsion"]) * sqrt_one_minus_abar * rep
    if hp["likelihood_std"] is not None:
        return (float(hp["gamma"]) / s_t) * residual, pi
    return (float(hp["gamma"]) * s_t / normaliser) * residual, pi


def prior_gradient_variance(
    prior: LatentPrior, z: torch.Tensor, t: int, generator: torch.Generator, hp: dict[str, Any], repeats: int = 64
) -> float:
    """Mean over coordinates of the variance of :func:`prior_gradient` at fixed particles z over ``repeats`` calls
    (fresh noise each call), in units of (gamma s_t / (N d_z))^2 -- the per-step variance of the estimator."""
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2, got {repeats}")
    hp = resolve_hyper({k: v for k, v in hp.items() if k in DEFAULTS})
    sqrt_abar, sqrt_one_minus_abar = noise_level(prior.alphas_cumprod, t)
    unit = float(hp["gamma"]) * (sqrt_one_minus_abar / sqrt_abar) if hp["gamma"] > 0 else 1.0
    with torch.no_grad():
        with prior.rows_per_image(z.shape[0]):
            draws = [prior_gradient(prior, z, t, [generator], hp, 1)[0] / unit for _ in range(repeats)]
        draws = torch.stack(draws)
    return float(draws.var(dim=0, correction=1).mean())


def solve(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n_particles: int,
    generator: torch.Generator | list[torch.Generator],
    *,
    n_steps: int = 998,
    progress: bool = True,
    **hyper: Any,
) -> SolveResult | list[SolveResult]:
    """Run DWGF on B observations ``y`` (B, *y_shape) with ``n_particles`` particles each (module docstring).

    ``generator``: one per image (a list; returns one result per image), or a single generator with y of shape
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
    generators, single = as_generators(generator)
    b = len(generators)
    latent_shape = check_problem(prior, operator, y, n_particles, b)
    hp = resolve_hyper(hyper)
    # the Langevin variant may take more steps than timesteps (t repeats); DWGF's loop may not
    timesteps = langevin_timesteps(n_steps, int(hp["langevin_t_max"])) if hp["langevin"] else make_timesteps(n_steps)
    device, model_dtype = prior.device, prior.dtype
    dtype = torch.promote_types(model_dtype, torch.float32)
    if float(hp["lr"]) > torch.finfo(dtype).max:
        raise ValueError(f"DWGF hyper-parameter 'lr'={hp['lr']!r} is not representable in the latent dtype {dtype}")
    n = n_particles
    if hp["langevin"]:
        return langevin_solve(prior, operator, y, n, generators, hp, latent_shape, timesteps, n_steps, progress, single)
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
    official_prior = all(hp[key] == DEFAULTS[key] for key in _PRIOR_VARIANT_KEYS)
    bayesian = hp["likelihood_std"] is not None
    with prior.rows_per_image(n):
        for step in progress_bar(range(len(timesteps)), progress, "dwgf"):
            t = timesteps[step]
            sqrt_abar, sqrt_one_minus_abar = noise_level(alphas_cumprod, t)
            s_t = sqrt_one_minus_abar / sqrt_abar

            # Prior term: UNet noise prediction minus the particle-KDE noise prediction, injected as a gradient.
            with torch.no_grad():
                if official_prior:
                    eps = randn_per_image((n, *latent_shape), generators, device, dtype)
                    z_t = sqrt_abar * z + sqrt_one_minus_abar * eps
                    eps_hat = prior.eps(z_t.to(model_dtype), t).to(dtype)
                    eps_tilde, pi = kde_noise_estimate(z_t, z, sqrt_abar, sqrt_one_minus_abar, n_images=b)
                    g_prior = (gamma * s_t / norm["prior"]) * (eps_hat - eps_tilde)
                else:  # research variants (docs/findings.md)
                    g_prior, pi = prior_gradient(prior, z.detach(), t, generators, hp, norm["prior"])
                if hp["svgd_weight"] > 0:
                    scale = 1.0 if bayesian else 1.0 / norm["prior"]
                    g_prior = g_prior - (float(hp["svgd_weight"]) * scale) * svgd_repulsion(z.detach(), b)

            # Likelihood and encoder-decoder (vjp) terms through the decoder (per-image values, summed only for
            # autograd: each image's gradient is that of its own terms).
            x = decode(z)
            xi = sigma_dec * randn_per_image((n, *operator.x_shape), generators, device, dtype)
            a_x = operator(x + xi) if hp["decoder_noise_in_likelihood"] else operator(x)
            loss_lik = mean_data_fit(y_fit, a_x, d_y, n_images=b)
            if bayesian:  # sum ||y - A x||^2 / (2 sigma^2) per image = the official mean times N d_y / sigma^2
                loss_lik = loss_lik * (norm["likelihood"] / float(hp["likelihood_std"]) ** 2)
            with torch.no_grad():
                x_tilde = (x + xi).to(model_dtype)
                latents_tilde = _encode(prior, x_tilde, generators, hp, n)
                residual = x - prior.decode(latents_tilde).to(dtype)  # = -c of docs/method.md#dwgf step 6
            loss_vjp = (x * residual).reshape(b, -1).sum(dim=1) / (1 if bayesian else norm["vjp"])
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
            if hp["lr_schedule"] != "constant":
                optimiser.optimiser.param_groups[0]["lr"] = float(hp["lr"]) * lr_factor(
                    hp["lr_schedule"], float(hp["lr_floor"]), step, len(timesteps)
                )
            optimiser.step(grad, keep)
            if mask.all_diverged(step):
                break

    return _results(prior, operator, hp, z.detach(), pre_update, mask, history, n, n_steps, timesteps, single)


def langevin_timesteps(n_steps: int, t_max: int) -> list[int]:
    """t falling linearly from ``t_max`` to 2 over ``n_steps`` (rounded to integers; repeated when n_steps >
    t_max - 1). ``t_max=999`` with at most 998 steps is DWGF's own schedule (:func:`dwgf.solvers.base.make_timesteps`).

    >>> langevin_timesteps(5, 4), langevin_timesteps(3, 999) == make_timesteps(3), len(langevin_timesteps(1200, 999))
    ([4, 4, 3, 2, 2], True, 1200)
    """
    if n_steps <= t_max - 1:
        return make_timesteps(n_steps, t_max=t_max)
    return [round(t_max - (t_max - 2) * k / (n_steps - 1)) for k in range(n_steps)]


def gauss_newton_moment(
    moment: torch.Tensor, probe_square: torch.Tensor, step: int, beta2: float, prior_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(running moment, bias-corrected Gauss-Newton diagonal) after this step's mean squared probe.

    m_k = beta2 m_{k-1} + (1 - beta2^w_k) u_k^2 with w_0 = 1 + prior_steps, w_k = 1 afterwards, and the estimate
    m_k / (1 - beta2^(k + 1 + prior_steps)). With ``prior_steps`` = 0 this is Adam's bias correction, which gives
    step 1's single probe the weight of step 0's mean of P probes (1/2 each: chi^2_1 noise in G). With
    ``prior_steps`` = P - 1 (``langevin_probe_weighting: count``) step 0's mean enters as P steps' worth, so step
    k's probe weighs about 1 / (P + k).

    Step 0's mean of 64 probes is 4, step 1's probe 0 (``count``: ~ 4 x 64 / 65; ``step``: ~ 4 / 2):

    >>> one = torch.ones(1)
    >>> [round(float(gauss_newton_moment(gauss_newton_moment(0 * one, 4 * one, 0, 0.999, extra)[0], 0 * one, 1,
    ...                                  0.999, extra)[1]), 3) for extra in (63, 0)]
    [3.936, 1.999]
    """
    weight = 1.0 - beta2 ** (prior_steps + 1 if step == 0 else 1)
    moment = beta2 * moment + weight * probe_square
    return moment, moment / (1.0 - beta2 ** (step + 1 + prior_steps))


def preconditioned_curvature(
    forward: Any,
    a_x: torch.Tensor,
    latents: torch.Tensor,
    precondition: torch.Tensor,
    sigma: float,
    prior_bound: float,
    start: torch.Tensor,
    n_images: int,
    iterations: int,
) -> torch.Tensor:
    """lambda_max of M = G^1/2 (J^T A^T A J / sigma^2 + prior_bound I) G^1/2 per image, (B,), by power iteration.

    ``forward`` maps latents to A D(latents); ``a_x`` = its value at ``latents``, with the graph (kept);
    G = ``precondition``. Each row (particle) is iterated on its own from ``start`` (a probe's J^T A^T r:
    deterministic, no random draw, in the data Hessian's range) and an image's value is the largest Rayleigh
    quotient of its particles. The Gauss-Newton product J^T A^T A J d needs no Hessian: A J d by a central
    difference of ``forward`` along d (exact for the test bed's linear decoder up to rounding; a secant for a
    nonlinear one; the decoder's custom backward is not twice differentiable), then one backward through the
    kept graph. Measured (docs/findings.md): ~1.6 on the box, ~5 on SR x8 and ~23 on SR x32 at t = 200 (12
    measurements in 256 latents), beyond the kinetic integrator's h^2 lambda < 4 at h = 0.5.
    """
    rows = latents.shape[0]
    ones = [1] * (latents.dim() - 1)
    root = precondition.sqrt()
    vector = start * root
    quotient = torch.zeros(rows, dtype=vector.dtype, device=vector.device)
    base = latents.detach()
    with torch.no_grad():
        scale = 1e-2 * base.reshape(rows, -1).norm(dim=1).clamp_min(1.0)
    for _ in range(iterations):
        vector = vector / vector.reshape(rows, -1).norm(dim=1).clamp_min(1e-30).reshape(-1, *ones)
        direction = root * vector
        with torch.no_grad():
            step = (scale / direction.reshape(rows, -1).norm(dim=1).clamp_min(1e-30)).reshape(-1, *ones)
            step_y = step.reshape(-1, *[1] * (a_x.dim() - 1))
            pushed = (forward(base + step * direction) - forward(base - step * direction)) / (2.0 * step_y)
        (product,) = torch.autograd.grad(a_x, latents, grad_outputs=pushed, retain_graph=True)
        image = root * product.detach() / sigma**2 + prior_bound * precondition * vector
        quotient = (image * vector).reshape(rows, -1).sum(dim=1)
        vector = image
    return quotient.reshape(n_images, -1).amax(dim=1)


def langevin_solve(
    prior: LatentPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    n: int,
    generators: list[torch.Generator],
    hp: dict[str, Any],
    latent_shape: tuple[int, ...],
    timesteps: list[int],
    n_steps: int,
    progress: bool,
    single: bool,
) -> SolveResult | list[SolveResult]:
    """DWGF's flow with its entropy realised by Langevin noise (``langevin=True``; called by :func:`solve`).

    The Wasserstein gradient flow of KL(q | pi) is the Fokker-Planck equation of the Langevin diffusion
    dz = grad log pi(z) dt + sqrt(2) dW; its particles need no KDE (with N = 4 in d = 256 the KDE no longer
    interacts late in the flow, docs/findings.md, so DWGF has no entropy term there). Target at step t
    (``langevin_t_max`` -> 2, :func:`langevin_timesteps`):

        pi_t(z) ∝ p(y | z) p_t(sqrt(abar_t) z),   -log p(y | z) = sum ||y - A D(z)||^2 / (2 sigma^2),

    whose prior factor is the prior noised to level t and rescaled (for p_0 = N(mu, S): N(mu, S + s_t^2 I)); at
    the last step (t = 2, s_t^2 = 0.0026) it is the posterior up to that inflation. Its score needs one UNet call
    and no noise draw: -grad_z log p_t(sqrt(abar) z) = eps_hat(sqrt(abar) z, t) / s_t, s_t = sqrt((1-abar)/abar).
    Per step, with h = lr * lr_factor(step) and sigma = ``likelihood_std``:

    1. g = grad_z [sum ||y - A D(z)||^2 / (2 sigma^2)] (autograd) + eps_hat(sqrt(abar) z, t) / s_t.
    2. Preconditioner: a probe r ~ N(0, I) in y-space gives u = J^T A^T r (one more backward through the decoder,
       J = dD/dz), E[u^2] = diag(J^T A^T A J) (Hutchinson); v is its running mean (Adam's beta2 with bias
       correction, :func:`gauss_newton_moment`: the Gauss-Newton diagonal, constant on the test bed;
       ``langevin_probes`` probes at the first step so that no coordinate starts from a near-zero estimate, with
       ``langevin_probe_weighting: count`` weighted as that many steps) and G = 1 / (v / sigma^2 + c / s_t^2), c =
       ``langevin_prior_precision``. Any prior noised to level t and rescaled has covariance >= s_t^2 I, so
       1 / s_t^2 bounds its curvature: G ~ diag(H)^-1 (Jacobi) where the data decide, and the prior-decided
       directions move at most at the stable rate (they freeze progressively as s_t -> 0: annealing).
    3. z <- z - h G g + sqrt(2 h G) xi, xi ~ N(0, I): Langevin preconditioned by the constant G, whose stationary
       law is pi_t up to the O(h) discretisation bias (stable for h lambda_max(G H) < 2). With
       ``langevin_friction`` gamma, the kinetic (underdamped) form with mass G^-1 and velocity q (0 at the start):
       q <- (1 - gamma h) q sqrt(G / G_prev) - h G g + sqrt(2 gamma h G) xi, z <- z + h q (the factor keeps q at
       its temperature N(0, G) when the preconditioner changes between steps), whose stationary law is
       pi_t(z) N(q; 0, G); it mixes the slowest direction (curvature lambda_min of G H) in ~ 1 / sqrt(lambda_min)
       time units instead of 1 / lambda_min (1 / lambda_min = the Jacobi condition number for h lambda_max ~ 1:
       ~443 on the box, 3.3e4 on SR x8, docs/findings.md).

    Random draws per image and step, in order: the probe(s) r, then xi (after the initial latents N(0, I)). A
    non-finite gradient or decode freezes the image (status "diverged"), as in :func:`solve`.
    """
    b = len(generators)
    device, model_dtype = prior.device, prior.dtype
    dtype = torch.promote_types(model_dtype, torch.float32)
    sigma = float(hp["likelihood_std"])
    beta2, floor = float(hp["betas"][1]), float(hp["langevin_prior_precision"])
    d_y = operator.measurement_dim
    z = randn_per_image((n, *latent_shape), generators, device, dtype)
    y_fit = _measurements(y.to(device=device, dtype=dtype), hp, operator, n, generators)
    mask = ImageMask(b, n, device)
    history: dict[str, list[torch.Tensor]] | None = {key: [] for key in TRACE_KEYS} if hp["trace"] else None
    second_moment = torch.zeros_like(z)
    friction = None if hp["langevin_friction"] is None else float(hp["langevin_friction"])
    cap = None if hp["langevin_step_cap"] is None else float(hp["langevin_step_cap"])
    prior_steps = int(hp["langevin_probes"]) - 1 if hp["langevin_probe_weighting"] == "count" else 0
    step_rows: float | torch.Tensor = float(hp["lr"])  # per particle row once the cap has been measured
    velocity = torch.zeros_like(z)
    previous: torch.Tensor | None = None  # the last step's G (kinetic form)
    pre_update: torch.Tensor | None = None
    with prior.rows_per_image(n):
        for step in progress_bar(range(len(timesteps)), progress, "dwgf-langevin"):
            t = timesteps[step]
            sqrt_abar, sqrt_one_minus_abar = noise_level(prior.alphas_cumprod, t)
            s_t = sqrt_one_minus_abar / sqrt_abar

            # 1. Gradient of -log pi_t: the data fit through autograd, the rescaled prior's score from one UNet call.
            with torch.no_grad():
                g_prior = prior.eps((sqrt_abar * z).to(model_dtype), t).to(dtype) / s_t
            latents = z.detach().requires_grad_(True)
            x = prior.decode(latents.to(model_dtype)).to(dtype)
            a_x = operator(x)
            loss_lik = mean_data_fit(y_fit, a_x, d_y, n_images=b) * (n * d_y / sigma**2)
            (grad_lik,) = torch.autograd.grad(loss_lik.sum(), latents, retain_graph=True)
            probes = int(hp["langevin_probes"]) if step == 0 else 1
            measure_cap = step == 0 and cap is not None  # the step cap needs the graph once more
            probe_square = torch.zeros_like(z)
            for probe_index in range(probes):
                probe = randn_per_image((n, *operator.y_shape), generators, device, dtype)
                keep_graph = probe_index < probes - 1 or measure_cap
                (probe_grad,) = torch.autograd.grad((a_x * probe).sum(), latents, retain_graph=keep_graph)
                probe_square = probe_square + probe_grad.detach() ** 2 / probes
            grad = grad_lik + g_prior

            keep = mask.update(step, finite_per_image(b, loss_lik, grad, x))
            pre_update = x.detach() if pre_update is None else keep_rows(keep, x.detach(), pre_update)
            if history is not None:
                history["likelihood"].append(loss_lik.detach())
                history["vjp"].append(torch.zeros_like(loss_lik.detach()))
                history["prior_grad_norm"].append(g_prior.reshape(b, -1).norm(dim=1))
                history["kde_self_weight"].append(torch.ones(b, dtype=dtype, device=device))  # no interaction
                history["loss"].append(loss_lik.detach())

            # 2. Gauss-Newton diagonal (running mean of the probe's square) and the preconditioner G.
            moment, diagonal = gauss_newton_moment(second_moment, probe_square, step, beta2, prior_steps)
            precondition = 1.0 / (diagonal / sigma**2 + floor / s_t**2)
            if measure_cap:
                # 2b. Largest curvature the preconditioned integrator sees, per image; the first step's is the
                # flow's largest (G only shrinks as c / s_t^2 grows), so the cap is set once.
                curvature = preconditioned_curvature(
                    lambda latent: operator(prior.decode(latent.to(model_dtype)).to(dtype)),
                    a_x, latents, precondition, sigma, floor / s_t**2, probe_grad.detach(), b,
                    int(hp["langevin_power_iterations"]),
                )  # fmt: skip
                limit = 2.0 / curvature.sqrt() if friction is not None else 2.0 / curvature
                step_rows = torch.clamp(cap * limit, max=float(hp["lr"])).repeat_interleave(n)
                step_rows = step_rows.reshape(-1, *([1] * (z.dim() - 1)))
            # 3. Preconditioned Langevin step; frozen (diverged) images keep their latents and moment.
            h = step_rows * lr_factor(hp["lr_schedule"], float(hp["lr_floor"]), step, len(timesteps))
            xi = randn_per_image((n, *latent_shape), generators, device, dtype)
            with torch.no_grad():
                if friction is None:
                    moved = z - h * precondition * grad + torch.sqrt(2.0 * h * precondition) * xi
                else:
                    # the velocity's stationary law is N(0, G): when G changes (the prior bound c / s_t^2 grows as
                    # t falls, the Gauss-Newton estimate settles) it is rescaled to stay at that temperature, so a
                    # shrinking G does not leave it hot (measured: x10 over-dispersion on SR x8 without)
                    velocity = velocity * torch.sqrt(precondition / previous) if previous is not None else velocity
                    kicked = (1.0 - friction * h) * velocity - h * precondition * grad
                    kicked = kicked + torch.sqrt(2.0 * friction * h * precondition) * xi
                    moved = z + h * kicked
                    velocity = keep_rows(keep, kicked, velocity)
                    previous = precondition if previous is None else keep_rows(keep, precondition, previous)
            z = keep_rows(keep, moved, z)
            second_moment = keep_rows(keep, moment, second_moment)
            if mask.all_diverged(step):
                break
    return _results(prior, operator, hp, z.detach(), pre_update, mask, history, n, n_steps, timesteps, single)


def _results(
    prior: LatentPrior,
    operator: LinearOperator,
    hp: dict[str, Any],
    final_latents: torch.Tensor,
    pre_update: torch.Tensor | None,
    mask: ImageMask,
    history: dict[str, list[torch.Tensor]] | None,
    n: int,
    n_steps: int,
    timesteps: list[int],
    single: bool,
) -> SolveResult | list[SolveResult]:
    """One :class:`SolveResult` per image from the final latents (decoded here), the decodes before the last
    update, the divergence mask and the trace (shared by :func:`solve` and :func:`langevin_solve`)."""
    b = mask.n_images
    dtype = final_latents.dtype
    with torch.no_grad(), prior.rows_per_image(n):
        post_update = prior.decode(final_latents.to(prior.dtype)).to(dtype)
    diverged = mask.statuses()
    # y_clean is recorded per image, (1, *y_shape), so a record does not depend on the batch it was solved in
    per_image = {**hp, "y_clean": hp["y_clean"][:1] if isinstance(hp["y_clean"], torch.Tensor) else hp["y_clean"]}
    recorded = HYPER.solve_record(per_image, n_particles=n, n_steps=n_steps, timesteps=timesteps)
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
