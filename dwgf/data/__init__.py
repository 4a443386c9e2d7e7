"""Data sources that need no download. See :mod:`dwgf.data.bundled`."""

from __future__ import annotations

from dwgf.data.bundled import (
    SOURCE_IMAGES,
    bundled_crops,
    crop_id,
    load_crop,
    load_crops,
    parse_crop_id,
    source_image,
    train_test_split,
)

__all__ = [
    "SOURCE_IMAGES",
    "bundled_crops",
    "crop_id",
    "load_crop",
    "load_crops",
    "parse_crop_id",
    "source_image",
    "train_test_split",
]
