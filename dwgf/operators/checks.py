"""Argument checks shared by the operators; every error names the offending argument."""

from __future__ import annotations

from numbers import Integral, Real

import torch


def check_floating(tensor: torch.Tensor, argument: str) -> None:
    """Raise ValueError naming ``argument`` unless ``tensor`` is a real floating-point tensor."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{argument} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ValueError(f"{argument} must be a float32/float64 tensor, got dtype {tensor.dtype}")


def check_int(value: object, argument: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools rejected), else ValueError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive_real(value: object, argument: str) -> float:
    """``value`` as a finite float > 0, else ValueError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < float("inf"):
        raise ValueError(f"{argument} must be a finite number > 0, got {value!r}")
    return float(value)


def check_factor(image_size: int, factor: object) -> int:
    """A down-sampling ``factor`` that divides ``image_size``, else ValueError naming both."""
    factor = check_int(factor, "factor")
    if image_size % factor != 0:
        raise ValueError(
            f"image_size={image_size} is not divisible by factor={factor}; choose a factor that divides image_size"
        )
    return factor
