"""Image files for images in [-1, 1] (README.md ("Conventions"): a PNG stores (x + 1) / 2 quantised to 8 bit).

Ground truths are PNGs, except prior samples of the test bed (``data.source: {kind: prior_samples}``), which
are ``.npy`` float32 arrays (3, H, W): D(z) exactly, neither clamped nor quantised. :func:`load_image` reads
either by the file's suffix; :func:`display_uint8` gives any of them as 8-bit RGB for figures.
Writes are atomic (:func:`dwgf.io.atomic_path`) so a crash never leaves a truncated file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dwgf.io import atomic_path


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> uint8 (H, W, 3): round(clamp((x + 1) / 2, 0, 1) * 255)."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected one image of shape (3, H, W), got {tuple(x.shape)}")
    unit = ((x.detach().to("cpu", torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)
    return (unit * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]: u / 127.5 - 1 (exact inverse of :func:`to_uint8` on levels)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got dtype {array.dtype} shape {array.shape}")
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def save_png(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one image (3, H, W) in [-1, 1] as an 8-bit RGB PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(x), mode="RGB").save(tmp, format="PNG")
    return Path(path)


def load_png(path: str | os.PathLike, image_size: int | None = None) -> torch.Tensor:
    """Read an RGB PNG as float32 (3, H, W) in [-1, 1]; ``image_size`` checks the shape."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist; it is written by `dwgf acquire-images`")
    with Image.open(path) as handle:
        array = np.asarray(handle.convert("RGB"))
    x = from_uint8(array)
    if image_size is not None and tuple(x.shape[1:]) != (image_size, image_size):
        raise ValueError(f"image {str(path)!r} is {x.shape[2]}x{x.shape[1]}, expected {image_size}x{image_size}")
    return x


def save_npy(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one image (3, H, W) as a float32 ``.npy`` array (no pickle), atomically."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected one image of shape (3, H, W), got {tuple(x.shape)}")
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, x.detach().to("cpu", torch.float32).numpy(), allow_pickle=False)
    return Path(path)


def load_image(path: str | os.PathLike, image_size: int | None = None) -> torch.Tensor:
    """A ground-truth image as float32 (3, H, W): a ``.npy`` array (prior samples) or an RGB PNG (:func:`load_png`)."""
    path = Path(path)
    if path.suffix != ".npy":
        return load_png(path, image_size=image_size)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist; it is written by `dwgf acquire-images`")
    array = np.load(path, allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"image {str(path)!r}: expected a float32 (3, H, W) array, got {array.dtype} {array.shape}")
    if image_size is not None and tuple(array.shape[1:]) != (image_size, image_size):
        raise ValueError(
            f"image {str(path)!r} is {array.shape[2]}x{array.shape[1]}, expected {image_size}x{image_size}"
        )
    return torch.from_numpy(array.copy())


def display_uint8(path: str | os.PathLike) -> np.ndarray:
    """Any ground-truth image file as uint8 (H, W, 3) for figures (a ``.npy`` image is clamped and quantised)."""
    return to_uint8(load_image(path))
