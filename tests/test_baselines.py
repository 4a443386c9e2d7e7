"""Baselines (PSLD, Latent-DPS, RLSD) on the uniform solver interface, checked against independent computations.

* A tiny linear-Gaussian latent prior (``GaussianLatentPrior`` below: z ~ N(m, diag(s^2)), D(z) = W z + b) has a
  closed-form eps, so one solver step can be recomputed by hand with explicit matrices and compared to the solver.
* The exact-posterior test bed (``GaussianMixturePrior`` fitted on bundled crops) checks that every method's particle
  mean is closer to the closed-form posterior mean than the prior mean is.
* The tiny random-weight Stable Diffusion folder (``tiny_sd_path``) is a smoke test of the real model path.
"""

from __future__ import annotations

import math

import pytest
import torch

from dwgf.operators import make_operator
from dwgf.priors.base import LatentPrior, scaled_linear_alphas_cumprod
from dwgf.solvers import get_solver, latent_dps, psld, rlsd, solver_defaults, solver_names
from dwgf.solvers.base import make_timesteps, randn

F64 = torch.float64
#: every registered solver but DWGF (from the registry, so a new baseline is covered without editing this file)
BASELINES = tuple(name for name in solver_names() if name != "dwgf")


class GaussianLatentPrior(LatentPrior):
    """z_0 ~ N(m, diag(s^2)) on (4, S/8, S/8); D(z) = W z + b (linear); E(x) = W^+ (x - b).

    The noised marginal is N(sqrt(abar) m, abar s^2 + 1 - abar) per coordinate, so
    eps(z_t, t) = sqrt(1 - abar) (z_t - sqrt(abar) m) / (abar s^2 + 1 - abar) exactly.
    """

    kind = "test_gaussian"

    def __init__(self, image_size: int = 16, seed: int = 0, dtype: torch.dtype = F64):
        gen = torch.Generator().manual_seed(seed)
        self.image_size = image_size
        self.shape = (4, image_size // 8, image_size // 8)
        self.d_z, self.d_x = math.prod(self.shape), 3 * image_size**2
        self.m = 0.5 * torch.randn(self.d_z, generator=gen, dtype=F64)
        self.s = 0.5 + torch.rand(self.d_z, generator=gen, dtype=F64)
        self.W = 0.5 * torch.randn(self.d_x, self.d_z, generator=gen, dtype=F64) / math.sqrt(self.d_z)
        self.b = 0.1 * torch.randn(self.d_x, generator=gen, dtype=F64)
        self.W_pinv = torch.linalg.pinv(self.W)
        self._alphas_cumprod = scaled_linear_alphas_cumprod()
        self._dtype = dtype

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], -1) @ self.W.T.to(z.dtype) + self.b.to(z.dtype)
        return x.reshape(z.shape[0], 3, self.image_size, self.image_size)

    def encode(self, x: torch.Tensor, generator=None, sample: bool = True) -> torch.Tensor:
        z = (x.reshape(x.shape[0], -1) - self.b.to(x.dtype)) @ self.W_pinv.T.to(x.dtype)
        return z.reshape(x.shape[0], *self.shape)

    def eps(self, z_t: torch.Tensor, t) -> torch.Tensor:
        abar = float(self._alphas_cumprod[int(t)])
        flat = z_t.reshape(z_t.shape[0], -1)
        var = (abar * self.s**2 + 1 - abar).to(z_t.dtype)
        out = math.sqrt(1 - abar) * (flat - math.sqrt(abar) * self.m.to(z_t.dtype)) / var
        return out.reshape(z_t.shape)


def operator_matrix(operator, image_size: int) -> torch.Tensor:
    """A as an explicit (prod(y_shape), 3 S^2) float64 matrix, by applying it to the standard basis."""
    d_x = 3 * image_size**2
    basis = torch.eye(d_x, dtype=F64).reshape(d_x, 3, image_size, image_size)
    return operator(basis).reshape(d_x, -1).T


