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

Importing this package is free: the names below are loaded from their module on first use (PEP 562), so
``from dwgf.metrics.schema import ...`` in a step that only reads and writes Parquet (``dwgf aggregate``) does not
import torch. ``lpips`` and ``cleanfid`` are imported only when a metric that needs them is built.
"""

from __future__ import annotations

import importlib
from typing import Any

#: exported name -> the submodule that defines it
_EXPORTS = {
    "evaluate": ["ImageMetrics", "per_image_particle_average", "policy_images", "posterior_rows", "set_rows"],
    "fid": [
        "NETWORK_CLEANFID",
        "NETWORK_FID_HELPER",
        "FeatureNetwork",
        "FeatureStore",
        "ReferenceStats",
        "available_feature_networks",
        "fid_from_features",
        "fid_from_stats",
        "kid_from_features",
        "load_feature_network",
    ],
    "image": ["psnr_repo", "psnr_standard", "ssim_standard", "to_uint8_hwc"],
    "lpips_metric": ["LPIPSMetric"],
    "runtime": ["solve_record_rows"],
    "schema": [
        "COLUMNS",
        "SAMPLE_POLICIES",
        "SCHEMA",
        "RowKeys",
        "assert_one_network",
        "concat_metrics",
        "read_metrics",
        "validate_frame",
        "write_metrics",
    ],
    "testbed": ["posterior_mean_psnr", "sliced_wasserstein2", "spread_ratio"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'dwgf.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dwgf.metrics.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
