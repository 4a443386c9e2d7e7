"""Exact-posterior test bed: the noised-mixture ε, the closed-form posterior, fitting and files.

Every closed-form quantity is compared with an independent computation: autograd through
``torch.distributions.MixtureSameFamily`` for ε, grid quadrature of the unnormalised posterior of a
2-D latent toy prior (brute-force likelihood with a dense Σ_y) for the posterior, Monte Carlo for the
samplers, and a keep-index operator (no structural zeros) for the masked-image inpainting measurement.
"""

from __future__ import annotations

import math

import pytest
import torch

from dwgf.data import bundled_crops
from dwgf.operators import make_operator
from dwgf.operators.base import LinearOperator
from dwgf.priors import load_prior
from dwgf.priors.gaussian_mixture import CONFIG_FILE, TENSORS_FILE, GaussianMixturePrior
from dwgf.seeding import make_generator

F64 = torch.float64


# -- small operators written here so the test bed is checked independently of dwgf.operators ---------
class MaskedImage(LinearOperator):
    """y = w ⊙ x stored as an image; zeros of w are structural (masked-image inpainting when w is 0/1)."""

    name = "test_masked_image"

    def __init__(self, weight: torch.Tensor):
        super().__init__(image_size=weight.shape[-1])
        self.weight = weight.to(F64)

    @property
    def y_shape(self):
        return self.x_shape

    @property
    def measurement_dim(self):
        return int((self.weight != 0).sum())

    def forward(self, x):
        return x * self.weight.to(x.dtype)

    def adjoint(self, y):
        return y * self.weight.to(y.dtype)

    def pseudo_inverse(self, y):
        return y

    def params(self):
        return {}


class KeepIndex(LinearOperator):
    """y = the pixels at ``keep`` (flat indices), a vector: the same measurement without structural zeros."""

    name = "test_keep_index"

    def __init__(self, image_size: int, keep: torch.Tensor):
        super().__init__(image_size=image_size)
        self.keep = keep

    @property
    def y_shape(self):
        return (int(self.keep.numel()),)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)[:, self.keep]

    def adjoint(self, y):
        x = torch.zeros(y.shape[0], math.prod(self.x_shape), dtype=y.dtype)
        x[:, self.keep] = y
        return x.reshape(y.shape[0], *self.x_shape)

    def pseudo_inverse(self, y):
        return self.adjoint(y)

    def params(self):
        return {}


class DenseMatrix(LinearOperator):
    """y = A vec(x) with a dense matrix A (A Aᵀ not diagonal)."""

    name = "test_dense"

    def __init__(self, image_size: int, matrix: torch.Tensor):
        super().__init__(image_size=image_size)
        self.matrix = matrix.to(F64)

    @property
    def y_shape(self):
        return (self.matrix.shape[0],)

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.matrix.T.to(x.dtype)

    def adjoint(self, y):
        return (y @ self.matrix.to(y.dtype)).reshape(y.shape[0], *self.x_shape)

    def pseudo_inverse(self, y):
        return self.adjoint(y)

    def params(self):
        return {}


def operator_matrix(operator: LinearOperator) -> torch.Tensor:
    """A as an explicit (prod(y_shape), 3HW) matrix from forward on the pixel basis."""
    n = math.prod(operator.x_shape)
    basis = torch.eye(n, dtype=F64).reshape(n, *operator.x_shape)
    return operator.forward(basis).reshape(n, -1).T