def pinv_matrix(operator, image_size: int) -> torch.Tensor:
    """A^+ as an explicit (3 S^2, prod(y_shape)) matrix, from ``operator.pseudo_inverse`` on the y basis."""
    d_y = math.prod(operator.y_shape)
    basis = torch.eye(d_y, dtype=F64).reshape(d_y, *operator.y_shape)
    return operator.pseudo_inverse(basis).reshape(d_y, -1).T


def observation(prior: GaussianLatentPrior, operator, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = (prior.m + prior.s * torch.randn(prior.d_z, generator=gen, dtype=F64)).reshape(1, *prior.shape)
    y = operator(prior.decode(z))
    return operator.zero_unmeasured(y + 0.01 * torch.randn(y.shape, generator=gen, dtype=F64))


# -- interface --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
def test_unknown_hyper_parameter_is_named(name):
    prior = GaussianLatentPrior()
    operator = make_operator("sr_avgpool", 16, factor=8)
    y = observation(prior, operator)
    with pytest.raises(ValueError, match="not_a_key"):
        get_solver(name)(prior, operator, y, 2, torch.Generator().manual_seed(0), n_steps=2, not_a_key=1.0)


def test_official_settings_are_recorded():
    # docs/method.md#psld (PSLD) and docs/method.md#rlsd (RLSD official runs); the numbers, verbatim.
    assert psld.TASK_DEFAULTS["box_inpainting"] == {"gamma": 1e-2, "omega": 1e-1}
    assert psld.TASK_DEFAULTS["sr_avgpool"] == {"gamma": 0.1, "omega": 1.0}
    assert (psld.DEFAULTS["gamma"], psld.DEFAULTS["omega"], psld.DEFAULTS["eta"]) == (0.1, 1.0, 0.0)
    assert rlsd.TASK_DEFAULTS["box_inpainting"] == {"w_t": 0.15, "rho": 0.07, "lr_x": 0.4, "lr_z": 0.8}
    assert rlsd.TASK_DEFAULTS["sr_avgpool"] == {"w_t": 0.01, "rho": 0.05, "lr_x": 0.4, "lr_z": 0.6}
    assert rlsd.TASK_N_PARTICLES == {"box_inpainting": 4, "sr_avgpool": 2}
    for module in (psld, rlsd, latent_dps):
        for task, values in module.TASK_DEFAULTS.items():
            assert set(values) <= set(module.DEFAULTS), (module.__name__, task)
    assert "gamma" not in latent_dps.DEFAULTS and solver_defaults("latent_dps") == latent_dps.DEFAULTS


def test_ddim_coefficients_match_song_et_al():
    abar = scaled_linear_alphas_cumprod()
    steps = [999, 700, 300, 2]
    for eta in (0.0, 0.5, 1.0):
        for k, c in enumerate(psld.ddim_coefficients(abar, steps, eta)):
            a_t = float(abar[steps[k]])
            a_prev = float(abar[steps[k + 1]]) if k + 1 < len(steps) else 1.0
            assert c["sqrt_abar_prev"] == pytest.approx(math.sqrt(a_prev))
            # the marginal variance of z_t' is preserved: dir^2 + sigma^2 = 1 - abar_prev
            assert c["dir"] ** 2 + c["sigma"] ** 2 == pytest.approx(1 - a_prev, abs=1e-12)
            expected_sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            assert c["sigma"] == pytest.approx(expected_sigma, abs=1e-12)


def test_gluing_uses_the_pseudo_inverse():
    # Block-average SR is not orthonormal (A A^T = I / 64): only A^+ makes the glued image data-consistent.
    operator = make_operator("sr_avgpool", 16, factor=8)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=F64)
    y = torch.randn(1, *operator.y_shape, generator=gen, dtype=F64)
    glued = psld.glued_image(operator, y, x)
    torch.testing.assert_close(operator(glued), y.expand(2, -1, -1, -1))
    consistent = x - operator.pseudo_inverse(operator(x)) + operator.pseudo_inverse(y)
    torch.testing.assert_close(psld.glued_image(operator, y, consistent), consistent)


