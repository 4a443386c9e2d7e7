"""DWGF solver (dwgf/solvers/dwgf.py): official semantics, accuracy on the exact-posterior test bed, contracts.

Accuracy thresholds come from measurements on this test bed (100 crops per bundled image, 4 held out, 8-component
GMM, whitened 256-d latent, 64 px, sigma_y = 0.001, N = 4, official lr 1.0 and gamma 0.15, 30 strided steps),
PSNR on the [0, 1] scale against the exact posterior mean, held-out crops 0 and 1, solver seeds 100 + i
(seeds 200 + i and 300 + i in brackets):

* half-face box: DWGF 27.0 / 27.7 dB (24.2-29.1 over the other seeds), zero-filled y 17.7 / 18.9 dB, prior mean
  7.9 / 15.0 dB.
* SR x8 (block average): the nearest-neighbour pseudo-inverse beats DWGF on every image and seed (pinv 28.7 /
  23.2 dB, DWGF 26.8 / 22.6 dB, 22.3-27.7 over the other seeds; mean gap 1.25 [1.8, 1.6] dB); both are well above
  the prior mean (7.9 / 14.6 dB).
* gamma = 0 vs 0.15 on SR x8, crop 0: mean log p_0(z) of the final particles -634 vs -325: without the prior term
  the 64 latent directions that SR x8 does not observe keep their random start, off the prior.
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from dwgf.data.bundled import load_crops
from dwgf.operators import add_measurement_noise, make_operator
from dwgf.priors.base import scaled_linear_alphas_cumprod
from dwgf.priors.gaussian_mixture import GaussianMixturePrior
from dwgf.seeding import make_generator
from dwgf.solvers import get_solver, solver_defaults
from dwgf.solvers.base import kde_noise_estimate, make_timesteps, mean_data_fit, noise_level
from dwgf.solvers.dwgf import DEFAULTS, TRACE_KEYS, solve, term_normalisers

SIGMA_Y = 0.001
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def testbed():
    """(prior, held-out crops): the measured test-bed set-up, fitted once (~10 s on one core)."""
    prior, _train, test_ids = GaussianMixturePrior.fit_bundled(n_per_image=100, image_size=SIZE, n_test=4, seed=0)
    return prior, load_crops(test_ids)


@pytest.fixture(scope="module")
def prior64(testbed):
    """The same prior computing in float64 (a copy: the module fixture stays float32)."""
    return copy.copy(testbed[0]).to(dtype=torch.float64)


def observe(operator, x, key):
    y = add_measurement_noise(operator(x), SIGMA_Y, make_generator(10 + key))
    return operator.zero_unmeasured(y)


def psnr(a, b):
    """PSNR in dB of images in [-1, 1], on the [0, 1] scale: 10 log10(1 / mse((a+1)/2, (b+1)/2))."""
    return float(10 * torch.log10(4.0 / ((a.double() - b.double()) ** 2).mean()))


def prior_mean_image(prior):
    master = prior.parameters64()
    mean_latent = master["mixture.weights"] @ master["mixture.means"]
    image = (master["decoder.W"] * master["decoder.s"]) @ mean_latent + master["decoder.b"]
    return image.reshape(1, 3, SIZE, SIZE)


# -- an independent re-implementation of the official loop (autograd KDE, surrogate loss, loss.backward) ----------


def official_reference(
    prior,
    operator,
    y,
    n,
    generator,
    n_steps,
    *,
    gamma=0.15,
    lr=1.0,
    kappa=0.1,
    sigma_dec=0.01,
    decoder_noise_in_likelihood=True,
    y_clean=None,
    sigma_y=None,
):
    """docs/method.md#dwgf written the way the official code computes it.

    Returns (latents, history of D(z), lik per step).

    Random draws follow the order documented in ``solve``: init, [per-particle noise], then per step eps, xi, encoder.
    """
    dtype = torch.float64
    shape = (n, *prior.latent_shape(operator.image_size))
    z = torch.randn(shape, generator=generator, dtype=dtype).requires_grad_(True)
    if y_clean is not None:
        noise = torch.randn((n, *operator.y_shape), generator=generator, dtype=dtype)
        y = operator.zero_unmeasured(y_clean.to(dtype) + sigma_y * noise)
    y_flat = y.to(dtype).reshape(y.shape[0], -1)
    optimiser = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    history, likelihoods = [], []
    abar_all = prior.alphas_cumprod
    keep = operator(torch.ones((1, *operator.x_shape), dtype=dtype)).reshape(-1) != 0
    for t in make_timesteps(n_steps):
        abar = float(abar_all[t])
        eps = torch.randn(shape, generator=generator, dtype=dtype)
        z_t = math.sqrt(abar) * z.detach() + math.sqrt(1 - abar) * eps
        with torch.no_grad():
            score_theta = -prior.eps(z_t, t).to(dtype) / math.sqrt(1 - abar)
        u = z_t.clone().requires_grad_(True)
        centres = math.sqrt(abar) * z.detach()
        total = 0.0
        for i in range(n):
            rows = [
                torch.distributions.Normal(centres[j].flatten(), math.sqrt(1 - abar)).log_prob(u[i].flatten()).sum()
                for j in range(n)
            ]
            total = total + torch.logsumexp(torch.stack(rows), 0) - math.log(n)
        (score_kde,) = torch.autograd.grad(total, u)
        snr_inv = math.sqrt((1 - abar) / abar)
        loss_prior = gamma * snr_inv * math.sqrt(1 - abar) * ((score_kde * z).mean() - (score_theta * z).mean())
        x = prior.decode(z).to(dtype)
        xi = sigma_dec * torch.randn(x.shape, generator=generator, dtype=dtype)
        a_x = operator(x + xi) if decoder_noise_in_likelihood else operator(x)
        # The official y is the flattened vector of real measurements: mean over exactly those entries.
        residual = (y_flat - a_x.reshape(n, -1))[:, keep]
        loss_lik = (residual**2).mean() / 2
        with torch.no_grad():
            c = -(prior.decode(prior.encode(x + xi, generator=generator, sample=True)).to(dtype) - x)
        loss = loss_lik + loss_prior + kappa * (x * c).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(x.detach())
        likelihoods.append(float(loss_lik.detach()))
    return z.detach(), history, likelihoods


# -- shared math -----------------------------------------------------------------------------------------------


def test_kde_noise_estimate_matches_autograd_of_kde_log_density():
    g = make_generator(1)
    # Particles close together relative to the bandwidth b, so the responsibilities mix (interacting regime).
    z0 = torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        5, 4, 2, 2, generator=g, dtype=torch.float64
    )
    a, b = 0.8, 0.6
    z_t = a * z0 + b * torch.randn(5, 4, 2, 2, generator=g, dtype=torch.float64)
    u = z_t.clone().requires_grad_(True)
    log_density = sum(
        torch.logsumexp(
            torch.stack([torch.distributions.Normal(a * z0[j], b).log_prob(u[i]).sum() for j in range(5)]), 0
        )
        for i in range(5)
    )
    (score,) = torch.autograd.grad(log_density, u)
    eps_tilde, pi = kde_noise_estimate(z_t, z0, a, b)
    torch.testing.assert_close(eps_tilde, -b * score, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pi.sum(1), torch.ones(5, dtype=torch.float64))
    assert float((1 - pi.diagonal()).sum()) > 0.5  # the cross terms matter, not just the self-term


def test_kde_noise_estimate_is_safe_for_far_apart_particles():
    # Distances of order 1e4: exp(-d^2/2) underflows without the log-sum-exp shift.
    z0 = torch.randn(4, 256, generator=make_generator(2), dtype=torch.float32) * 1e3
    eps = torch.randn(4, 256, generator=make_generator(3), dtype=torch.float32)
    abar = 0.5
    z_t = math.sqrt(abar) * z0 + math.sqrt(1 - abar) * eps
    eps_tilde, pi = kde_noise_estimate(z_t, z0, math.sqrt(abar), math.sqrt(1 - abar))
    torch.testing.assert_close(pi, torch.eye(4))
    torch.testing.assert_close(eps_tilde, eps, rtol=1e-3, atol=1e-3)


def test_mean_data_fit_is_the_official_mean_over_real_measurements():
    A = make_operator("box_inpainting", SIZE)
    g = make_generator(4)
    x = torch.randn(3, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    y = observe(A, torch.randn(1, 3, SIZE, SIZE, generator=g, dtype=torch.float64), 0)
    keep = A.keep_mask().expand(3, 3, SIZE, SIZE)
    official = ((y.expand(3, -1, -1, -1)[keep] - x[keep]) ** 2).mean() / 2  # mean over the flattened kept pixels
    torch.testing.assert_close(mean_data_fit(y, A(x), A.measurement_dim), official)
    assert term_normalisers(4, 256, 3 * SIZE * SIZE, A.measurement_dim)["likelihood"] == 4 * keep[0].sum()


# -- official semantics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [{}, {"decoder_noise_in_likelihood": False}, {"per_particle_noise": True}, {"gamma": 0.0, "kappa": 0.0}],
    ids=["official", "first_commit_likelihood", "per_particle_noise", "likelihood_only"],
)
def test_matches_independent_official_loop(testbed, prior64, flags):
    _, crops = testbed
    A = make_operator("box_inpainting", SIZE)
    x = crops[:1].double()
    y = observe(A, x, 0)
    hyper = dict(flags)
    reference_kwargs = {k: v for k, v in flags.items() if k != "per_particle_noise"}
    if flags.get("per_particle_noise"):
        hyper.update(y_clean=A(x), sigma_y=0.05)
        reference_kwargs.update(y_clean=A(x), sigma_y=0.05)
    n, steps = 3, 4
    result = solve(prior64, A, y, n, make_generator(7), n_steps=steps, progress=False, trace=True, **hyper)
    latents, history, likelihoods = official_reference(prior64, A, y, n, make_generator(7), steps, **reference_kwargs)
    assert result.ok and result.n_steps == steps
    torch.testing.assert_close(result.latents, latents, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(result.extras["pre_update_particles"], history[-1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(result.particles, prior64.decode(latents), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.tensor(result.trace["likelihood"]), torch.tensor(likelihoods), rtol=1e-9, atol=0)
    assert not torch.allclose(history[-1], result.particles)  # the final update moved the particles


def test_decode_before_last_step_swaps_pre_and_post_update(prior64, testbed):
    A = make_operator("sr_avgpool", SIZE, factor=8)
    y = observe(A, testbed[1][:1].double(), 1)
    after = solve(prior64, A, y, 2, make_generator(3), n_steps=3, progress=False)
    before = solve(prior64, A, y, 2, make_generator(3), n_steps=3, progress=False, decode_before_last_step=True)
    assert torch.equal(before.particles, after.extras["pre_update_particles"])
    assert torch.equal(before.extras["post_update_particles"], after.particles)
    assert torch.equal(before.latents, after.latents)
    assert not torch.equal(before.particles, after.particles)


def test_registry_and_defaults():
    assert get_solver("dwgf") is solve
    defaults = solver_defaults("dwgf")
    assert defaults == DEFAULTS and defaults is not DEFAULTS
    assert (defaults["gamma"], defaults["lr"], defaults["kappa"], defaults["sigma_dec"]) == (0.15, 1.0, 0.1, 0.01)
    assert defaults["per_particle_noise"] is False and defaults["decode_before_last_step"] is False
    assert defaults["decoder_noise_in_likelihood"] is True and defaults["trace"] is False


# -- accuracy on the exact-posterior test bed -----------------------------------------------------------------


def test_box_inpainting_closer_to_exact_posterior_mean_than_baselines(testbed):
    prior, crops = testbed
    A = make_operator("box_inpainting", SIZE)
    prior_mean = prior_mean_image(prior)
    for i in range(2):
        y = observe(A, crops[i : i + 1], i)
        exact = prior.posterior(y, A, SIGMA_Y, DEFAULTS["sigma_dec"]).mean_image
        result = solve(prior, A, y, 4, make_generator(100 + i), n_steps=30, progress=False)
        assert result.ok
        dwgf_db = psnr(result.particles.mean(0, keepdim=True), exact)
        zero_fill_db = psnr(A.pseudo_inverse(y), exact)
        prior_db = psnr(prior_mean, exact)
        # measured: DWGF 27.0 / 27.7, zero-fill 17.7 / 18.9, prior mean 7.9 / 15.0 dB (lowest DWGF over 3 seeds: 24.2)
        assert dwgf_db > zero_fill_db + 4.0, (dwgf_db, zero_fill_db)
        assert dwgf_db > prior_db + 8.0, (dwgf_db, prior_db)


def test_sr8_pseudo_inverse_beats_dwgf_both_far_above_prior_mean(testbed):
    prior, crops = testbed
    A = make_operator("sr_avgpool", SIZE, factor=8)
    prior_mean = prior_mean_image(prior)
    dwgf_db, pinv_db = [], []
    for i in range(2):
        y = observe(A, crops[i : i + 1], i)
        exact = prior.posterior(y, A, SIGMA_Y, DEFAULTS["sigma_dec"]).mean_image
        result = solve(prior, A, y, 4, make_generator(100 + i), n_steps=30, progress=False)
        dwgf_db.append(psnr(result.particles.mean(0, keepdim=True), exact))
        pinv_db.append(psnr(A.pseudo_inverse(y), exact))
        assert dwgf_db[-1] > psnr(prior_mean, exact) + 5.0  # measured margins 18.9 / 8.0 dB
    # Measured honestly: on SR x8 the nearest-neighbour pseudo-inverse is closer to the exact posterior mean
    # (mean gap 1.25 dB here, 1.6-1.8 dB with other seeds), as in the prototype (docs/testbed.md, finding 3).
    gap = sum(pinv_db) / 2 - sum(dwgf_db) / 2
    assert 0.5 < gap < 4.0, (pinv_db, dwgf_db)


def test_without_prior_term_particles_drift_off_the_prior(testbed):
    prior, crops = testbed
    A = make_operator("sr_avgpool", SIZE, factor=8)
    y = observe(A, crops[:1], 0)
    log_p = {}
    for gamma in (0.0, 0.15):
        result = solve(prior, A, y, 4, make_generator(100), n_steps=30, progress=False, gamma=gamma)
        log_p[gamma] = float(prior.log_prob_clean(result.latents).mean())
    # measured: -634 (gamma = 0) vs -325 (gamma = 0.15)
    assert log_p[0.15] > log_p[0.0] + 100.0, log_p


# -- contracts ---------------------------------------------------------------------------------------------------


def test_same_seed_is_bitwise_identical_and_other_seed_differs(testbed):
    prior, crops = testbed
    A = make_operator("box_inpainting", SIZE)
    y = observe(A, crops[:1], 0)
    runs = [solve(prior, A, y, 2, make_generator(seed), n_steps=5, progress=False) for seed in (5, 5, 6)]
    assert torch.equal(runs[0].particles, runs[1].particles) and torch.equal(runs[0].latents, runs[1].latents)
    assert not torch.allclose(runs[0].latents, runs[2].latents)


def test_tiny_stable_diffusion_run_is_finite_and_weights_stay_frozen(tiny_sd_path):
    from dwgf.priors import load_prior

    prior = load_prior(tiny_sd_path)
    A = make_operator("box_inpainting", SIZE)
    y = observe(A, torch.rand(1, 3, SIZE, SIZE, generator=make_generator(0)) * 2 - 1, 0)
    result = solve(prior, A, y, 2, make_generator(0), n_steps=3, progress=False, trace=True)
    assert result.ok and result.particles.shape == (2, 3, SIZE, SIZE) and result.latents.shape == (2, 4, 8, 8)
    assert torch.isfinite(result.particles).all() and torch.isfinite(result.latents).all()
    assert all(len(result.trace[key]) == 3 for key in TRACE_KEYS)
    for module in (prior.vae, prior.unet):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())


def test_operator_prior_size_mismatch_raises(testbed):
    A = make_operator("box_inpainting", 32)
    with pytest.raises(ValueError, match="image_size"):
        solve(testbed[0], A, torch.zeros(1, *A.y_shape), 2, make_generator(0), n_steps=2, progress=False)


@pytest.mark.parametrize(
    ("hyper", "match"),
    [
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"gamma": -1.0}, "gamma"),
        ({"lr": 0.0}, "lr"),
        ({"lr": 1e39}, "lr"),  # overflows float32 inside Adam's update
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"per_particle_noise": True}, "y_clean"),
        ({"sigma_y": 0.01}, "per_particle_noise"),
    ],
)
def test_bad_hyper_raises_naming_the_key(testbed, hyper, match):
    A = make_operator("box_inpainting", SIZE)
    with pytest.raises(ValueError, match=match):
        solve(testbed[0], A, torch.zeros(1, *A.y_shape), 2, make_generator(0), n_steps=2, progress=False, **hyper)


def test_divergence_returns_status_and_step_without_raising(testbed):
    prior, crops = testbed
    A = make_operator("box_inpainting", SIZE)
    y = observe(A, crops[:1], 0)
    # Step 0 moves every latent by ~lr = 1e30; at step 1 the float32 data-fit overflows.
    result = solve(prior, A, y, 2, make_generator(0), n_steps=5, progress=False, lr=1e30)
    assert result.status == "diverged" and result.diverged_at_step == 1 and not result.ok
    assert result.n_steps == 1
    assert torch.isfinite(result.latents).all()
    assert float(result.latents.abs().max()) > 1e29


def test_trace_is_off_by_default(testbed):
    prior, crops = testbed
    A = make_operator("box_inpainting", SIZE)
    y = observe(A, crops[:1], 0)
    assert solve(prior, A, y, 2, make_generator(0), n_steps=2, progress=False).trace is None
    traced = solve(prior, A, y, 2, make_generator(0), n_steps=2, progress=False, trace=True)
    assert set(traced.trace) == set(TRACE_KEYS)
    assert all(0.0 <= w <= 1.0 for w in traced.trace["kde_self_weight"])
    assert traced.hyper["n_steps"] == 2 and traced.hyper["gamma"] == 0.15


def test_default_time_grid_is_the_official_loop():
    # solve's default n_steps=998 runs t = 999, 998, ..., 2 (docs/method.md#dwgf), starting at abar_999 = 0.00466.
    assert inspect.signature(solve).parameters["n_steps"].default == 998
    assert make_timesteps(998) == list(range(999, 1, -1))
    sqrt_abar, _ = noise_level(scaled_linear_alphas_cumprod(), 999)
    assert abs(sqrt_abar**2 - 0.00466) < 1e-5
