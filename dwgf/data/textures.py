"""Synthetic textures: deterministic out-of-distribution test images (``data.source: {kind: textures}``).

The test-bed prior is fitted on crops of eight bundled photographs (:mod:`dwgf.data.bundled`); these images are
not photographs at all, so they test a solver on images its prior was not fitted on (issue 14, question 6). An
id ``"texture-<pattern>-<k>"`` names one image: ``<pattern>`` is one of :data:`PATTERNS` and ``k`` >= 0 draws its
parameters (frequency, orientation, colours) from a NumPy generator seeded with
``derive_seed(0, "texture", pattern, k)``, so the pixels depend on the id and the size only (not on the suite,
its seed or the other ids), like a bundled crop id. Images are uint8 (H, W, 3) arrays (the PNG that
``acquire-images`` writes holds them exactly); :func:`texture_image` maps them to [-1, 1] as ``u / 127.5 - 1``.

Patterns (``u, v`` = pixel coordinates in [0, 1), ``c0, c1`` = two random RGB colours, ``f`` = a random
frequency, ``theta`` = a random angle, ``s(.)`` = ``(1 + sin(.)) / 2``):

* ``stripes``: ``c0 + (c1 - c0) s(2 pi f (u cos theta + v sin theta))``;
* ``checkerboard``: ``c0`` or ``c1`` by the parity of ``floor(f u) + floor(f v)`` (f in 2..8 cells);
* ``rings``: ``c0 + (c1 - c0) s(2 pi f r)``, ``r`` = distance to a random centre;
* ``gradient``: ``c0 + (c1 - c0) (u cos theta + v sin theta)`` rescaled to [0, 1];
* ``noise``: i.i.d. uniform RGB noise (white: no spatial structure at all);
* ``blobs``: white noise smoothed by a box filter of random width (coloured noise).
"""

from __future__ import annotations

import re

import numpy as np

PATTERNS: tuple[str, ...] = ("stripes", "checkerboard", "rings", "gradient", "noise", "blobs")

_ID_PATTERN = re.compile(r"^texture-(?P<pattern>[a-z]+)-(?P<k>\d+)$")


def texture_id(pattern: str, k: int) -> str:
    """The id of texture ``k`` of ``pattern``."""
    return f"texture-{pattern}-{int(k)}"


def parse_texture_id(image_id: str) -> tuple[str, int]:
    """(pattern, k) from a texture id; ``ValueError`` naming the grammar for anything else."""
    match = _ID_PATTERN.match(image_id) if isinstance(image_id, str) else None
    if match is None or match["pattern"] not in PATTERNS:
        raise ValueError(
            f"image id {image_id!r} is not a texture id 'texture-<pattern>-<k>' (e.g. 'texture-stripes-0') with "
            f"<pattern> one of {list(PATTERNS)}"
        )
    return match["pattern"], int(match["k"])


def texture_uint8(image_id: str, size: int) -> np.ndarray:
    """The texture named ``image_id`` as a uint8 (size, size, 3) array (see the module docstring)."""
    from dwgf.seeding import derive_seed  # imports torch: the id grammar above stays torch-free (parse time)

    pattern, k = parse_texture_id(image_id)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    # 1. parameters from the id alone
    rng = np.random.default_rng(derive_seed(0, "texture", pattern, k))
    c0, c1 = rng.uniform(0.0, 1.0, size=3), rng.uniform(0.0, 1.0, size=3)
    theta = rng.uniform(0.0, np.pi)
    v, u = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    # 2. a scalar field t in [0, 1] per pixel (or the RGB image directly for the noise patterns)
    if pattern == "stripes":
        t = 0.5 * (1.0 + np.sin(2.0 * np.pi * rng.uniform(2.0, 8.0) * (u * np.cos(theta) + v * np.sin(theta))))
    elif pattern == "checkerboard":
        cells = int(rng.integers(2, 9))
        t = ((np.floor(cells * u) + np.floor(cells * v)) % 2).astype(np.float64)
    elif pattern == "rings":
        centre = rng.uniform(0.0, 1.0, size=2)
        radius = np.hypot(u - centre[0], v - centre[1])
        t = 0.5 * (1.0 + np.sin(2.0 * np.pi * rng.uniform(2.0, 8.0) * radius))
    elif pattern == "gradient":
        ramp = u * np.cos(theta) + v * np.sin(theta)
        t = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-12)
    elif pattern == "noise":
        return np.round(rng.uniform(0.0, 1.0, size=(size, size, 3)) * 255.0).astype(np.uint8)
    else:  # blobs: white noise averaged over a random (odd) box, then stretched back to [0, 1] per channel
        width = int(rng.integers(1, 5)) * 2 + 1
        noise = rng.uniform(0.0, 1.0, size=(size + width - 1, size + width - 1, 3))
        summed = np.cumsum(np.cumsum(np.pad(noise, ((1, 0), (1, 0), (0, 0))), axis=0), axis=1)
        box = summed[width:, width:] - summed[:-width, width:] - summed[width:, :-width] + summed[:-width, :-width]
        low, high = box.min(axis=(0, 1)), box.max(axis=(0, 1))
        return np.round((box - low) / np.maximum(high - low, 1e-12) * 255.0).astype(np.uint8)
    # 3. blend the two colours
    rgb = c0[None, None, :] + (c1 - c0)[None, None, :] * t[:, :, None]
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def texture_image(image_id: str, size: int):
    """The texture as a float32 (3, size, size) tensor in [-1, 1] (``u / 127.5 - 1``)."""
    import torch

    return torch.from_numpy(texture_uint8(image_id, size).astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