# -- one step recomputed by hand --------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["box_inpainting", "sr_avgpool"])
@pytest.mark.parametrize("gluing", ["projected", "autoencoder", "off"])
def test_psld_single_step_matches_closed_form(task, gluing):
    """n_steps=1 (t = 999, abar_prev = 1): z_out = zhat_0 - grad, with the gradient written out in matrices."""
    prior = GaussianLatentPrior()
    operator = make_operator(task, 16, **({"factor": 8} if task == "sr_avgpool" else {}))
    y = observation(prior, operator)
    n, omega, gamma, t = 3, 0.7, 0.3, 999
    hyper = {"omega": omega, "gamma": 0.0 if gluing == "off" else gamma, "t_min": 999}
    if gluing != "off":
        hyper["gluing"] = gluing
    result = psld.solve(prior, operator, y, n, torch.Generator().manual_seed(5), n_steps=1, progress=False, **hyper)
    z_T = randn((n, *prior.shape), torch.Generator().manual_seed(5), "cpu", F64).reshape(n, -1)

    abar = float(prior.alphas_cumprod[t])
    var = abar * prior.s**2 + 1 - abar
    J0 = (1 - (1 - abar) / var) / math.sqrt(abar)  # d zhat_0 / d z_t (diagonal)
    c0 = (1 - abar) * math.sqrt(abar) * prior.m / var / math.sqrt(abar)
    z0_hat = z_T * J0 + c0
    A, A_pinv = operator_matrix(operator, 16), pinv_matrix(operator, 16)
    M = A @ prior.W
    residual = y.reshape(-1) - (z0_hat @ M.T + A @ prior.b)
    grad = -omega * (residual / residual.norm(dim=1, keepdim=True)) @ M * J0
    if gluing != "off":
        P = torch.eye(prior.d_x, dtype=F64) - A_pinv @ A if gluing == "projected" else torch.eye(prior.d_x, dtype=F64)
        x0 = z0_hat @ prior.W.T + prior.b
        glued = x0 @ P.T + (A_pinv @ y.reshape(-1) if gluing == "projected" else 0)
        e = (glued - prior.b) @ prior.W_pinv.T - z0_hat
        G = prior.W_pinv @ P @ prior.W - torch.eye(prior.d_z, dtype=F64)  # d e / d zhat_0
        grad = grad + gamma * (e / e.norm(dim=1, keepdim=True)) @ G * J0
    expected = z0_hat - grad
    torch.testing.assert_close(result.latents.reshape(n, -1), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(result.particles, prior.decode(expected.reshape(n, *prior.shape)))


@pytest.mark.parametrize("augmented", [True, False])
def test_rlsd_single_step_matches_closed_form(augmented):
    """One RLSD step with Adam reduced to plain gradient descent (betas 0, eps = lr = 1e12: step = g (1 - |g|/eps))."""
    prior = GaussianLatentPrior()
    operator = make_operator("box_inpainting", 16)
    y = observation(prior, operator)
    n, t, w_t, rho = 3, 999, 0.3, 0.2
    sgd = {"betas": (0.0, 0.0), "adam_eps": 1e12, "lr_x": 1e12, "lr_z": 1e12}
    result = rlsd.solve(
        prior, operator, y, n, torch.Generator().manual_seed(7), n_steps=1, progress=False,
        augmented=augmented, w_t=w_t, rho=rho, t_min=999, **sgd,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(7)
    z = randn((n, *prior.shape), gen, "cpu", F64).reshape(n, -1)
    x = randn((n, 3, 16, 16), gen, "cpu", F64).reshape(n, -1) if augmented else None
    eps = randn((n, *prior.shape), gen, "cpu", F64).reshape(n, -1)

    abar = float(prior.alphas_cumprod[t])
    z_t = math.sqrt(abar) * z + math.sqrt(1 - abar) * eps
    eps_hat = prior.eps(z_t.reshape(n, *prior.shape), t).reshape(n, -1)
    s_t = math.sqrt((1 - abar) / abar)
    A = operator_matrix(operator, 16)
    d_y, d_z, d_x = operator.measurement_dim, prior.d_z, prior.d_x
    decode = lambda v: v @ prior.W.T + prior.b  # noqa: E731
    if augmented:
        g_z = -(x - decode(z)) @ prior.W / (n * d_x) + (w_t / rho) * s_t * (eps_hat - eps) / (n * d_z)
        z_new = z - g_z
        g_x = (x @ A.T - y.reshape(-1)) @ A / (n * d_y) + rho * (x - decode(z_new)) / (n * d_x)
        expected_particles = x - g_x
    else:
        g_z = (decode(z) @ A.T - y.reshape(-1)) @ A @ prior.W / (n * d_y) + w_t * s_t * (eps_hat - eps) / (n * d_z)
        z_new = z - g_z
        expected_particles = decode(z_new)
    torch.testing.assert_close(result.latents.reshape(n, -1), z_new, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(result.particles.reshape(n, -1), expected_particles, rtol=1e-8, atol=1e-10)


def test_rlsd_prior_weight_over_rho_is_a_rescaling_of_w_t():
    # Official RLSD (w_t / rho) with w_t = 0.1, rho = 0.2 is the DWGF copy (w_t) with w_t = 0.5, step for step.
    prior = GaussianLatentPrior()
    operator = make_operator("box_inpainting", 16)
    y = observation(prior, operator)

    def run(**h):
        return rlsd.solve(prior, operator, y, 2, torch.Generator().manual_seed(1), n_steps=5, progress=False, **h)

    official = run(w_t=0.1, rho=0.2, prior_weight_over_rho=True)
    copy = run(w_t=0.5, rho=0.2, prior_weight_over_rho=False)
    torch.testing.assert_close(official.particles, copy.particles, rtol=1e-12, atol=1e-12)
    assert official.hyper["prior_weight"] == pytest.approx(0.5)
    different = run(w_t=0.1, rho=0.2, prior_weight_over_rho=False)
    assert not torch.allclose(official.particles, different.particles)
    # Non-augmented RLSD has no rho: changing it changes nothing.
    a, b = run(augmented=False, rho=0.2), run(augmented=False, rho=5.0)
    torch.testing.assert_close(a.particles, b.particles, rtol=0, atol=0)
    assert "decoded" in official.extras and not a.extras


def test_latent_dps_without_guidance_is_ddim_sampling_of_the_prior():
    """omega = 0 leaves plain DDIM. With the exact (affine) eps of a Gaussian prior every DDIM step is affine,
    z' = alpha z + beta + sigma n, so the law of the output is Gaussian with a mean and variance that a scalar
    recursion gives exactly; the particles must match it (eta 0 and 1) up to sampling error, and it is close to
    the prior N(m, s^2) itself (50 strided steps)."""
    prior = GaussianLatentPrior(image_size=8)
    operator = make_operator("sr_avgpool", 8, factor=8)
    y = torch.zeros(1, *operator.y_shape, dtype=F64)
    n, steps = 1500, 50
    ts = make_timesteps(steps, t_max=999, t_min=0)
    abar = [float(prior.alphas_cumprod[t]) for t in ts] + [1.0]
    for eta in (0.0, 1.0):
        result = latent_dps.solve(
            prior, operator, y, n, torch.Generator().manual_seed(2), n_steps=steps, progress=False, omega=0.0, eta=eta
        )
        mean, var = torch.zeros(prior.d_z, dtype=F64), torch.ones(prior.d_z, dtype=F64)
        for k in range(steps):
            a, a_prev = abar[k], abar[k + 1]
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            direction = math.sqrt(1 - a_prev - sigma**2)
            gain = math.sqrt(1 - a) / (a * prior.s**2 + 1 - a)  # eps = gain * (z - sqrt(a) m)
            alpha = math.sqrt(a_prev / a) * (1 - math.sqrt(1 - a) * gain) + direction * gain
            beta = (math.sqrt(a_prev / a) * math.sqrt(1 - a) - direction) * gain * math.sqrt(a) * prior.m
            mean, var = alpha * mean + beta, alpha**2 * var + sigma**2
        z = result.latents.reshape(n, -1)
        # standard errors: mean ~ sd / 39, std ~ 1.8 % relative (1500 samples); ~5 sigma bounds
        torch.testing.assert_close(z.mean(0), mean, rtol=0, atol=float(5 * var.sqrt().max() / math.sqrt(n)))
        torch.testing.assert_close(z.std(0), var.sqrt(), rtol=0.09, atol=0)
        torch.testing.assert_close(var.sqrt(), prior.s, rtol=0.15, atol=0)
        torch.testing.assert_close(mean, prior.m, rtol=0, atol=0.1)


# -- divergence, determinism, frozen weights --------------------------------------------------------------------
class NaNBelow(LatentPrior):
    """Wraps a prior; eps returns NaN once t < ``t_nan`` (a solver must then report divergence, not raise)."""

    def __init__(self, inner: LatentPrior, t_nan: int):
        self.inner, self.t_nan = inner, t_nan
        self.kind = inner.kind

    alphas_cumprod = property(lambda self: self.inner.alphas_cumprod)
    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)
    latent_shape = lambda self, size: self.inner.latent_shape(size)  # noqa: E731
    decode = lambda self, z: self.inner.decode(z)  # noqa: E731
    encode = lambda self, x, generator=None, sample=True: self.inner.encode(x, generator, sample)  # noqa: E731

    def eps(self, z_t, t):
        out = self.inner.eps(z_t, t)
        return out * math.nan if int(t) < self.t_nan else out


@pytest.mark.parametrize("name", BASELINES)
def test_non_finite_values_give_diverged_status(name):
    prior = NaNBelow(GaussianLatentPrior(), t_nan=500)
    operator = make_operator("box_inpainting", 16)
    y = observation(prior.inner, operator)
    result = get_solver(name)(prior, operator, y, 3, torch.Generator().manual_seed(0), n_steps=10, progress=False)
    assert result.status == "diverged" and not result.ok
    # t = 999, 888, 777, 666, 556 are finite; step 5 (t = 445) is the first with NaN
    assert result.diverged_at_step == 5 and result.n_steps == 5
    assert torch.isfinite(result.particles).all() and torch.isfinite(result.latents).all()


@pytest.mark.parametrize("name", BASELINES)
def test_deterministic_for_a_seed_and_no_history(name):
    prior = GaussianLatentPrior()
    operator = make_operator("sr_avgpool", 16, factor=8)
    y = observation(prior, operator)
    hyper = {"eta": 1.0} if name != "rlsd" else {}  # eta > 0: the DDIM noise must come from the generator too

    def run(seed):
        return get_solver(name)(
            prior, operator, y, 3, torch.Generator().manual_seed(seed), n_steps=6, progress=False, **hyper
        )

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a.particles, b.particles) and torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.particles, c.particles)
    assert a.trace is None and a.status == "ok" and a.n_steps == 6
    assert all(v.shape[0] == 3 for v in a.extras.values())  # final states only, no per-step history


