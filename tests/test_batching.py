"""Batched solves (dwgf/solvers/): B observations at once, one generator per image, for every registered method.

What must hold (dwgf/solvers/base.py module docstring): an image's result does not depend on which other images
share its batch; a diverging image is frozen at its exact first non-finite step while the others go on; the
one-image form (a single generator, y of shape (1, ...)) is unchanged.

Measured on this machine (MKL, 1 thread, the toy test-bed prior below, 7 steps, 8 images, every method and
variant here, both tasks): with the Gaussian-mixture prior, which computes each image's rows as their own
batched-product entry (``LatentPrior.rows_per_image``), solo and in-batch results are bitwise equal in float32 and
float64. A prior that ignores that hint (``NoHint``) rounds by the batch's row count: max abs difference measured
4.3e-13 in float64 (bound asserted: 1e-10) and 2.2e-5 in float32 (RLSD with repulsion; 1e-6 to 4e-6 for the
other methods; bound asserted: 1e-4, on values of order 1-10).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from dwgf.operators import add_measurement_noise, make_operator
from dwgf.priors.base import LatentPrior
from dwgf.priors.gaussian_mixture import GaussianMixturePrior
from dwgf.solvers import get_solver, solver_names

sys.path.insert(0, str(Path(__file__).parent))
from test_dwgf import official_reference  # noqa: E402  (the independent official-loop re-implementation)

SIZE, N_PARTICLES, N_STEPS, N_IMAGES = 16, 3, 7, 8
TASKS = {"box_inpainting": {}, "sr_avgpool": {"factor": 8}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def toy_prior(dtype: torch.dtype, sigma_enc: float = 0.05) -> GaussianMixturePrior:
    """A random 3-component test-bed prior on 16 px images (d = 16), with encoder noise so encoders draw too."""
    g = torch.Generator().manual_seed(0)
    d = 4 * (SIZE // 8) ** 2
    W, _ = torch.linalg.qr(torch.randn(3 * SIZE * SIZE, d, generator=g, dtype=torch.float64))
    s = 0.5 + torch.rand(d, generator=g, dtype=torch.float64)
    b = 0.1 * torch.randn(3 * SIZE * SIZE, generator=g, dtype=torch.float64)
    weights = torch.softmax(torch.randn(3, generator=g, dtype=torch.float64), 0)
    means = torch.randn(3, d, generator=g, dtype=torch.float64)
    A = torch.randn(3, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    covariances = A @ A.mT + 0.3 * torch.eye(d, dtype=torch.float64)
    return GaussianMixturePrior(
        W, s, b, weights, means, covariances, image_size=SIZE, latent_channels=4, sigma_enc=sigma_enc, dtype=dtype
    )


class NoHint(LatentPrior):
    """Delegates to a prior but drops the ``rows_per_image`` hint: plain products over all the batch's rows."""

    def __init__(self, inner: LatentPrior):
        self.inner, self.kind = inner, inner.kind

    alphas_cumprod = property(lambda self: self.inner.alphas_cumprod)
    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)
    latent_shape = lambda self, size: self.inner.latent_shape(size)  # noqa: E731
    decode = lambda self, z: self.inner.decode(z)  # noqa: E731
    encode = lambda self, x, generator=None, sample=True: self.inner.encode(x, generator, sample)  # noqa: E731
    eps = lambda self, z_t, t: self.inner.eps(z_t, t)  # noqa: E731


class NaNWhenFar(NoHint):
    """decode is NaN on every row whose latents average more than ``limit`` in magnitude: an image driven far from
    the prior blows up at a step of its own, as a real overflow would."""

    limit = 2.0

    def decode(self, z):
        out = self.inner.decode(z)
        far = z.reshape(z.shape[0], -1).abs().mean(dim=1) > self.limit
        return torch.where(far.reshape(-1, 1, 1, 1), torch.full_like(out, math.nan), out)


def fixed_conv_extractor():
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(
            torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0), dtype=conv.weight.dtype)
        )
        conv.bias.zero_()
    conv.requires_grad_(False)
    return lambda images: torch.tanh(conv(images.double())).flatten(1).to(images.dtype)


