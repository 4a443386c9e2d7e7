"""Imports every built-in operator module so that their ``@register_operator`` decorators run.

Loaded lazily by :func:`dwgf.operators.make_operator` (importing it from ``dwgf/operators/__init__.py``
directly would be circular, because the modules import ``register_operator`` from there).
"""

from __future__ import annotations

from dwgf.operators.avgpool import AveragePoolSR
from dwgf.operators.bicubic import BicubicSR
from dwgf.operators.blur import GaussianBlur
from dwgf.operators.compressed_sensing import CompressedSensing
from dwgf.operators.inpainting import BoxInpainting, RandomInpainting

__all__ = ["AveragePoolSR", "BicubicSR", "BoxInpainting", "CompressedSensing", "GaussianBlur", "RandomInpainting"]