# -- RLSD repulsion ----------------------------------------------------------------------------------------------
def fixed_conv_extractor(seed: int = 0):
    """A deterministic differentiable feature map: a fixed random 3x3 conv (stride 2) + tanh, flattened."""
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=F64)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=F64))
        conv.bias.zero_()
    conv.requires_grad_(False)
    return lambda images: torch.tanh(conv(images)).flatten(1)


def test_repulsion_matches_an_independent_computation():
    prior = GaussianLatentPrior()
    extractor = fixed_conv_extractor()
    n = 4
    z_t = torch.randn(n, *prior.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    rep, kernel = rlsd.repulsion(z_t, prior.decode, extractor)

    features = extractor(prior.decode(z_t)).detach()
    for i in range(n):
        others = [j for j in range(n) if j != i]
        dist = torch.stack([(features[i] - features[j]).norm() for j in others])
        bandwidth = float(dist.sort().values[1]) ** 2 / math.log(n - 1)  # median of 3 distances
        k = torch.exp(-(dist**2) / bandwidth)
        torch.testing.assert_close(kernel[i], k)
        # Rep_i = -grad_{z_i} sum_j k(f(z_i), f_j) / sum_j k_ij with the bandwidth and the f_j held fixed
        zi = z_t[i : i + 1].clone().requires_grad_(True)
        fi = extractor(prior.decode(zi))[0]
        potential = sum(torch.exp(-((fi - features[j]) ** 2).sum() / bandwidth) for j in others)
        (grad,) = torch.autograd.grad(potential, zi)
        torch.testing.assert_close(rep[i], -grad[0] / k.sum(), rtol=1e-10, atol=1e-12)

    # A small step along Rep pushes the particles apart in feature space (the point of the term).
    def min_feature_distance(z):
        f = extractor(prior.decode(z))
        d = torch.cdist(f, f) + torch.eye(n, dtype=F64) * 1e9
        return float(d.min())

    assert min_feature_distance(z_t + 1e-3 * rep / rep.norm()) > min_feature_distance(z_t)


def test_repulsion_flag_needs_an_extractor_and_three_particles():
    prior = GaussianLatentPrior()
    operator = make_operator("box_inpainting", 16)
    y = observation(prior, operator)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="feature_extractor"):
        rlsd.solve(prior, operator, y, 4, gen, n_steps=2, progress=False, repulsion_gamma=1.0)
    with pytest.raises(ValueError, match="n_particles >= 3"):
        rlsd.solve(
            prior, operator, y, 2, gen, n_steps=2, progress=False, repulsion_gamma=1.0,
            feature_extractor=fixed_conv_extractor(),
        )  # fmt: skip


