"""The multimodal test bed: mixture fits without singleton components, and the mode-coverage, entropy and
calibration metrics of :mod:`dwgf.metrics.testbed`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dwgf.data.bundled import bundled_crops
from dwgf.metrics import testbed
from dwgf.metrics.evaluate import calibration_rows, mixture_rows
from dwgf.metrics.schema import RowKeys, validate_frame
from dwgf.priors.gaussian_mixture import GaussianMixturePrior, _hard_counts
from dwgf.seeding import make_generator

F64 = torch.float64
KEYS = RowKeys(suite="t", task="sr32", method="dwgf", n_particles=4).for_image("x")


@pytest.fixture(scope="module")
def crops():
    images, ids = bundled_crops(100, size=64, seed=0)
    return images, ids


def test_min_component_size_removes_singleton_components(crops):
    images, ids = crops
    plain = GaussianMixturePrior.fit(images, n_components=8, seed=0, ids=ids)
    sizes = plain.config["em"]["component_sizes"]
    assert min(sizes) < 20, f"the plain EM fit should have a near-singleton component here, got sizes {sizes}"
    repaired = GaussianMixturePrior.fit(images, n_components=8, seed=0, ids=ids, min_component_size=40)
    em = repaired.config["em"]
    assert min(em["component_sizes"]) >= 40
    assert sum(em["component_sizes"]) == images.shape[0]
    assert em["min_component_size"]["initial_sizes"] == sizes
    assert repaired.n_components == len(em["weights"]) == repaired.config["n_components"]
    np.testing.assert_allclose(sum(em["weights"]), 1.0, atol=1e-9)
    # deterministic: the same call gives the same parameters
    again = GaussianMixturePrior.fit(images, n_components=8, seed=0, ids=ids, min_component_size=40)
    assert again.describe()["parameters_sha256"] == repaired.describe()["parameters_sha256"]
    with pytest.raises(ValueError, match="min_component_size"):
        GaussianMixturePrior.fit(images, n_components=8, seed=0, min_component_size=images.shape[0])


def test_hard_counts_match_predict(crops):
    from sklearn.mixture import GaussianMixture

    codes = np.random.default_rng(0).normal(size=(200, 3))
    codes[:100] += 6.0
    mixture = GaussianMixture(2, random_state=0).fit(codes)
    assert sorted(_hard_counts(mixture, codes).tolist()) == [100, 100]


def test_component_weight_entropy():
    assert testbed.component_weight_entropy(torch.tensor([1.0, 0.0, 0.0])) == 0.0
    assert testbed.component_weight_entropy(torch.full((5,), 0.2)) == pytest.approx(math.log(5))
    with pytest.raises(ValueError):
        testbed.component_weight_entropy(torch.tensor([0.5, 0.2]))


def separated_mixture():
    """Three components in d = 2, 40 std apart: the assignment recovers the true component."""
    weights = torch.tensor([0.6, 0.3, 0.1], dtype=F64)
    means = torch.tensor([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0]], dtype=F64)
    covs = torch.stack([torch.eye(2, dtype=F64) * v for v in (1.0, 0.5, 2.0)])
    chol = torch.linalg.cholesky(torch.linalg.inv(covs))
    return weights, means, covs, chol


def test_mode_coverage_counts_visited_components():
    weights, means, _, chol = separated_mixture()
    particles = means[[0, 0, 2, 2]] + 0.1
    assert testbed.mode_coverage(particles, weights, weights, means, chol) == pytest.approx(0.7)
    assert testbed.component_assignments(particles, weights, means, chol).tolist() == [0, 0, 2, 2]
    # a collapsed cloud covers one component only
    assert testbed.mode_coverage(means[[1, 1, 1, 1]], weights, weights, means, chol) == pytest.approx(0.3)
    assert testbed.mode_coverage(means, weights, weights, means, chol) == pytest.approx(1.0)


def test_expected_mode_coverage_matches_exact_samples():
    weights, means, covs, chol = separated_mixture()
    gen = make_generator(0)
    trials, n = 2000, 4
    labels = torch.multinomial(weights, trials * n, replacement=True, generator=gen).reshape(trials, n)
    noise = torch.randn(trials, n, 2, generator=gen, dtype=F64)
    samples = means[labels] + torch.einsum("tnij,tnj->tni", torch.linalg.cholesky(covs)[labels], noise)
    measured = np.mean([testbed.mode_coverage(s, weights, weights, means, chol) for s in samples])
    assert measured == pytest.approx(testbed.expected_mode_coverage(weights, n), abs=0.01)
    assert testbed.expected_mode_coverage(weights, 1) == pytest.approx(float((weights**2).sum()))


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_calibration_ratio_is_one_for_matching_laws(scale):
    gen = make_generator(3)
    trials, n, d = 400, 4, 200
    std = torch.linspace(0.01, 1.0, d, dtype=F64)
    numerators, denominators = [], []
    for _ in range(trials):
        gt = std * torch.randn(d, generator=gen, dtype=F64)
        particles = scale * std * torch.randn(n, d, generator=gen, dtype=F64)
        value = testbed.calibration_ratio(particles, gt)
        assert value > 0
        numerators.append(float(((gt - particles.mean(0)) ** 2).mean()))
        denominators.append((1 + 1 / n) * float(particles.var(0, correction=1).mean()))
    # particles of std s * std: E[(gt - xbar)^2] = std^2 (1 + s^2 / N), E[s_d^2] = s^2 std^2
    ratio = np.mean(numerators) / np.mean(denominators)
    theory = (1 + scale**2 / n) / ((1 + 1 / n) * scale**2)
    assert ratio == pytest.approx(theory, rel=0.05)
    assert (ratio > 2.0) if scale < 1 else (ratio < 0.5) if scale > 1 else (ratio == pytest.approx(1.0, rel=0.05))
    with pytest.raises(ValueError, match="at least 2"):
        testbed.calibration_ratio(torch.zeros(1, d), torch.zeros(d))


def test_mixture_and_calibration_rows_validate():
    weights, means, _, chol = separated_mixture()
    rows = mixture_rows(means[[0, 1, 1, 1]], weights, (weights, means, chol), KEYS)
    rows += calibration_rows(means[[0, 1, 1, 1]], means[0], KEYS, space="latent")
    rows += calibration_rows(means[[0]], means[0], KEYS, space="latent")
    rows += calibration_rows(means[[0, 0]], means[1], KEYS, space="latent")
    frame = validate_frame(rows)
    values = dict(zip(frame["metric"] + "/" + frame["status"], frame["value"]))
    assert values["mode_coverage/ok"] == pytest.approx(0.9)
    assert values["posterior_weight_entropy/ok"] == pytest.approx(testbed.component_weight_entropy(weights))
    assert values["mode_coverage_exact_expected/ok"] == pytest.approx(testbed.expected_mode_coverage(weights, 4))
    assert "calibration_ratio/n_particles<2" in values and "calibration_ratio/zero_particle_spread" in values
    nan = torch.full((4, 2), float("nan"), dtype=F64)
    assert (
        validate_frame(mixture_rows(nan, weights, (weights, means, chol), KEYS))["status"].tolist()[1]
        == "non_finite_output"
    )


def test_mixture_components_assign_prior_samples_to_their_component():
    from test_gaussian_mixture import toy_prior

    prior = toy_prior()
    weights, means, chol = prior.mixture_components()
    gen = make_generator(2)
    covs = prior.parameters64()["mixture.covariances"]
    for k in range(3):
        samples = means[k] + torch.randn(200, 2, generator=gen, dtype=F64) @ torch.linalg.cholesky(covs[k]).T
        share = (testbed.component_assignments(samples, weights, means, chol) == k).double().mean()
        assert share > 0.85, (k, share)
    # posterior weights decide the coverage, the prior decides the assignment
    assert testbed.mode_coverage(means[[0]], torch.tensor([0.2, 0.5, 0.3], dtype=F64), weights, means, chol) == 0.2
