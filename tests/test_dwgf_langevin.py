"""DWGF's Langevin variant (``langevin=True``, :func:`dwgf.solvers.dwgf.langevin_solve`, docs/findings.md "The
finding"): its stationary law on a small Gaussian problem is the exact posterior, it is deterministic and batch
invariant like the other flags, and its hyper-parameters are validated."""

from __future__ import annotations

import math

import pytest
import torch

from dwgf.operators import add_measurement_noise, make_operator
from dwgf.priors.gaussian_mixture import GaussianMixturePrior
from dwgf.seeding import make_generator
from dwgf.solvers.base import noise_level
from dwgf.solvers.dwgf import langevin_solve, resolve_hyper, solve

SIGMA_Y = 0.03
LANGEVIN = {"likelihood_std": SIGMA_Y, "kappa": 0.0, "sigma_dec": 0.0, "langevin": True}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def gaussian_prior(covariance: torch.Tensor) -> GaussianMixturePrior:
    """A d = 2 test bed (8 px, 2 latent channels): one Gaussian component N(mu, covariance), fixed decoder."""
    directions, _ = torch.linalg.qr(torch.randn(3 * 8 * 8, 2, generator=make_generator(0), dtype=torch.float64))
    return GaussianMixturePrior(
        directions,
        torch.tensor([1.0, 0.6], dtype=torch.float64),
        torch.zeros(3 * 8 * 8, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        torch.tensor([[0.3, -0.2]], dtype=torch.float64),
        covariance[None],
        image_size=8,
        latent_channels=2,
        dtype=torch.float64,
    )


COVARIANCE = torch.tensor([[0.8, 0.3], [0.3, 0.5]], dtype=torch.float64)


@pytest.fixture(scope="module")
def gaussian_problem():
    prior = gaussian_prior(COVARIANCE)
    operator = make_operator("sr_avgpool", 8, factor=4)
    x = prior.decode(torch.tensor([[0.9, -0.7]], dtype=torch.float64).reshape(1, 2, 1, 1))
    y = add_measurement_noise(operator(x), SIGMA_Y, make_generator(3))
    return prior, operator, y


@pytest.mark.parametrize(
    "hyper",
    [{"lr": 0.05}, {"lr": 0.2, "langevin_friction": 0.5}],  # with the prior bound c / s_t^2 at c = 0.01 (3.8 > the
    # prior precision here), see the docstring
    ids=["overdamped", "kinetic"],
)
@pytest.mark.slow  # ~25 s each on one idle core
def test_stationary_law_is_the_exact_posterior(gaussian_problem, hyper):
    """At a fixed t the target is p(y | z) N(z; mu, S + s_t^2 I) (the prior noised to t and rescaled): 4000
    particles after 300 steps at t = 2 match that exact posterior's mean to 0.08 std and its covariance to 12 %
    (sampling error ~ 0.022 std and ~ 3 %; the rest is the O(h) discretisation bias). The prior-curvature bound
    is c / s_t^2 with c = 0.01 (3.8, above this prior's precision; at c = 1 the prior-decided direction would
    move at rate h s_t^2 and not mix in 200 steps). A missing sqrt(2) in the
    noise, a wrong preconditioner scale or the posterior's likelihood weight off by 2x each move the variance by
    far more."""
    prior, operator, y = gaussian_problem
    t = 2
    sqrt_abar, sqrt_one_minus_abar = noise_level(prior.alphas_cumprod, t)
    inflated = gaussian_prior(COVARIANCE + (sqrt_one_minus_abar / sqrt_abar) ** 2 * torch.eye(2, dtype=torch.float64))
    exact = inflated.posterior(y, operator, SIGMA_Y, 0.0)
    hp = resolve_hyper({**LANGEVIN, "langevin_prior_precision": 0.01, **hyper})
    result = langevin_solve(prior, operator, y, 2000, [make_generator(7)], hp, (2, 1, 1), [t] * 200, 200, False, True)
    assert result.ok
    z = result.latents.reshape(2000, 2).to(torch.float64)
    std = exact.cov_latent.diagonal().sqrt()
    assert ((z.mean(0) - exact.mean_latent).abs() / std).max() < 0.08
    covariance = torch.cov(z.T)
    assert ((covariance - exact.cov_latent).abs() / std[:, None] / std[None, :]).max() < 0.12
    # the check has teeth: the prior alone (no data) is far from this posterior
    assert ((COVARIANCE.diagonal().sqrt() - std).abs() / std).max() > 0.3


@pytest.mark.slow  # ~20 s on one idle core
def test_annealed_flow_ends_at_the_posterior(gaussian_problem):
    """The full flow (t = 999 -> 2, 300 steps, 1000 particles) ends within 0.15 std of the exact posterior mean
    and within 15 % of its standard deviations (the last steps' prior is still slightly inflated), with the prior
    bound at c = 0.01 as above (at c = 1 the prior-decided directions freeze while the prior is still inflated:
    measured ~ +20 % in the std)."""
    prior, operator, y = gaussian_problem
    exact = prior.posterior(y, operator, SIGMA_Y, 0.0)
    result = solve(prior, operator, y, 1000, make_generator(8), n_steps=300, progress=False, lr=0.2,
                   langevin_friction=0.5, langevin_prior_precision=0.01, **LANGEVIN)  # fmt: skip
    z = result.latents.reshape(1000, 2).to(torch.float64)
    std = exact.cov_latent.diagonal().sqrt()
    assert ((z.mean(0) - exact.mean_latent).abs() / std).max() < 0.15
    assert ((z.std(0) - std).abs() / std).max() < 0.15


@pytest.mark.parametrize("hyper", [{"lr": 0.1}, {"lr": 0.3, "langevin_friction": 0.2, "langevin_probes": 3}])
def test_langevin_is_deterministic_and_batch_invariant(gaussian_problem, hyper):
    prior, operator, y = gaussian_problem
    ys = torch.cat([y, add_measurement_noise(y, SIGMA_Y, make_generator(9))])
    batched = solve(prior, operator, ys, 3, [make_generator(20 + k) for k in range(2)], n_steps=8, progress=False,
                    trace=True, **LANGEVIN, **hyper)  # fmt: skip
    for k in range(2):
        solo = solve(prior, operator, ys[k : k + 1], 3, make_generator(20 + k), n_steps=8, progress=False,
                     trace=True, **LANGEVIN, **hyper)  # fmt: skip
        again = solve(prior, operator, ys[k : k + 1], 3, make_generator(20 + k), n_steps=8, progress=False,
                      trace=True, **LANGEVIN, **hyper)  # fmt: skip
        assert torch.equal(batched[k].latents, solo.latents) and torch.equal(solo.latents, again.latents), k
        assert torch.equal(batched[k].particles, solo.particles)
        assert solo.hyper["langevin"] is True and len(solo.trace["likelihood"]) == 8
        assert math.isfinite(float(solo.trace["prior_grad_norm"][-1]))


def test_langevin_hyper_validation():
    with pytest.raises(ValueError, match="likelihood_std"):
        resolve_hyper({"langevin": True, "kappa": 0.0, "sigma_dec": 0.0})
    for clash in ({"kappa": 0.1}, {"sigma_dec": 0.01}, {"kde_weight": 2.0}, {"antithetic": True}):
        with pytest.raises(ValueError, match=next(iter(clash))):
            resolve_hyper({**LANGEVIN, **clash})
    for bad in (
        {"langevin_friction": 0.0},
        {"langevin_prior_precision": -1.0},
        {"langevin_probes": 0},
        {"langevin_step_cap": 0.0},
        {"langevin_step_cap": 1.5},
        {"langevin_power_iterations": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            resolve_hyper({**LANGEVIN, **bad})
    assert resolve_hyper(LANGEVIN)["langevin_friction"] is None  # overdamped unless a friction is given


def test_preconditioned_curvature_is_the_exact_largest_eigenvalue(gaussian_problem):
    """The power iteration of the step cap (finite-difference A J d, one backward per iteration) finds the largest
    eigenvalue of G^1/2 (J^T A^T A J / sigma^2 + b I) G^1/2 built from the explicit matrices (linear decoder)."""
    from dwgf.solvers.dwgf import preconditioned_curvature

    prior, operator, _ = gaussian_problem
    latents = torch.randn(3, 2, 1, 1, generator=make_generator(4), dtype=torch.float64).requires_grad_(True)
    a_x = operator(prior.decode(latents))
    basis = torch.eye(2, dtype=torch.float64).reshape(2, 2, 1, 1)
    jacobian = (operator(prior.decode(basis)) - operator(prior.decode(0 * basis))).reshape(2, -1).T  # A J
    hessian = jacobian.T @ jacobian / SIGMA_Y**2
    precondition = torch.tensor([0.3, 2.0], dtype=torch.float64).reshape(1, 2, 1, 1).expand(3, 2, 1, 1)
    bound = 5.0
    root = precondition[0].reshape(2).sqrt()
    exact = torch.linalg.eigvalsh(root[:, None] * (hessian + bound * torch.eye(2, dtype=torch.float64)) * root)[-1]
    start = torch.randn(3, 2, 1, 1, generator=make_generator(5), dtype=torch.float64)
    found = preconditioned_curvature(lambda z: operator(prior.decode(z)), a_x, latents, precondition, SIGMA_Y,
                                     bound, start, 1, 50)  # fmt: skip
    assert found.shape == (1,) and abs(float(found[0]) / float(exact) - 1) < 1e-6, (found, exact)
    # with one iteration from a poor start the estimate is below lambda_max (the check has teeth)
    poor = torch.tensor([1.0, 0.0], dtype=torch.float64).reshape(1, 2, 1, 1).expand(3, 2, 1, 1)
    early = preconditioned_curvature(lambda z: operator(prior.decode(z)), a_x, latents, precondition, SIGMA_Y,
                                     bound, poor, 1, 1)  # fmt: skip
    assert float(early[0]) < 0.99 * float(exact)


def test_step_cap_keeps_a_too_large_step_stable(gaussian_problem):
    """A kinetic step beyond the stability limit h^2 lambda_max < 4 blows up; langevin_step_cap bounds h per image
    at a fraction of 2 / sqrt(lambda_max) and the same flow stays finite near the posterior mean."""
    prior, operator, y = gaussian_problem
    exact = prior.posterior(y, operator, SIGMA_Y, 0.0)
    settings = {**LANGEVIN, "lr": 20.0, "langevin_friction": 0.1, "langevin_prior_precision": 0.01}
    wild = solve(prior, operator, y, 8, make_generator(11), n_steps=150, progress=False, **settings)
    assert not wild.ok or not torch.isfinite(wild.latents).all() or wild.latents.abs().max() > 1e6
    capped = solve(prior, operator, y, 8, make_generator(11), n_steps=150, progress=False, langevin_step_cap=0.5,
                   **settings)  # fmt: skip
    assert capped.ok and capped.hyper["langevin_step_cap"] == 0.5
    z = capped.latents.reshape(8, 2).to(torch.float64)
    std = exact.cov_latent.diagonal().sqrt()
    assert ((z.mean(0) - exact.mean_latent).abs() / std).max() < 3.0


def test_probe_weighting_counts_the_first_steps_probes(gaussian_problem):
    """``langevin_probe_weighting: count`` changes the flow only through the first step's P probes (P = 1 is the
    Adam bias correction bit for bit; P = 8 is not), see :func:`dwgf.solvers.dwgf.gauss_newton_moment`."""
    prior, operator, y = gaussian_problem
    runs = {}
    for probes in (1, 8):
        for weighting in ("step", "count"):
            runs[probes, weighting] = solve(prior, operator, y, 3, make_generator(30), n_steps=10, progress=False,
                                            lr=0.2, langevin_friction=0.5, langevin_probes=probes,
                                            langevin_probe_weighting=weighting, **LANGEVIN).latents  # fmt: skip
    assert torch.equal(runs[1, "step"], runs[1, "count"])
    assert not torch.equal(runs[8, "step"], runs[8, "count"])