def test_repulsion_acts_only_before_sigma_break():
    prior = GaussianLatentPrior()
    operator = make_operator("box_inpainting", 16)
    y = observation(prior, operator)
    common = {"n_steps": 6, "progress": False, "trace": True}
    plain = rlsd.solve(prior, operator, y, 4, torch.Generator().manual_seed(3), **common)
    repelled = rlsd.solve(
        prior, operator, y, 4, torch.Generator().manual_seed(3), **common,
        repulsion_gamma=50.0, feature_extractor=fixed_conv_extractor(), sigma_break=600,
    )  # fmt: skip
    # timesteps 999, 800, 600, 401, 201, 2: repulsion only at t > 600
    norms = repelled.trace["repulsion_norm"]
    assert all(v > 0 for v in norms[:2]) and all(v == 0 for v in norms[2:])
    assert all(v == 0 for v in plain.trace["repulsion_norm"])
    assert not torch.allclose(plain.particles, repelled.particles)
    assert isinstance(repelled.hyper["feature_extractor"], str)  # recorded as text, not as an object


# -- exact-posterior test bed -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def testbed():
    """A test-bed prior fitted on 800 bundled 64-px crops (100 per source image; 8 held out), ~2-5 s."""
    from dwgf.priors.gaussian_mixture import GaussianMixturePrior

    prior, _, test_ids = GaussianMixturePrior.fit_bundled(n_per_image=100, image_size=64, n_test=8, seed=0)
    return prior, test_ids