# -- priors ---------------------------------------------------------------------------------------------
def toy_prior(sigma_enc: float = 0.0) -> GaussianMixturePrior:
    """d = 2 latent (2, 1, 1) decoding to 8×8 RGB images; three well-separated, correlated components."""
    gen = make_generator(11)
    W, _ = torch.linalg.qr(torch.randn(192, 2, generator=gen, dtype=F64))
    b = 0.1 * torch.randn(192, generator=gen, dtype=F64)
    means = torch.tensor([[-2.0, 1.0], [2.0, 0.5], [0.0, -2.0]], dtype=F64)
    covariances = torch.tensor(
        [[[0.6, 0.25], [0.25, 0.4]], [[0.3, -0.1], [-0.1, 0.8]], [[1.0, 0.0], [0.0, 0.2]]], dtype=F64
    )
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    s = torch.tensor([1.5, 0.7], dtype=F64)
    return GaussianMixturePrior(
        W, s, b, weights, means, covariances, image_size=8, latent_channels=2, sigma_enc=sigma_enc, dtype=F64
    )


@pytest.fixture(scope="module")
def fitted() -> GaussianMixturePrior:
    # 100 crops per source image (800 in all): PCA + 8-component EM takes ~2 s on one core.
    images, ids = bundled_crops(100, size=64, seed=0)
    return GaussianMixturePrior.fit(images, n_components=8, seed=0, ids=ids)


# -- ε of the noised mixture ---------------------------------------------------------------------------
def reference_eps(prior: GaussianMixturePrior, z: torch.Tensor, t: int) -> torch.Tensor:
    """−√(1−ā) ∇ log p_t by autograd of MixtureSameFamily(π, N(√ā μ_k, ā Σ_k + (1−ā) I))."""
    params = prior.parameters64()
    abar = float(prior.alphas_cumprod[t])
    d = params["mixture.means"].shape[1]
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=params["mixture.weights"]),
        torch.distributions.MultivariateNormal(
            math.sqrt(abar) * params["mixture.means"],
            covariance_matrix=abar * params["mixture.covariances"] + (1 - abar) * torch.eye(d, dtype=F64),
        ),
    )
    flat = z.detach().reshape(z.shape[0], d).to(F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(flat).sum(), flat)
    return (-math.sqrt(1 - abar) * grad).reshape(z.shape)


def noised_prior_samples(prior: GaussianMixturePrior, t: int, n: int, seed: int) -> torch.Tensor:
    gen = make_generator(seed)
    z0 = prior.sample_prior(n, gen).to(F64)
    abar = float(prior.alphas_cumprod[t])
    return math.sqrt(abar) * z0 + math.sqrt(1 - abar) * torch.randn(z0.shape, generator=gen, dtype=F64)


@pytest.mark.parametrize("t", [0, 1, 120, 500, 999])
def test_eps_equals_autograd_score_of_noised_mixture(fitted, t):
    z = noised_prior_samples(fitted, t, 3, seed=t)
    # one point far from every component too: responsibilities there are extreme (log-sum-exp matters)
    z = torch.cat([z, 6.0 * torch.ones(1, *z.shape[1:], dtype=F64)])
    eps = fitted.eps(z, t)
    assert eps.dtype == F64 and eps.shape == z.shape
    torch.testing.assert_close(eps, reference_eps(fitted, z, t), rtol=1e-7, atol=1e-9)


def test_eps_per_item_timesteps_and_float32(fitted):
    steps = [999, 3, 640]
    z = torch.cat([noised_prior_samples(fitted, t, 1, seed=100 + t) for t in steps])
    eps = fitted.eps(z, torch.tensor(steps))
    for i, t in enumerate(steps):
        torch.testing.assert_close(eps[i : i + 1], reference_eps(fitted, z[i : i + 1], t), rtol=1e-7, atol=1e-9)
    params = fitted.parameters64()
    clean = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=params["mixture.weights"]),
        torch.distributions.MultivariateNormal(params["mixture.means"], params["mixture.covariances"]),
    )
    torch.testing.assert_close(fitted.log_prob_clean(z), clean.log_prob(z.reshape(3, -1)), rtol=1e-9, atol=1e-6)
    eps32 = fitted.eps(z.float(), torch.tensor(steps))
    assert eps32.dtype == torch.float32
    torch.testing.assert_close(eps32, eps.float(), rtol=1e-4, atol=1e-5)