#: Variants that make every random draw of a method happen (encoder samples, DDIM noise, per-particle measurement
#: noise, repulsion); a method registered later without an entry here runs with its defaults.
VARIANTS = {
    "dwgf": [{}, {"per_particle_noise": True}],
    "psld": [{}, {"eta": 0.5, "prediction_noise_std": 0.01}],
    "latent_dps": [{"eta": 1.0}],
    "rlsd": [{}, {"augmented": False}, {"repulsion_gamma": 0.5, "feature_extractor": "conv"}],
}


def problems(prior, task, n_images=N_IMAGES):
    """(operator, y (B, ...), y_clean (B, ...)): B observations of prior samples, sigma_y 0.01."""
    operator = make_operator(task, SIZE, **TASKS[task])
    x = prior.decode(prior.sample_prior(n_images, torch.Generator().manual_seed(5)))
    y_clean = operator(x)
    y = operator.zero_unmeasured(add_measurement_noise(y_clean, 0.01, torch.Generator().manual_seed(6)))
    return operator, y, y_clean


def hyper_for(variant, y_clean):
    hyper = dict(variant)
    if hyper.get("per_particle_noise"):
        hyper.update(y_clean=y_clean, sigma_y=0.01)
    if hyper.get("feature_extractor") == "conv":
        hyper["feature_extractor"] = fixed_conv_extractor()
    return hyper


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def solo_and_batch(method, prior, operator, y, y_clean, variant, images):
    """Each image alone (single-generator form) and all of ``images`` in one batch (list form)."""
    solve = get_solver(method)
    solo = [
        solve(prior, operator, y[i : i + 1], N_PARTICLES, torch.Generator().manual_seed(100 + i), n_steps=N_STEPS,
              progress=False, **hyper_for(variant, y_clean[i : i + 1]))
        for i in images
    ]  # fmt: skip
    batch = solve(prior, operator, y[images], N_PARTICLES, generators([100 + i for i in images]), n_steps=N_STEPS,
                  progress=False, **hyper_for(variant, y_clean[images]))  # fmt: skip
    return solo, batch


def max_difference(a, b):
    """Largest |a - b| over particles, latents and extras; NaN counts as equal only where both are NaN."""
    fields = [(a.particles, b.particles), (a.latents, b.latents)]
    fields += [(a.extras[k], b.extras[k]) for k in a.extras]
    assert set(a.extras) == set(b.extras)
    worst = 0.0
    for u, v in fields:
        u, v = u.double(), v.double()
        if not torch.equal(u.isnan(), v.isnan()):
            return math.inf
        worst = max(worst, float((u - v).nan_to_num(nan=0.0).abs().max()))
    return worst


def same_result(a, b):
    assert (a.status, a.diverged_at_step, a.n_steps) == (b.status, b.diverged_at_step, b.n_steps)
    assert max_difference(a, b) == 0.0


CASES = [(m, k) for m in solver_names() for k in range(len(VARIANTS.get(m, [{}])))]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("method", "variant_index"), CASES)
def test_image_alone_equals_image_in_a_batch_of_8(method, variant_index, dtype):
    variant = VARIANTS.get(method, [{}])[variant_index]
    prior = toy_prior(dtype)
    for task in TASKS:
        operator, y, y_clean = problems(prior, task)
        solo, batch = solo_and_batch(method, prior, operator, y, y_clean, variant, list(range(N_IMAGES)))
        assert len(batch) == N_IMAGES
        for alone, inside in zip(solo, batch):
            assert alone.ok and inside.ok
            same_result(alone, inside)  # the test-bed prior is batch-invariant by construction: bitwise
        # Different images (and seeds) really differ: the comparison above is not between copies.
        assert not torch.allclose(batch[0].particles, batch[1].particles)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("method", solver_names())
def test_batch_tolerance_for_a_prior_without_the_row_hint(method, dtype):
    """Plain products over all rows round by the row count; the result still matches within the stated bounds."""
    prior = NoHint(toy_prior(dtype))
    operator, y, y_clean = problems(prior.inner, "sr_avgpool")
    solo, batch = solo_and_batch(method, prior, operator, y, y_clean, VARIANTS.get(method, [{}])[0], list(range(8)))
    bound = 1e-10 if dtype == torch.float64 else 1e-4
    for alone, inside in zip(solo, batch):
        assert alone.ok and inside.ok and max_difference(alone, inside) <= bound


