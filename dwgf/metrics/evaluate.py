"""Row builders: everything ``dwgf evaluate`` / ``dwgf set-metrics`` need, one call per image or per set.

Per image (one observation, N particles)::

    metrics = ImageMetrics.from_cache(torch_home, nets=("alex", "vgg"))      # once per process
    keys = RowKeys(suite, task, method, variant, hyper, n_particles=N)
    rows = metrics.rows(particles, gt, keys.for_image(image_id, obs_sha, run_sha))

gives, for every particle j = 0..N-1 and for the particle-mean image (particle = -1; the mean of the
unclamped decoded particles, (1/N) sum_j x_j, then processed like any image):

* ``psnr``/``standard``, ``ssim``/``standard``, ``psnr``/``repo`` (:mod:`dwgf.metrics.image`);
* ``lpips_<net>``/``standard`` for each net, ``lpips_alex``/``repo`` (the official call)
  (:mod:`dwgf.metrics.lpips_metric`; null with the metric's status when its backbone is missing);

and once per image (particle null): ``diversity_pixel_std``/``standard`` and ``diversity_lpips_alex``/``standard``
(:mod:`dwgf.metrics.diversity`; null with status ``n_particles<2`` for N = 1). A particle with non-finite values
gets null rows with status ``non_finite_output`` (the particle-mean too).

Paper protocol reminder (docs/method.md#dwgf, docs/protocol.md#evaluation): the official per-image PSNR/LPIPS is
the mean over the 4 particles (not the particle-mean image, not best-of-N); aggregate with
:func:`per_image_particle_average`.

Exact-posterior test bed: :func:`posterior_rows` and :func:`mixture_rows` (:mod:`dwgf.metrics.testbed`).

Per set: :func:`set_rows` (FID and KID from features, :mod:`dwgf.metrics.fid`) and :func:`policy_images`
to pick the images of a sample policy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from dwgf.metrics import diversity, image, testbed
from dwgf.metrics.fid import (
    FID_PROTOCOL,
    KID_DEFAULT_SUBSET_SIZE,
    KID_DEFAULT_SUBSETS,
    ReferenceStats,
    fid_from_features,
    kid_from_features,
    kid_protocol,
)
from dwgf.metrics.lpips_metric import LPIPSMetric
from dwgf.metrics.schema import PARTICLE_MEAN, SAMPLE_POLICIES, STATUS_OK, RowKeys

STATUS_NON_FINITE = "non_finite_output"
STATUS_TOO_FEW = "n_particles<2"
#: network column value for metrics computed by this package's own code (no learned weights)
PIXEL_IMPLEMENTATION = "dwgf.metrics"


class ImageMetrics:
    """The per-image metric set: LPIPS networks for the standard protocol, the repo-protocol net and the
    diversity net (``alex`` by default; the repo protocol only exists for AlexNet in the official code)."""

    def __init__(self, lpips: Sequence[LPIPSMetric], repo_nets: Sequence[str] = ("alex",), diversity_net: str = "alex"):
        self.lpips = {m.net: m for m in lpips}
        for net in (*repo_nets, diversity_net):
            if net not in self.lpips:
                raise ValueError(f"LPIPS net {net!r} is used by a protocol but not loaded; load it in `lpips`")
        self.repo_nets = tuple(repo_nets)
        self.diversity_net = diversity_net

    @classmethod
    def from_cache(cls, torch_home: str | os.PathLike, nets: Sequence[str] = ("alex", "vgg"), **kwargs):
        """Load every net with :meth:`LPIPSMetric.from_cache` (unavailable nets yield null rows, not errors)."""
        return cls([LPIPSMetric.from_cache(net, torch_home) for net in nets], **kwargs)

    def rows(self, particles: torch.Tensor, gt: torch.Tensor, keys: RowKeys) -> list[dict[str, Any]]:
        """All per-image rows for ``particles`` (N, 3, H, W) and ``gt`` (1, 3, H, W), both in [-1, 1]."""
        if particles.ndim != 4 or particles.shape[1] != 3:
            raise ValueError(f"particles must have shape (N, 3, H, W), got {tuple(particles.shape)}")
        if keys.image_id is None:
            raise ValueError("keys.image_id is None; use keys.for_image(image_id, ...)")
        particles = particles.detach().cpu().to(torch.float64)
        n = particles.shape[0]
        finite = torch.isfinite(particles.flatten(1)).all(dim=1)
        mean_ok = bool(finite.all())
        stack = torch.cat([particles, particles.mean(dim=0, keepdim=True)])
        labels = list(range(n)) + [PARTICLE_MEAN]
        ok = finite.tolist() + [mean_ok]
        good = [i for i, flag in enumerate(ok) if flag]
        gt = gt.detach().cpu().to(torch.float64)

        values: dict[tuple[str, str], tuple[list[float | None], str, str | None]] = {}

        def put(metric: str, protocol: str, computed: torch.Tensor | None, status: str, network: str | None):
            column: list[float | None] = [None] * len(labels)
            if computed is not None:
                for slot, value in zip(good, computed.tolist()):
                    column[slot] = value
            values[(metric, protocol)] = (column, status, network)

        sub = stack[good]
        have = len(good) > 0
        put("psnr", image.STANDARD, image.psnr_standard(sub, gt) if have else None, STATUS_OK, PIXEL_IMPLEMENTATION)
        put("ssim", image.STANDARD, image.ssim_standard(sub, gt) if have else None, STATUS_OK, PIXEL_IMPLEMENTATION)
        put("psnr", image.REPO, image.psnr_repo(sub, gt) if have else None, STATUS_OK, PIXEL_IMPLEMENTATION)
        for net, metric in self.lpips.items():
            protocols = [image.STANDARD] + ([image.REPO] if net in self.repo_nets else [])
            for protocol in protocols:
                computed = metric(sub, gt, protocol=protocol) if have else None
                put(metric.metric_name, protocol, computed, metric.status, metric.network)

        rows = []
        for (metric, protocol), (column, status, network) in values.items():
            for slot, label in enumerate(labels):
                row_status = status if ok[slot] else STATUS_NON_FINITE
                value = column[slot] if row_status == status else None
                rows.append(
                    keys.row(metric=metric, protocol=protocol, value=value, status=row_status, particle=label,
                             network=network)
                )  # fmt: skip
        rows += self.diversity_rows(particles, keys, mean_ok)
        return rows

    def diversity_rows(self, particles: torch.Tensor, keys: RowKeys, finite: bool) -> list[dict[str, Any]]:
        net = self.lpips[self.diversity_net]
        if particles.shape[0] < 2 or not finite:
            status = STATUS_TOO_FEW if particles.shape[0] < 2 else STATUS_NON_FINITE
            std, lp, lp_status = None, None, status
        else:
            status = STATUS_OK
            std, lp, lp_status = diversity.pixel_std(particles), diversity.pairwise_lpips(net, particles), net.status
        return [
            keys.row(metric="diversity_pixel_std", protocol=image.STANDARD, value=std, status=status,
                     network=PIXEL_IMPLEMENTATION),
            keys.row(metric=f"diversity_{net.metric_name}", protocol=image.STANDARD, value=lp, status=lp_status,
                     network=net.network),
        ]  # fmt: skip


def posterior_rows(
    particles: torch.Tensor,
    posterior_mean: torch.Tensor,
    posterior_std: torch.Tensor,
    posterior_samples: torch.Tensor | testbed.SlicedReference,
    keys: RowKeys,
    *,
    data_range: float = 2.0,
    n_projections: int = testbed.DEFAULT_PROJECTIONS,
    seed: int = 0,
    space: str = "image",
) -> list[dict[str, Any]]:
    """Exact-posterior rows of one image: ``posterior_mean_psnr``, ``spread_ratio``, ``sliced_w2``.

    ``space`` (``image`` or ``latent``) is recorded in the protocol, with the data range / projections / seed.
    ``posterior_samples`` may be a :class:`~dwgf.metrics.testbed.SlicedReference` built once per observation
    (then its own ``n_projections`` and ``seed`` are used and recorded); the rows are the same.
    """
    if isinstance(posterior_samples, testbed.SlicedReference):
        reference = posterior_samples
    else:
        reference = testbed.SlicedReference(posterior_samples, n_projections, seed)
    n_projections, seed = reference.n_projections, reference.seed
    n = torch.as_tensor(particles).shape[0]
    finite = bool(torch.isfinite(torch.as_tensor(particles)).all())
    status = STATUS_OK if finite else STATUS_NON_FINITE
    psnr = testbed.posterior_mean_psnr(particles, posterior_mean, data_range) if finite else None
    spread = testbed.spread_ratio(particles, posterior_std) if finite and n >= 2 else None
    spread_status = status if n >= 2 else STATUS_TOO_FEW
    sw = reference.distance(particles) if finite else None
    m = reference.n_samples
    return [
        keys.row(metric="posterior_mean_psnr", protocol=f"space={space};data_range={data_range:g}", value=psnr,
                 status=status, network=PIXEL_IMPLEMENTATION),
        keys.row(metric="spread_ratio", protocol=f"space={space};ratio_of_means", value=spread,
                 status=spread_status, network=PIXEL_IMPLEMENTATION),
        keys.row(metric="sliced_w2", protocol=f"space={space};{testbed.sliced_protocol(n_projections, seed)};"
                 f"posterior_samples={m}", value=sw, status=status, network=PIXEL_IMPLEMENTATION),
    ]  # fmt: skip


def mixture_rows(
    latents: torch.Tensor,
    weights: torch.Tensor,
    prior_components: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    keys: RowKeys,
) -> list[dict[str, Any]]:
    """Multimodality rows of one image (latent space; :mod:`dwgf.metrics.testbed`'s docstring states the rules).

    * ``posterior_weight_entropy``/``nats``: H(w) of the exact posterior's component weights (a property of the
      observation, the same for every method);
    * ``mode_coverage``/``assignment=argmax_prior_responsibility``: posterior mass (``weights``) of the components
      visited; ``prior_components`` = (pi, mu, Cholesky factors of Sigma^-1) of the prior mixture that assigns;
    * ``mode_coverage_exact_expected``/``n=<N>``: sum_k w_k (1 - (1 - w_k)^N), what N exact samples reach on
      average -- the reference value for ``mode_coverage`` at this N.
    """
    z = torch.as_tensor(latents)
    finite = bool(torch.isfinite(z).all())
    status = STATUS_OK if finite else STATUS_NON_FINITE
    coverage = testbed.mode_coverage(z, weights, *prior_components) if finite else None
    n = z.shape[0]
    return [
        keys.row(metric="posterior_weight_entropy", protocol="space=latent;nats",
                 value=testbed.component_weight_entropy(weights), network=PIXEL_IMPLEMENTATION),
        keys.row(metric="mode_coverage", protocol="space=latent;assignment=argmax_prior_responsibility",
                 value=coverage, status=status, network=PIXEL_IMPLEMENTATION),
        keys.row(metric="mode_coverage_exact_expected", protocol=f"space=latent;n={n}",
                 value=testbed.expected_mode_coverage(weights, n), network=PIXEL_IMPLEMENTATION),
    ]  # fmt: skip


def exact_mean_rows(
    posterior_mean: torch.Tensor, ground_truth: torch.Tensor, keys: RowKeys, *, data_range: float = 2.0
) -> list[dict[str, Any]]:
    """``exact_mean_psnr``: PSNR (dB) of the exact posterior mean E[x | y] against the ground truth (image space).

    A property of the observation, the same for every method; in the well-specified regime (ground truth drawn
    from the prior) it is the Bayes-optimal PSNR in expectation, the ceiling for a solver's ``psnr`` of its
    particle mean, so the dB gap between them is measurable per image from the metrics alone.
    """
    value = testbed.posterior_mean_psnr(torch.as_tensor(posterior_mean).reshape(1, -1), ground_truth, data_range)
    return [keys.row(metric="exact_mean_psnr", protocol=f"space=image;data_range={data_range:g};vs=ground_truth",
                     value=value, network=PIXEL_IMPLEMENTATION)]  # fmt: skip


def calibration_rows(
    particles: torch.Tensor, ground_truth: torch.Tensor, keys: RowKeys, *, space: str = "image"
) -> list[dict[str, Any]]:
    """``calibration_ratio`` of the particles against the ground truth (null with a status for N < 2 or non-finite)."""
    x = torch.as_tensor(particles)
    n = x.shape[0]
    finite = bool(torch.isfinite(x).all())
    status = STATUS_OK if finite else STATUS_NON_FINITE
    if n < 2:
        status = STATUS_TOO_FEW
    value = testbed.calibration_ratio(x, ground_truth) if status == STATUS_OK else None
    if value is not None and math.isinf(value):
        value, status = None, "zero_particle_spread"
    return [keys.row(metric="calibration_ratio", protocol=f"space={space};mse_over_(1+1/N)_variance", value=value,
                     status=status, network=PIXEL_IMPLEMENTATION)]  # fmt: skip


def policy_images(
    particle_images: Mapping[str, Sequence[Any]], policy: str, mean_images: Mapping[str, Any] | None = None
) -> list[Any]:
    """The images of one sample policy, in sorted image-id order.

    ``particle_images``: image id -> that image's particles in particle order (paths, arrays...);
    ``first_particle``: particle 0 of every image; ``all_particles``: every particle of every image (the
    official FID's fake set, N × n images); ``particle_mean``: ``mean_images[id]`` (the particle-mean images).
    """
    if policy not in SAMPLE_POLICIES:
        raise ValueError(f"unknown sample policy {policy!r}; choose one of {SAMPLE_POLICIES}")
    ids = sorted(particle_images)
    if policy == "first_particle":
        return [particle_images[i][0] for i in ids]
    if policy == "all_particles":
        return [p for i in ids for p in particle_images[i]]
    if mean_images is None or set(mean_images) != set(ids):
        raise ValueError("sample policy 'particle_mean' needs mean_images for exactly the ids of particle_images")
    return [mean_images[i] for i in ids]


def set_rows(
    fake_features: np.ndarray,
    reference: np.ndarray | ReferenceStats,
    keys: RowKeys,
    *,
    sample_policy: str,
    reference_name: str,
    network: str,
    fid: bool = True,
    kid: bool = True,
    kid_subsets: int = KID_DEFAULT_SUBSETS,
    kid_subset_size: int = KID_DEFAULT_SUBSET_SIZE,
    kid_seed: int = 0,
) -> list[dict[str, Any]]:
    """FID/KID rows of one set (method × task × variant × sample policy) against one reference.

    ``reference``: the reference features (e.g. the same ground-truth images) or a :class:`ReferenceStats`
    (then ``reference_name`` should name the artifact, e.g. ``ffhq1k@sha256:...``). ``network`` is the
    feature network's string (:attr:`FeatureNetwork.network`); reference statistics from another network
    raise. FID on ~100 images is biased upwards (module :mod:`dwgf.metrics.fid`); KID is reported beside it.
    """
    if isinstance(reference, ReferenceStats) and reference.network != network:
        raise ValueError(f"reference {reference.name!r} was made by {reference.network!r}, not {network!r}")
    n = int(np.asarray(fake_features).shape[0])
    common = {"sample_policy": sample_policy, "reference": reference_name, "network": network, "n_samples": n}
    set_keys = RowKeys(keys.suite, keys.task, keys.method, keys.variant, keys.hyper, keys.n_particles)
    rows = []
    n_ref = reference.n if isinstance(reference, ReferenceStats) else int(np.asarray(reference).shape[0])
    if n < 2 or n_ref < 2:
        # sample covariances and the unbiased KID need at least 2 images on each side
        status = f"too_few_images: {n} evaluated, {n_ref} reference (need >= 2 each)"
        names = [name for name, wanted in (("fid", fid), ("kid", kid)) if wanted]
        protocols = {"fid": FID_PROTOCOL, "kid": kid_protocol(kid_subsets, kid_subset_size, kid_seed)}
        return [set_keys.row(metric=name, protocol=protocols[name], value=None, status=status, **common)
                for name in names]  # fmt: skip
    if fid:
        if isinstance(reference, ReferenceStats):
            value = reference.fid(fake_features)
        else:
            value = fid_from_features(fake_features, reference)
        rows.append(set_keys.row(metric="fid", protocol=FID_PROTOCOL, value=value, **common))
    if kid:
        protocol = kid_protocol(kid_subsets, kid_subset_size, kid_seed)
        options = {"num_subsets": kid_subsets, "max_subset_size": kid_subset_size, "seed": kid_seed}
        if isinstance(reference, ReferenceStats):
            if reference.feats is None:
                rows.append(set_keys.row(metric="kid", protocol=protocol, value=None,
                                         status="reference_without_features", **common))  # fmt: skip
                return rows
            value = reference.kid(fake_features, **options)
        else:
            value = kid_from_features(fake_features, reference, **options)
        rows.append(set_keys.row(metric="kid", protocol=protocol, value=value, **common))
    return rows


def per_image_particle_average(df: pd.DataFrame) -> pd.DataFrame:
    """The official aggregation (docs/method.md#dwgf): per image, the mean over particles j >= 0 of each
    (method, task, variant, metric, protocol, network); then mean, std and count over images.

    Rows with null values are excluded and counted in ``n_null``; use the particle = -1 rows for the
    particle-mean image instead.
    """
    keys = ["suite", "task", "method", "variant", "metric", "protocol", "network"]
    rows = df[(df["level"] == "image") & (df["particle"] >= 0)].copy()
    rows["is_null"] = rows["value"].isna()
    per_image = rows.groupby([*keys, "image_id"], dropna=False).agg(value=("value", "mean"), n_null=("is_null", "sum"))
    out = per_image.groupby(keys, dropna=False).agg(
        mean=("value", "mean"), std=("value", "std"), n_images=("value", "count"), n_null=("n_null", "sum")
    )
    return out.reset_index()
