"""CPU cost of a test-bed step: the previous prior hot path vs the current one, measured in one run.

    python benchmarks/testbed_step_cost.py --prior /tmp/demo-prior [--images 2] [--steps 30] [--repeats 3]

``--prior``: a folder written by ``GaussianMixturePrior.save`` (fitted there first with the demo suite's settings
when missing, as in ``benchmarks/testbed_steps.py``). One thread; CPU milliseconds (``time.process_time``).

Prints two tables, old path / new path / ratio, each measurement interleaved (old, new, old, new, ...) and the
median over ``--repeats`` kept, so that the machine's load affects both paths alike:

1. per prior call on B images x N = 4 particles: ``eps`` (float64 mixture), ``decode``, ``encode`` and the
   backward product of ``decode`` (ms per image);
2. per solver step: ms per image-step of each method x task (box, SR x8) on B held-out crops at the demo's
   hyper-parameters, ``--steps`` steps of the method's official schedule stride.

The previous path is :class:`PreviousPrior`, the hot path as it was before ``_RowProduct`` (kept here, not in the
package, only to measure against): per-image ``bmm`` of the rows with ``Wᵀ`` / ``W`` expanded over images, the
autograd backward of that product, and the mixture's two per-(component, image) products with U_k in ``eps``.
Both paths give the same values up to float rounding (``--check`` prints the largest differences).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testbed_steps import N_PARTICLES, load_prior, problem  # noqa: E402

from dwgf.priors.gaussian_mixture import GaussianMixturePrior  # noqa: E402
from dwgf.solvers import get_solver  # noqa: E402

#: Demo hyper-parameters per method x task (config.yaml, suite ``demo``).
HYPER = {
    ("dwgf", "box"): {"gamma": 0.15, "lr": 0.1, "kappa": 0.1, "sigma_dec": 0.01},
    ("dwgf", "sr8"): {"gamma": 0.15, "lr": 0.1, "kappa": 0.1, "sigma_dec": 0.01},
    ("psld", "box"): {"omega": 0.01, "gamma": 0.001},
    ("psld", "sr8"): {"omega": 0.1, "gamma": 0.01},
    ("rlsd", "box"): {"w_t": 0.15, "rho": 0.07, "lr_x": 0.4, "lr_z": 0.8},
    ("rlsd", "sr8"): {"w_t": 0.01, "rho": 0.05, "lr_x": 0.4, "lr_z": 0.6},
    ("latent_dps", "box"): {"omega": 0.01},
    ("latent_dps", "sr8"): {"omega": 0.1},
}
#: Official step counts (the measured steps are a prefix-free stride of these schedules: ``n_steps=--steps``).
OFFICIAL_STEPS = {"dwgf": 998, "psld": 1000, "rlsd": 998, "latent_dps": 1000}


class PreviousPrior(GaussianMixturePrior):
    """The test-bed prior with the hot path as it was before (same math, slower products)."""

    def _per_image_matmul(self, flat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        groups = self._image_groups(flat.shape[0])
        product = torch.bmm(flat.reshape(groups, -1, flat.shape[1]), weight.expand(groups, *weight.shape))
        return product.reshape(flat.shape[0], weight.shape[1])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        flat = self._flat_latent(z, "z").to(self._device, self._dtype)
        x = self._per_image_matmul(flat * self._s, self._W.T) + self._b
        return x.reshape(z.shape[0], 3, self.image_size, self.image_size)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(self._device, self._dtype)
        z = self._per_image_matmul(flat - self._b, self._W) / self._s
        if sample and self.sigma_enc > 0:
            z = z + self.sigma_enc * self._encoder_noise(z.shape, [generator])
        return z.reshape(x.shape[0], *self.latent_shape(self.image_size))

    def _per_component(self, v: torch.Tensor, transpose: bool) -> torch.Tensor:
        rows, k, d = v.shape
        groups = self._image_groups(rows)
        cache = self.__dict__.setdefault("_previous_eigvecs", {})
        if groups not in cache:
            cache[groups] = self._eigvecs.mT.contiguous().repeat_interleave(groups, dim=0).mT
        eigvecs = cache[groups].mT if transpose else cache[groups]
        blocks = v.reshape(groups, rows // groups, k, d).permute(2, 0, 1, 3).reshape(k * groups, rows // groups, d)
        out = torch.bmm(blocks, eigvecs)
        return out.reshape(k, groups, rows // groups, d).permute(1, 2, 0, 3).reshape(rows, k, d)

    def eps(self, z_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        flat = self._flat_latent(z_t, "z_t").to(self._device, torch.float64)
        abar = self._abar(t, flat.shape[0], self._device)
        means = self._master["mixture.means"]
        diff = flat[:, None, :] - abar.sqrt()[:, None, None] * means[None]
        proj = self._per_component(diff, transpose=False)
        var = abar[:, None, None] * self._eigvals[None] + (1.0 - abar)[:, None, None]
        log_joint = self._mix["log_weights"][None] - 0.5 * ((proj**2 / var).sum(-1) + var.log().sum(-1))
        precision_diff = self._per_component(proj / var, transpose=True)
        responsibilities = torch.softmax(log_joint, dim=1)
        eps = (1.0 - abar).sqrt()[:, None] * (responsibilities[:, :, None] * precision_diff).sum(1)
        return eps.reshape(z_t.shape).to(z_t.device, z_t.dtype)


def cpu_ms(fn, repeats: int) -> float:
    started = time.process_time()
    for _ in range(repeats):
        fn()
    return 1e3 * (time.process_time() - started) / repeats


def paired(old_fn, new_fn, rounds: int, inner: int) -> tuple[float, float]:
    """Median CPU ms of ``inner`` calls of each, alternated over ``rounds`` rounds (after one warm-up call each)."""
    old_fn(), new_fn()
    olds, news = [], []
    for _ in range(rounds):
        olds.append(cpu_ms(old_fn, inner))
        news.append(cpu_ms(new_fn, inner))
    return statistics.median(olds), statistics.median(news)


def prior_calls(old: GaussianMixturePrior, new: GaussianMixturePrior, images: int, rounds: int) -> None:
    rows = images * N_PARTICLES
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(rows, *new.latent_shape(new.image_size), generator=generator)
    x = new.decode(z).detach()
    grad_x = torch.randn(x.shape, generator=generator)

    def decode_backward(prior):
        leaf = z.clone().requires_grad_(True)
        out = prior.decode(leaf)
        return lambda: torch.autograd.grad(out, leaf, grad_x, retain_graph=True)

    calls = {
        "eps (t = 500)": (lambda: old.eps(z, 500), lambda: new.eps(z, 500)),
        "decode": (lambda: old.decode(z), lambda: new.decode(z)),
        "encode": (lambda: old.encode(x, sample=False), lambda: new.encode(x, sample=False)),
        "decode backward": (decode_backward(old), decode_backward(new)),
    }
    print(f"\nPrior calls, {images} images x N = {N_PARTICLES} (ms per image; old / new / ratio)")
    print("| call | old | new | old / new |\n|---|---|---|---|")
    with old.rows_per_image(N_PARTICLES), new.rows_per_image(N_PARTICLES):
        for name, (old_fn, new_fn) in calls.items():
            old_ms, new_ms = paired(old_fn, new_fn, rounds, 10)
            print(f"| {name} | {old_ms / images:.2f} | {new_ms / images:.2f} | {old_ms / new_ms:.2f} |", flush=True)


def solver_steps(old: GaussianMixturePrior, new: GaussianMixturePrior, images: int, steps: int, rounds: int) -> None:
    print(f"\nSolver steps, {images} images x N = {N_PARTICLES}, {steps} steps (ms per image-step; old / new / ratio)")
    print("| task | method | old | new | old / new |\n|---|---|---|---|---|")
    for task in ("box", "sr8"):
        operator, _, y = problem(new, task, images)
        for method in ("dwgf", "psld", "rlsd", "latent_dps"):
            solve, hyper = get_solver(method), HYPER[method, task]

            def run(prior, solve=solve, hyper=hyper, operator=operator, y=y):
                generators = [torch.Generator().manual_seed(i) for i in range(images)]
                return lambda: solve(prior, operator, y, N_PARTICLES, generators, n_steps=steps, progress=False,
                                     **hyper)  # fmt: skip

            old_ms, new_ms = paired(run(old), run(new), rounds, 1)
            old_ms, new_ms, ratio = old_ms / (images * steps), new_ms / (images * steps), old_ms / new_ms
            print(f"| {task} | {method} | {old_ms:.2f} | {new_ms:.2f} | {ratio:.2f} |", flush=True)


def check(old: GaussianMixturePrior, new: GaussianMixturePrior) -> None:
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(8, *new.latent_shape(new.image_size), generator=generator)
    with old.rows_per_image(N_PARTICLES), new.rows_per_image(N_PARTICLES):
        x = new.decode(z)
        diffs = {
            "eps": (old.eps(z, 500) - new.eps(z, 500)).abs().max(),
            "decode": (old.decode(z) - x).abs().max(),
            "encode": (old.encode(x, sample=False) - new.encode(x, sample=False)).abs().max(),
        }
    print("largest |old - new|: " + ", ".join(f"{k} {float(v):.2e}" for k, v in diffs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=Path, required=True, help="test-bed prior folder (fitted there if missing)")
    parser.add_argument("--images", type=int, default=2, help="images per batched solve (the demo's shards: 2)")
    parser.add_argument("--steps", type=int, default=30, help="solver steps per timed solve")
    parser.add_argument("--repeats", type=int, default=3, help="alternated rounds; the median is kept")
    parser.add_argument("--check", action="store_true", help="also print the largest old - new differences")
    args = parser.parse_args()
    torch.set_num_threads(1)
    new = load_prior(args.prior)
    old = PreviousPrior.load(args.prior)
    if args.check:
        check(old, new)
    prior_calls(old, new, args.images, args.repeats)
    solver_steps(old, new, args.images, args.steps, args.repeats)


if __name__ == "__main__":
    main()