@pytest.mark.parametrize("method", solver_names())
def test_a_nan_observation_diverges_alone_and_leaves_the_others_identical(method):
    prior = toy_prior(torch.float32)
    operator, y, y_clean = problems(prior, "box_inpainting", n_images=4)
    y = y.clone()
    y[2, 0, 0, 0] = math.nan
    solo, batch = solo_and_batch(method, prior, operator, y, y_clean, {}, [0, 1, 2, 3])
    assert [r.status for r in batch] == ["ok", "ok", "diverged", "ok"]
    assert batch[2].diverged_at_step == 0 and batch[2].n_steps == 0
    assert torch.isfinite(batch[2].latents).all()  # frozen at its (finite) start
    for alone, inside in zip(solo, batch):
        same_result(alone, inside)


#: Step sizes that let a 1000x observation drag its image's latents out within 7 steps (measured: the far image
#: diverges at step 2-4, the others never).
DRIFT = {"psld": {"omega": 5.0}, "latent_dps": {"omega": 5.0}, "rlsd": {"lr_z": 1.0, "lr_x": 2.0, "rho": 1.0}}


@pytest.mark.parametrize("method", solver_names())
def test_divergence_mid_run_is_recorded_at_the_exact_step_per_image(method):
    """Image 1 (y x 1000) diverges at a later step; the batch records exactly its solo step and the rest go on."""
    prior = NaNWhenFar(toy_prior(torch.float64))
    operator, y, y_clean = problems(prior.inner, "box_inpainting", n_images=4)
    y = y.clone()
    y[1] = 1000.0 * y[1]
    solo, batch = solo_and_batch(method, prior, operator, y, y_clean, DRIFT.get(method, {}), [0, 1, 2, 3])
    steps = [r.diverged_at_step for r in batch]
    assert steps[1] is not None and 0 < steps[1] < N_STEPS and steps.count(None) == 3, steps
    assert batch[1].n_steps == steps[1] and torch.isfinite(batch[1].latents).all()  # frozen before the blow-up
    for alone, inside in zip(solo, batch):
        assert (alone.status, alone.diverged_at_step) == (inside.status, inside.diverged_at_step)
        assert max_difference(alone, inside) <= 1e-10  # NoHint: plain products, the float64 bound


@pytest.mark.parametrize("flags", [{}, {"per_particle_noise": True}], ids=["official", "per_particle_noise"])
def test_dwgf_batch_matches_the_independent_official_loop_per_image(flags):
    prior = toy_prior(torch.float64)
    operator, y, y_clean = problems(prior, "box_inpainting", n_images=3)
    hyper, reference = {}, {}
    if flags:
        hyper = {"per_particle_noise": True, "y_clean": y_clean, "sigma_y": 0.05}
    batch = get_solver("dwgf")(prior, operator, y, N_PARTICLES, generators([7, 8, 9]), n_steps=4, progress=False,
                               **hyper)  # fmt: skip
    for i, result in enumerate(batch):
        if flags:
            reference = {"y_clean": y_clean[i : i + 1], "sigma_y": 0.05}
        latents, history, _ = official_reference(
            prior, operator, y[i : i + 1], N_PARTICLES, torch.Generator().manual_seed(7 + i), 4, **reference
        )
        assert result.ok and result.n_steps == 4
        torch.testing.assert_close(result.latents, latents, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(result.extras["pre_update_particles"], history[-1], rtol=1e-9, atol=1e-9)


def test_generator_and_observation_counts_must_agree():
    prior = toy_prior(torch.float64)
    operator, y, _ = problems(prior, "box_inpainting", n_images=3)
    solve = get_solver("dwgf")
    with pytest.raises(ValueError, match=r"y must have shape \(1,"):
        solve(prior, operator, y, 2, torch.Generator().manual_seed(0), n_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"y must have shape \(2,"):
        solve(prior, operator, y, 2, generators([0, 1]), n_steps=2, progress=False)
    with pytest.raises(ValueError, match="generators must be"):
        solve(prior, operator, y, 2, [0, 1, 2], n_steps=2, progress=False)
