"""Which test-bed problems have a multimodal exact posterior? The entropy of its component weights, measured.

    python benchmarks/testbed_entropy.py PRIOR_FOLDER [--n-images 8] [--sigma-y 0.001 0.05]

For ground truths sampled from the prior (the well-specified regime) and each candidate problem, prints the mean and
max over images of H(w) = -sum_k w_k log w_k (nats, :func:`dwgf.metrics.testbed.component_weight_entropy`) of the
exact posterior p(z | y) (sigma_dec = 0, as the pipeline evaluates), the number of images with H > 0.1 and the mean
largest weight. The research suite's multimodal tasks were chosen from this table (docs/findings.md).
"""

from __future__ import annotations

import argparse

import torch

from dwgf.metrics.testbed import component_weight_entropy
from dwgf.operators import add_measurement_noise, make_operator
from dwgf.priors.gaussian_mixture import GaussianMixturePrior
from dwgf.seeding import derive_seed, make_generator

CANDIDATES = {
    "box_half_face": ("box_inpainting", {"box": "half_face"}),
    "box_centered_56": ("box_inpainting", {"box": "centered", "box_size": 56}),
    "sr8": ("sr_avgpool", {"factor": 8}),
    "sr16": ("sr_avgpool", {"factor": 16}),
    "sr32": ("sr_avgpool", {"factor": 32}),
    "cs_0.01": ("compressed_sensing", {"ratio": 0.01, "seed": 0}),
    "cs_0.02": ("compressed_sensing", {"ratio": 0.02, "seed": 0}),
    "cs_0.1": ("compressed_sensing", {"ratio": 0.1, "seed": 0}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prior", help="a saved test-bed prior folder (e.g. results/research/prior)")
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--sigma-y", type=float, nargs="+", default=[0.001, 0.05])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prior = GaussianMixturePrior.load(args.prior, dtype="float64")
    z = prior.sample_prior(args.n_images, make_generator(derive_seed(args.seed, "entropy", "prior-samples")))
    x = prior.decode(z)
    print(f"prior: K = {prior.n_components}, weights {[round(w, 3) for w in prior.config['em']['weights']]}")
    print("| problem | sigma_y | mean H (nats) | max H | images with H > 0.1 | mean max w |")
    print("|---|---:|---:|---:|---:|---:|")
    for sigma_y in args.sigma_y:
        for name, (operator_name, params) in CANDIDATES.items():
            operator = make_operator(operator_name, prior.image_size, **params)
            entropies, top = [], []
            for k in range(args.n_images):
                noise = make_generator(derive_seed(args.seed, "entropy", name, k))
                y = operator.zero_unmeasured(add_measurement_noise(operator(x[k : k + 1]), sigma_y, noise))
                weights = prior.posterior(y, operator, sigma_y, 0.0).weights
                entropies.append(component_weight_entropy(weights))
                top.append(float(weights.max()))
            mean = sum(entropies) / len(entropies)
            print(f"| {name} | {sigma_y:g} | {mean:.3f} | {max(entropies):.3f} | "
                  f"{sum(h > 0.1 for h in entropies)}/{args.n_images} | {sum(top) / len(top):.3f} |")  # fmt: skip


if __name__ == "__main__":
    with torch.no_grad():
        main()
