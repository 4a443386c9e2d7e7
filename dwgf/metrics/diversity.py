"""Diversity across the N particles of one observation (mode collapse is DWGF's stated weakness,
docs/protocol.md#paper-results).

Both functions take the N decoded particles of one image, (N, 3, H, W) in [-1, 1], and return one float
(``None`` when N < 2, where diversity is undefined):

* :func:`pixel_std` (protocol ``standard``): on the clamped, 8-bit quantised [0, 1] images u_i (the stored
  PNGs), the per-pixel sample standard deviation across particles, s_p = sqrt(sum_i (u_ip - mean_i u_ip)^2
  / (N - 1)), averaged over all C×H×W pixels p.
* :func:`pairwise_lpips`: the mean LPIPS over the N(N-1)/2 unordered pairs i < j (LPIPS is symmetric), under
  the metric's protocol (``standard`` by default).
"""

from __future__ import annotations

import itertools

import torch

from dwgf.metrics.image import STANDARD, standard_unit
from dwgf.metrics.lpips_metric import LPIPSMetric


def _check_particles(particles: torch.Tensor) -> None:
    if particles.ndim != 4 or particles.shape[1] != 3:
        raise ValueError(f"particles must have shape (N, 3, H, W), got {tuple(particles.shape)}")


def pixel_std(particles: torch.Tensor) -> float | None:
    """Mean over pixels of the across-particle sample std of the quantised [0, 1] images (None if N < 2)."""
    _check_particles(particles)
    if particles.shape[0] < 2:
        return None
    u = standard_unit(particles)
    return float(u.std(dim=0, correction=1).mean())


def pairwise_lpips(metric: LPIPSMetric, particles: torch.Tensor, protocol: str = STANDARD) -> float | None:
    """Mean LPIPS over unordered particle pairs (None if N < 2 or the metric is unavailable)."""
    _check_particles(particles)
    n = particles.shape[0]
    if n < 2 or not metric.available:
        return None
    pairs = list(itertools.combinations(range(n), 2))
    first = particles[[i for i, _ in pairs]]
    second = particles[[j for _, j in pairs]]
    values = metric(first, second, protocol=protocol)
    return float(values.mean())
