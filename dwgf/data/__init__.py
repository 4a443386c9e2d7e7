"""Data sources that need no download. See :mod:`dwgf.data.bundled` (pixels; imports torch) and
:mod:`dwgf.data.crop_ids` (the crop id grammar; torch-free, so the plan can check ids at parse time).

The names below load :mod:`dwgf.data.bundled` on first use, so ``import dwgf.data.crop_ids`` stays torch-free.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("dwgf.data.bundled"), name)
    raise AttributeError(f"module 'dwgf.data' has no attribute {name!r}")
