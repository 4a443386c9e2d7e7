"""Real images that ship inside installed packages: random square RGB crops from scikit-image's colour images.

The exact-posterior test bed (``docs/testbed.md``, "Set-up that was measured") is
fitted on random 64×64 crops of eight colour photographs bundled with scikit-image, so the whole test bed
runs offline. Every crop is named by an id that encodes its source and position,
``"<image>-r<row>-c<col>"`` (top-left corner, 0-based, e.g. ``"astronaut-r0123-c0456"``), and
:func:`load_crop` rebuilds the crop from the id alone. Pixels are mapped from uint8 to [-1, 1] as
``x = u / 127.5 - 1`` (the project's image convention, ``README.md ("Conventions")``).

Crop positions are drawn without replacement (so ids are unique) from one :class:`torch.Generator` per
source image, seeded with ``derive_seed(seed, "bundled_crops", image, size)``: the crops of one image do
not depend on which other images are used.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dwgf.data.crop_ids import SOURCE_IMAGES, crop_id, parse_crop_id
from dwgf.seeding import derive_seed, make_generator

__all__ = ["SOURCE_IMAGES", "bundled_crops", "crop_id", "load_crop", "load_crops", "parse_crop_id", "source_image",
           "train_test_split"]  # fmt: skip


@functools.cache
def source_image(name: str) -> np.ndarray:
    """The bundled uint8 image ``name`` as a read-only (H, W, 3) array (loaded once per process).

    Raises ``ValueError`` for a name outside :data:`SOURCE_IMAGES` and ``RuntimeError`` when
    scikit-image cannot load it offline (never skipped silently).
    """
    if name not in SOURCE_IMAGES:
        raise ValueError(f"unknown bundled image {name!r}; choose one of {list(SOURCE_IMAGES)}")
    import skimage
    import skimage.data

    try:
        array = np.asarray(getattr(skimage.data, name)())
    except Exception as error:  # any loader failure (missing file, pooch needing a download) must stop us
        raise RuntimeError(
            f"scikit-image {skimage.__version__} could not load its bundled image {name!r} offline "
            f"({type(error).__name__}: {error}); reinstall scikit-image (>= 0.22) so that its data files are present"
        ) from error
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise RuntimeError(
            f"bundled image {name!r} should be a uint8 (H, W, 3) RGB array, got dtype {array.dtype} shape "
            f"{array.shape}; the scikit-image version {skimage.__version__} changed it"
        )
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")


def _to_tensor(patch: np.ndarray) -> torch.Tensor:
    """uint8 (h, w, 3) -> float32 (3, h, w) in [-1, 1]."""
    return torch.from_numpy(np.array(patch, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def load_crop(image_id: str, size: int = 64) -> torch.Tensor:
    """Rebuild the crop named ``image_id``: float32 (3, size, size) in [-1, 1]."""
    _check_size(size)
    name, row, col = parse_crop_id(image_id)
    array = source_image(name)
    height, width = array.shape[:2]
    if row + size > height or col + size > width:
        raise ValueError(
            f"image_id {image_id!r}: a {size}x{size} crop at row {row}, col {col} does not fit in {name!r} "
            f"({height}x{width})"
        )
    return _to_tensor(array[row : row + size, col : col + size])


def load_crops(image_ids: list[str], size: int = 64) -> torch.Tensor:
    """Stack :func:`load_crop` for each id: float32 (n, 3, size, size)."""
    if len(image_ids) == 0:
        raise ValueError("image_ids is empty; pass at least one crop id")
    return torch.stack([load_crop(image_id, size) for image_id in image_ids])


def bundled_crops(
    n_per_image: int, size: int = 64, seed: int = 0, images: tuple[str, ...] | list[str] = SOURCE_IMAGES
) -> tuple[torch.Tensor, list[str]]:
    """``n_per_image`` distinct random size×size crops of each bundled image.

    Returns ``(images, ids)``: float32 (n, 3, size, size) in [-1, 1] with n = n_per_image · len(images),
    grouped by source image in the order of ``images``, and the matching crop ids.
    """
    if not isinstance(n_per_image, int) or isinstance(n_per_image, bool) or n_per_image <= 0:
        raise ValueError(f"n_per_image must be a positive int, got {n_per_image!r}")
    _check_size(size)
    if len(images) == 0 or len(set(images)) != len(images):
        raise ValueError(
            f"images must be a non-empty list of distinct names from {list(SOURCE_IMAGES)}, got {images!r}"
        )
    crops, ids = [], []
    for name in images:
        array = source_image(name)
        height, width = array.shape[:2]
        n_rows, n_cols = height - size + 1, width - size + 1
        if n_rows <= 0 or n_cols <= 0:
            raise ValueError(f"size {size} is larger than bundled image {name!r} ({height}x{width})")
        if n_per_image > n_rows * n_cols:
            raise ValueError(
                f"n_per_image={n_per_image} exceeds the {n_rows * n_cols} distinct {size}x{size} crops of {name!r}"
            )
        generator = make_generator(derive_seed(seed, "bundled_crops", name, size))
        # A permutation of all corner positions gives distinct crops; its length is at most ~1.8 M (retina).
        positions = torch.randperm(n_rows * n_cols, generator=generator)[:n_per_image].tolist()
        for position in positions:
            row, col = divmod(position, n_cols)
            crops.append(_to_tensor(array[row : row + size, col : col + size]))
            ids.append(crop_id(name, row, col))
    return torch.stack(crops), ids


def train_test_split(ids: list[str], n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``ids`` at random into (train, test) with ``len(test) == n_test``; both keep the input order.

    The permutation comes from a generator seeded with ``derive_seed(seed, "train_test_split")``.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be distinct; got duplicates")
    if not isinstance(n_test, int) or isinstance(n_test, bool) or not 0 <= n_test <= len(ids):
        raise ValueError(f"n_test must be an int in [0, {len(ids)}] (the number of ids), got {n_test!r}")
    generator = make_generator(derive_seed(seed, "train_test_split"))
    test_positions = set(torch.randperm(len(ids), generator=generator)[:n_test].tolist())
    train = [image_id for i, image_id in enumerate(ids) if i not in test_positions]
    test = [image_id for i, image_id in enumerate(ids) if i in test_positions]
    return train, test
