"""Metrics with stated protocols, and the long-format Parquet table they are stored in (dwgf/metrics/README.md).

Modules (one concept each):

* :mod:`dwgf.metrics.image` -- PSNR and SSIM, protocols ``standard`` (clamped, 8-bit) and ``repo``
  (the official unclamped PSNR);
* :mod:`dwgf.metrics.lpips_metric` -- LPIPS (alex, vgg) from the ``lpips`` package with backbone weights read
  from a cache, never downloaded; ``standard`` ([-1, 1]) and ``repo`` ([0, 1], no ``normalize``) protocols;
* :mod:`dwgf.metrics.diversity` -- across-particle pixel std and mean pairwise LPIPS;
* :mod:`dwgf.metrics.testbed` -- exact-posterior metrics (posterior-mean PSNR, spread ratio, sliced W2);
* :mod:`dwgf.metrics.fid` -- Inception features (clean-fid "clean"), FID, KID, reference statistics;
* :mod:`dwgf.metrics.runtime` -- runtime / peak-memory rows from the per-image solve records;
* :mod:`dwgf.metrics.schema` -- the Parquet schema, :class:`RowKeys`, :func:`write_metrics`, :func:`read_metrics`;
* :mod:`dwgf.metrics.evaluate` -- row builders for one image (:class:`ImageMetrics`) and one set (:func:`set_rows`).

Importing this package is light (torch, numpy, pandas, pyarrow); ``lpips`` and ``cleanfid`` are imported only
when a metric that needs them is built.
"""

from dwgf.metrics.evaluate import ImageMetrics, per_image_particle_average, policy_images, posterior_rows, set_rows
from dwgf.metrics.fid import (
    NETWORK_CLEANFID,
    NETWORK_FID_HELPER,
    FeatureNetwork,
    FeatureStore,
    ReferenceStats,
    available_feature_networks,
    fid_from_features,
    fid_from_stats,
    kid_from_features,
    load_feature_network,
)
from dwgf.metrics.image import psnr_repo, psnr_standard, ssim_standard, to_uint8_hwc
from dwgf.metrics.lpips_metric import LPIPSMetric
from dwgf.metrics.runtime import solve_record_rows
from dwgf.metrics.schema import (
    COLUMNS,
    SAMPLE_POLICIES,
    SCHEMA,
    RowKeys,
    assert_one_network,
    concat_metrics,
    read_metrics,
    validate_frame,
    write_metrics,
)
from dwgf.metrics.testbed import posterior_mean_psnr, sliced_wasserstein2, spread_ratio

__all__ = [
    "COLUMNS",
    "NETWORK_CLEANFID",
    "NETWORK_FID_HELPER",
    "SAMPLE_POLICIES",
    "SCHEMA",
    "FeatureNetwork",
    "FeatureStore",
    "ImageMetrics",
    "LPIPSMetric",
    "ReferenceStats",
    "RowKeys",
    "assert_one_network",
    "available_feature_networks",
    "concat_metrics",
    "fid_from_features",
    "fid_from_stats",
    "kid_from_features",
    "load_feature_network",
    "per_image_particle_average",
    "policy_images",
    "posterior_mean_psnr",
    "posterior_rows",
    "psnr_repo",
    "psnr_standard",
    "read_metrics",
    "set_rows",
    "sliced_wasserstein2",
    "solve_record_rows",
    "spread_ratio",
    "ssim_standard",
    "to_uint8_hwc",
    "validate_frame",
    "write_metrics",
]