@pytest.mark.parametrize("name", BASELINES)
def test_testbed_particle_mean_beats_the_prior_mean(testbed, name):
    """Well-specified box inpainting: particle mean closer to the exact posterior mean than the prior mean is."""
    from dwgf.cli.compare import prior_mean_image, settings_for
    from dwgf.metrics.testbed import posterior_mean_psnr
    from dwgf.operators import add_measurement_noise

    prior, _ = testbed
    operator = make_operator("box_inpainting", 64)
    gt = prior.decode(prior.sample_prior(1, torch.Generator().manual_seed(21)))
    y = operator.zero_unmeasured(add_measurement_noise(operator(gt), 0.001, torch.Generator().manual_seed(22)))
    posterior = prior.posterior(y, operator, 0.001, 0.01)
    _, hyper = settings_for(name, "box_inpainting")
    result = get_solver(name)(
        prior, operator, y, 4, torch.Generator().manual_seed(23), n_steps=40, progress=False, **hyper
    )
    assert result.ok and torch.isfinite(result.particles).all()
    psnr_method = posterior_mean_psnr(result.particles, posterior.mean_image)
    psnr_prior_mean = posterior_mean_psnr(prior_mean_image(prior), posterior.mean_image)
    assert psnr_method > psnr_prior_mean + 3.0, (psnr_method, psnr_prior_mean)