def test_eps_rejects_bad_timesteps(fitted):
    z = torch.zeros(2, 4, 8, 8)
    for bad in (1000, -1, torch.tensor([1, 2, 3]), torch.tensor([0.5, 1.0]), 2.0):
        with pytest.raises(ValueError, match="t"):
            fitted.eps(z, bad)


# -- autoencoder -----------------------------------------------------------------------------------------
def test_fitted_latent_is_whitened_and_encoder_inverts_decoder(fitted):
    images, _ = bundled_crops(100, size=64, seed=0)
    codes = fitted.encode(images, sample=False).to(F64).reshape(images.shape[0], -1)
    torch.testing.assert_close(codes.std(0, unbiased=False), torch.ones(256, dtype=F64), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(codes.mean(0), torch.zeros(256, dtype=F64), rtol=0, atol=1e-4)
    z = fitted.sample_prior(5, make_generator(3))
    assert z.shape == (5, 4, 8, 8) and z.dtype == torch.float32
    torch.testing.assert_close(fitted.encode(fitted.decode(z), sample=True), z, rtol=1e-4, atol=1e-4)
    prior64 = toy_prior()
    z64 = torch.randn(4, 2, 1, 1, generator=make_generator(4), dtype=F64)
    torch.testing.assert_close(prior64.encode(prior64.decode(z64)), z64, rtol=0, atol=1e-12)


def test_decode_is_differentiable_and_linear():
    prior = toy_prior()
    z = torch.randn(3, 2, 1, 1, generator=make_generator(5), dtype=F64, requires_grad=True)
    x = prior.decode(z)
    (grad,) = torch.autograd.grad(x.sum(), z)
    params = prior.parameters64()
    expected = (params["decoder.W"].sum(0) * params["decoder.s"]).reshape(1, 2, 1, 1).expand(3, 2, 1, 1)
    torch.testing.assert_close(grad, expected)
    direct = z.detach().reshape(3, 2) @ (params["decoder.W"] * params["decoder.s"]).T + params["decoder.b"]
    torch.testing.assert_close(x.detach().reshape(3, -1), direct)


def test_encoder_noise_uses_the_generator():
    prior = toy_prior(sigma_enc=0.5)
    x = prior.decode(torch.zeros(1, 2, 1, 1, dtype=F64)).expand(20000, 3, 8, 8)
    with pytest.raises(ValueError, match="generator"):
        prior.encode(x)
    a = prior.encode(x, make_generator(1)).reshape(-1, 2)
    b = prior.encode(x, make_generator(1)).reshape(-1, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.mean(0).abs().max() < 4 * 0.5 / math.sqrt(20000)
    torch.testing.assert_close(a.std(0), torch.full((2,), 0.5, dtype=F64), rtol=0.03, atol=0)
    assert prior.encode(x[:2], sample=False).abs().max() < 1e-12


def test_sample_prior_moments():
    prior = toy_prior()
    params = prior.parameters64()
    z = prior.sample_prior(40000, make_generator(6)).reshape(-1, 2)
    pi, mu, cov = params["mixture.weights"], params["mixture.means"], params["mixture.covariances"]
    mean = pi @ mu
    second = torch.einsum("k,kij->ij", pi, cov) + torch.einsum("k,ki,kj->ij", pi, mu, mu)
    covariance = second - torch.outer(mean, mean)
    assert ((z.mean(0) - mean).abs() < 4 * covariance.diagonal().sqrt() / math.sqrt(40000)).all()
    torch.testing.assert_close(torch.cov(z.T), covariance, rtol=0.05, atol=0.05)


# -- exact posterior against quadrature -------------------------------------------------------------------
def quadrature_posterior(prior, operator, y, sigma_y, sigma_dec, observed=None, half_width=8.0, n=401):
    """Brute force on a 2-D grid: per-component ∫ π_k N(z; μ_k, Σ_k) N(y_obs; (A D(z))_obs, Σ_y) dz.

    Σ_y = σ_y² I + σ_dec² (A Aᵀ)_obs is formed densely from A's explicit matrix; returns weights, means,
    covariances per component and log p(y).
    """
    params = prior.parameters64()
    A = operator_matrix(operator)
    y = y.reshape(-1).to(F64)
    if observed is not None:
        A, y = A[observed], y[observed]
    sigma = sigma_y**2 * torch.eye(A.shape[0], dtype=F64) + sigma_dec**2 * A @ A.T
    likelihood = torch.distributions.MultivariateNormal(torch.zeros(A.shape[0], dtype=F64), covariance_matrix=sigma)
    axis = torch.linspace(-half_width, half_width, n, dtype=F64)
    grid = torch.cartesian_prod(axis, axis)
    cell = float(axis[1] - axis[0]) ** 2
    decoded = prior.decode(grid.reshape(-1, 2, 1, 1)).reshape(grid.shape[0], -1).to(F64)
    log_lik = likelihood.log_prob(y - decoded @ A.T)
    out = {"weights": [], "means": [], "covariances": [], "log_mass": []}
    for k in range(params["mixture.weights"].shape[0]):
        component = torch.distributions.MultivariateNormal(
            params["mixture.means"][k], covariance_matrix=params["mixture.covariances"][k]
        )
        log_joint = math.log(params["mixture.weights"][k]) + component.log_prob(grid) + log_lik
        peak = log_joint.max()
        density = (log_joint - peak).exp()
        mass = density.sum()
        mean = (density[:, None] * grid).sum(0) / mass
        centred = grid - mean
        out["means"].append(mean)
        out["covariances"].append((density[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) / mass)
        out["log_mass"].append(peak + mass.log() + math.log(cell))
    log_mass = torch.stack(out["log_mass"])
    return {
        "weights": torch.softmax(log_mass, 0),
        "means": torch.stack(out["means"]),
        "covariances": torch.stack(out["covariances"]),
        "log_evidence": torch.logsumexp(log_mass, 0),
    }


def assert_matches_quadrature(posterior, reference):
    torch.testing.assert_close(posterior.weights, reference["weights"], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(posterior.means, reference["means"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(posterior.covariances, reference["covariances"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(posterior.log_evidence, reference["log_evidence"], rtol=1e-8, atol=1e-6)


def observe(prior, operator, z, sigma_y, seed):
    x = prior.decode(z)
    y = operator.forward(x)
    return y + sigma_y * torch.randn(y.shape, generator=make_generator(seed), dtype=y.dtype)


@pytest.mark.parametrize("sigma_dec", [0.0, 0.4])
def test_posterior_dense_operator_matches_quadrature(sigma_dec):
    """A Aᵀ not diagonal: σ_dec > 0 takes the dense-Σ_y path, σ_dec = 0 the isotropic one."""
    prior = toy_prior()
    operator = DenseMatrix(8, 0.15 * torch.randn(3, 192, generator=make_generator(7), dtype=F64))
    y = observe(prior, operator, torch.tensor([[[[0.5]], [[0.2]]]], dtype=F64), sigma_y=0.3, seed=8)
    posterior = prior.posterior(y, operator, sigma_y=0.3, sigma_dec=sigma_dec)
    reference = quadrature_posterior(prior, operator, y, 0.3, sigma_dec)
    assert_matches_quadrature(posterior, reference)
    # the observation must make the posterior differ from the prior, else the test proves little
    assert (posterior.weights - prior.parameters64()["mixture.weights"]).abs().max() > 0.05


def test_posterior_diagonal_operator_with_masked_entries_matches_quadrature():
    """Non-binary diagonal A with structural zeros, σ_dec > 0: the diagonal-Σ_y path and the masking."""
    prior = toy_prior()
    weight = 0.2 + torch.rand(3, 8, 8, generator=make_generator(9), dtype=F64)
    weight[:, 2:6, 3:7] = 0.0
    operator = MaskedImage(weight)
    y = observe(prior, operator, torch.tensor([[[[-1.0]], [[0.8]]]], dtype=F64), sigma_y=2.0, seed=10)
    y = y + 5.0 * (weight == 0)  # garbage in the hole must be ignored
    posterior = prior.posterior(y, operator, sigma_y=2.0, sigma_dec=1.0)
    assert posterior.measurement_dim == int((weight != 0).sum())
    reference = quadrature_posterior(prior, operator, y, 2.0, 1.0, observed=(weight != 0).reshape(-1))
    assert_matches_quadrature(posterior, reference)


def test_posterior_summaries_and_sampler():
    prior = toy_prior()
    operator = DenseMatrix(8, 0.15 * torch.randn(2, 192, generator=make_generator(12), dtype=F64))
    y = observe(prior, operator, torch.tensor([[[[0.0]], [[0.0]]]], dtype=F64), sigma_y=0.5, seed=13)
    posterior = prior.posterior(y, operator, sigma_y=0.5)
    assert posterior.weights.min() > 0.05  # genuinely multi-modal, so the mixture moments matter
    n = 40000
    samples = posterior.sample(n, make_generator(14)).reshape(n, 2)
    assert ((samples.mean(0) - posterior.mean_latent).abs() < 4 * posterior.std_latent / math.sqrt(n)).all()
    torch.testing.assert_close(torch.cov(samples.T), posterior.cov_latent, rtol=0.04, atol=0.02)
    torch.testing.assert_close(posterior.std_latent**2, posterior.cov_latent.diagonal())
    images = posterior.sample_images(n, make_generator(14)).reshape(n, -1)
    torch.testing.assert_close(images.mean(0), posterior.mean_image.reshape(-1), rtol=0, atol=0.02)
    torch.testing.assert_close(images.std(0), posterior.std_image.reshape(-1), rtol=0.03, atol=1e-3)
    # log_prob integrates to one on the grid and agrees with a MixtureSameFamily of the same parameters
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=posterior.weights),
        torch.distributions.MultivariateNormal(posterior.means, covariance_matrix=posterior.covariances),
    )
    torch.testing.assert_close(posterior.log_prob(samples[:50]), reference.log_prob(samples[:50].to(F64)))


# -- exact posterior on the fitted 256-D prior ------------------------------------------------------------
def box_operators(size=64):
    """Half-face box of docs/operators.md (rows 150–449, cols 250–449 at 512) scaled to ``size``."""
    mask = torch.ones(3, size, size, dtype=F64)
    r0, r1, c0, c1 = (round(v * size / 512) for v in (150, 450, 250, 450))
    mask[:, r0:r1, c0:c1] = 0
    keep = torch.nonzero(mask.reshape(-1) != 0)[:, 0]
    return MaskedImage(mask), KeepIndex(size, keep), mask


def test_box_inpainting_posterior_ignores_the_hole_and_reproduces_observed_pixels(fitted):
    masked, kept, mask = box_operators()
    sigma_y = 1e-3
    z_true = fitted.sample_prior(1, make_generator(20)).to(F64)
    x_true = fitted.decode(z_true).to(F64)
    noise = sigma_y * torch.randn(x_true.shape, generator=make_generator(21), dtype=F64)
    y_masked = masked.forward(x_true) + noise  # the hole holds noise only, as add_measurement_noise gives
    y_kept = kept.forward(x_true + noise)
    post_masked = fitted.posterior(y_masked, masked, sigma_y)
    post_kept = fitted.posterior(y_kept, kept, sigma_y)
    assert post_masked.measurement_dim == post_kept.measurement_dim == int(mask.sum())
    torch.testing.assert_close(post_masked.means, post_kept.means, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(post_masked.weights, post_kept.weights, rtol=1e-9, atol=1e-12)
    # the hole's noise must not enter the evidence either (its rows of M are zero, so only this sees it)
    torch.testing.assert_close(post_masked.log_evidence, post_kept.log_evidence, rtol=1e-9, atol=1e-4)
    mean = post_masked.mean_image
    observed_error = ((mean - x_true) * mask).abs().max()
    assert observed_error < 5 * sigma_y, observed_error
    # 9k observed pixels pin the 256-D latent down: the hole is recovered too (well-specified ground truth)
    mse = float(((mean - x_true) ** 2).mean())
    assert 10 * math.log10(4.0 / mse) > 50
    assert float(post_masked.std_image.max()) < 0.05


def test_library_box_inpainting_matches_keep_index(fitted):
    """dwgf.operators' masked-image box inpainting gives the same posterior as the hole-free measurement."""
    operator = make_operator("box_inpainting", 64)
    mask = operator.forward(torch.ones(1, 3, 64, 64, dtype=F64))[0]
    keep = torch.nonzero(mask.reshape(-1) != 0)[:, 0]
    z = fitted.sample_prior(1, make_generator(40)).to(F64)
    x = fitted.decode(z).to(F64) + 1e-3 * torch.randn(1, 3, 64, 64, generator=make_generator(41), dtype=F64)
    y = operator.forward(x) + 1e-3 * (mask == 0)  # whatever sits in the hole is not a measurement
    for sigma_dec in (0.0, 0.01):
        post = fitted.posterior(y, operator, 1e-3, sigma_dec)
        reference = fitted.posterior(KeepIndex(64, keep).forward(x), KeepIndex(64, keep), 1e-3, sigma_dec)
        torch.testing.assert_close(post.means, reference.means, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(post.weights, reference.weights, rtol=1e-9, atol=1e-12)


def test_sr_avgpool_posterior_matches_covariance_form(fitted):
    """SR×8 with decoder noise (A Aᵀ = I/64, diagonal path) against the d_y-dimensional covariance form.

    Reference per component: S_k = Σ_y + M Σ_k Mᵀ (192 × 192, dense), m_k = μ_k + Σ_k Mᵀ S_k⁻¹ (r − M μ_k),
    C_k = Σ_k − Σ_k Mᵀ S_k⁻¹ M Σ_k, w_k ∝ π_k N(r; M μ_k, S_k), with M from torch's avg_pool2d.
    """
    sigma_y, sigma_dec = 0.02, 0.05
    operator = make_operator("sr_avgpool", 64, factor=8)
    z = fitted.sample_prior(1, make_generator(42)).to(F64)
    x = fitted.decode(z).to(F64)
    y = torch.nn.functional.avg_pool2d(x, 8) + sigma_y * torch.randn(
        1, 3, 8, 8, generator=make_generator(43), dtype=F64
    )
    post = fitted.posterior(y, operator, sigma_y, sigma_dec)

    params = fitted.parameters64()
    columns = (params["decoder.W"] * params["decoder.s"]).T.reshape(256, 3, 64, 64)
    M = torch.nn.functional.avg_pool2d(columns, 8).reshape(256, -1).T
    r = (y - torch.nn.functional.avg_pool2d(params["decoder.b"].reshape(1, 3, 64, 64), 8)).reshape(-1)
    noise = (sigma_y**2 + sigma_dec**2 / 64) * torch.eye(192, dtype=F64)
    log_w, means, covs = [], [], []
    for k in range(fitted.n_components):
        mu, sigma = params["mixture.means"][k], params["mixture.covariances"][k]
        S = noise + M @ sigma @ M.T
        gain = sigma @ M.T @ torch.linalg.inv(S)
        means.append(mu + gain @ (r - M @ mu))
        covs.append(sigma - gain @ M @ sigma)
        normal = torch.distributions.MultivariateNormal(M @ mu, covariance_matrix=S)
        log_w.append(math.log(params["mixture.weights"][k]) + normal.log_prob(r))
    log_w = torch.stack(log_w)
    torch.testing.assert_close(post.weights, torch.softmax(log_w, 0), rtol=1e-6, atol=1e-9)
    top = int(post.weights.argmax())
    torch.testing.assert_close(post.means[top], means[top], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(post.covariances[top], covs[top], rtol=1e-5, atol=1e-7)
    evidence = torch.logsumexp(log_w, 0)
    torch.testing.assert_close(post.log_evidence, evidence, rtol=1e-9, atol=1e-5)


def test_posterior_rejects_what_it_cannot_do_exactly(fitted):
    masked, _, _ = box_operators()
    y = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="sigma_y"):
        fitted.posterior(y, masked, sigma_y=0.0)
    with pytest.raises(ValueError, match="image_size"):
        toy_prior().posterior(y, masked, sigma_y=0.1)
    with pytest.raises(ValueError, match="shape"):
        fitted.posterior(torch.zeros(1, 3, 32, 32), masked, sigma_y=0.1)

    class Shift(MaskedImage):
        """x + roll(x): A Aᵀ is not diagonal and d_y = 12288 > 4096."""

        def forward(self, x):
            return x + x.roll(1, dims=-1)

        def adjoint(self, y):
            return y + y.roll(-1, dims=-1)

        @property
        def measurement_dim(self):
            return 3 * 64 * 64

    shift = Shift(torch.ones(3, 64, 64))
    with pytest.raises(ValueError, match="not diagonal"):
        fitted.posterior(y, shift, sigma_y=0.1, sigma_dec=0.1)
    assert fitted.posterior(y, shift, sigma_y=0.1).means.shape == (8, 256)


# -- fitting, files, specs ----------------------------------------------------------------------------------
def test_fit_is_deterministic_and_save_load_round_trips(tmp_path):
    spec = {"n_per_image": 40, "n_components": 3, "n_test": 4, "seed": 1}
    first = GaussianMixturePrior.from_spec(spec)
    second = load_prior({"kind": "gaussian_mixture", **spec})
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    for name in (CONFIG_FILE, TENSORS_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    bundled = first.config["bundled"]
    assert len(bundled["test_ids"]) == 4 and first.config["fitted_on"]["n_images"] == 8 * 40 - 4

    loaded = load_prior(tmp_path / "a")
    assert isinstance(loaded, GaussianMixturePrior) and loaded.config == first.config
    for key, value in first.parameters64().items():
        assert torch.equal(loaded.parameters64()[key], value), key
    z = first.sample_prior(2, make_generator(30))
    assert torch.equal(loaded.eps(z, 400), first.eps(z, 400))
    assert loaded.describe() == first.describe()
    as64 = load_prior({"kind": "gaussian_mixture", "path": str(tmp_path / "a")}, dtype="float64")
    assert as64.dtype == F64 and as64.decode(z).dtype == F64


def test_load_refuses_inconsistent_or_missing_files(tmp_path):
    prior = toy_prior()
    prior.save(tmp_path)
    reloaded = GaussianMixturePrior.load(tmp_path, dtype=F64)
    z = torch.randn(2, 2, 1, 1, generator=make_generator(31), dtype=F64)
    assert torch.equal(reloaded.decode(z), prior.decode(z))
    data = bytearray((tmp_path / TENSORS_FILE).read_bytes())
    data[-1] ^= 1
    (tmp_path / TENSORS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        GaussianMixturePrior.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="fit-prior"):
        GaussianMixturePrior.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown"):
        GaussianMixturePrior.from_spec({"n_crops": 3})


def test_constructor_validates_parameters():
    params = toy_prior().parameters64()
    args = [params[k] for k in ("decoder.W", "decoder.s", "decoder.b", "mixture.weights", "mixture.means")]
    covs = params["mixture.covariances"]
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixturePrior(
            *args, covs * torch.tensor([1.0, -1.0, 1.0], dtype=F64)[:, None, None], image_size=8, latent_channels=2
        )
    with pytest.raises(ValueError, match="orthonormal"):
        GaussianMixturePrior(2 * args[0], *args[1:], covs, image_size=8, latent_channels=2)
    with pytest.raises(ValueError, match="shape"):
        GaussianMixturePrior(*args, covs, image_size=8, latent_channels=4)