def test_testbed_compare_rows_and_table(testbed):
    from dwgf.cli import build_parser
    from dwgf.cli.compare import REFERENCES, run_compare, summarise, to_markdown

    prior, test_ids = testbed
    rows = run_compare(
        prior, test_ids, methods=["latent_dps", "rlsd"], tasks=["sr_avgpool"], regimes=["real", "prior"],
        n_images=1, n_particles=2, steps=3, log=lambda message: None,
    )  # fmt: skip
    assert len(rows) == 2 * (2 + len(REFERENCES))
    exact = [r for r in rows if r["method"] == "exact_mean"]
    assert all(r["psnr_post"] == math.inf for r in exact)  # the exact mean against itself
    summary = summarise(rows)
    assert list(summary["method"].unique()) == ["rlsd", "latent_dps", *REFERENCES]
    markdown = to_markdown(summary, {"n_images": 1})
    assert "| sr_avgpool | rlsd |" in markdown and "Regime `prior`" in markdown
    args = build_parser().parse_args(["testbed-compare", "--n-images", "3", "--methods", "psld"])
    assert args.n_images == 3 and args.methods == "psld" and callable(args.func)


# -- tiny Stable Diffusion smoke test ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sd_prior(tiny_sd_path):
    from dwgf.priors import load_prior

    return load_prior(tiny_sd_path)


@pytest.mark.parametrize("name", BASELINES)
def test_tiny_sd_smoke(tiny_sd_prior, name):
    prior = tiny_sd_prior
    operator = make_operator("box_inpainting", 64)
    y = operator(torch.zeros(1, 3, 64, 64))
    hyper = {"repulsion_gamma": 1.0, "feature_extractor": lambda x: x.mean(dim=(2, 3))} if name == "rlsd" else {}
    result = get_solver(name)(
        prior, operator, y, 3, torch.Generator().manual_seed(0), n_steps=2, progress=False, **hyper
    )
    assert result.ok and result.particles.shape == (3, 3, 64, 64) and torch.isfinite(result.particles).all()
    assert result.latents.shape == (3, *prior.latent_shape(64))
    for module in (prior.unet, prior.vae):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("name", solver_names())
def test_cuda_solve_matches_cpu(tiny_sd_path, name):
    """Every solver on CUDA follows its CPU run: the same CPU generator feeds both (``solvers.base.randn``)."""
    from dwgf.priors import load_prior

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    operator = make_operator("box_inpainting", 64)
    y = operator(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    particles = {}
    for device in ("cpu", "cuda"):
        prior = load_prior(tiny_sd_path, device=device)
        result = get_solver(name)(
            prior, operator, y.to(device), 2, torch.Generator().manual_seed(0), n_steps=3, progress=False
        )
        assert result.ok and result.particles.device.type in ("cpu", device)
        particles[device] = result.particles.cpu().double()
    difference = (particles["cpu"] - particles["cuda"]).abs().max().item()
    print(f"{name}: max |cpu - cuda| = {difference:.3g} over 3 steps")
    assert difference < 1e-3
