"""Inpainting operators: y = M ⊙ x with a fixed 0/1 keep-mask M shared by the three colour channels.

The official code (docs/operators.md, DDRM ``Inpainting``) returns y as the flattened vector of kept pixels
(d_y = 3 × #kept). Here y is stored as the masked image (B, 3, H, W) with zeros in the hole, which holds
the same values; :attr:`measurement_dim` still reports the official d_y = 3 × #kept, which is what solvers
that follow the official normalisation divide by (docs/method.md#normalisations: d_y = 606,432 at 512 px).

Because M is a 0/1 diagonal matrix, A = Aᵀ = A⁺ = M: the adjoint and the minimum-norm least-squares
solution both just re-apply the mask.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

from dwgf.operators import register_operator
from dwgf.operators.base import LinearOperator
from dwgf.operators.buffers import BufferCache
from dwgf.operators.checks import check_floating, check_int

#: The paper's half-face box at 512 px (docs/operators.md, ``inp_large_box``): rows [150, 450) × columns [250, 450),
#: i.e. rows 150–449 and columns 250–449 inclusive, 300 high × 200 wide.
HALF_FACE_BOX_512 = (150, 450, 250, 450)

BOX_KINDS = ("half_face", "centered")


def _scale_round_half_up(value: int, image_size: int) -> int:
    """round(value · image_size / 512) with halves rounded up, in exact integer arithmetic.

    Python's ``round`` rounds halves to even, which would give the two edges of a box different rounding
    at sizes such as 128 px; floor(v·n/512 + 1/2) = (2·v·n + 512) // 1024 treats both edges alike.
    """
    return (2 * value * image_size + 512) // 1024


def half_face_box(image_size: int) -> tuple[int, int, int, int]:
    """The paper's half-face hole at ``image_size`` px as (row_start, row_end, col_start, col_end), ends exclusive.

    Rule: every edge of the 512-px box rows [150, 450) × cols [250, 450) is scaled by s = image_size / 512 and
    rounded half up, start = ⌊150·s + ½⌋, end = ⌊450·s + ½⌋ (exclusive). At 512 this is the official box
    (rows 150–449, cols 250–449); at 256 rows 75–224, cols 125–224 (docs/operators.md); at 64 rows 19–55,
    cols 31–55 (37 × 25 px).

    >>> half_face_box(512), half_face_box(256), half_face_box(64)
    ((150, 450, 250, 450), (75, 225, 125, 225), (19, 56, 31, 56))
    """
    r0, r1, c0, c1 = (_scale_round_half_up(v, image_size) for v in HALF_FACE_BOX_512)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"image_size={image_size} is too small for the half-face box (the hole would be empty)")
    return r0, r1, c0, c1


def centered_box(image_size: int, box_size: int) -> tuple[int, int, int, int]:
    """A centred square hole of side ``box_size`` (PSLD/DPS style): start = (image_size − box_size) // 2."""
    start = (image_size - box_size) // 2
    return start, start + box_size, start, start + box_size


class MaskedOperator(LinearOperator):
    """A = diag(M) for a keep-mask M of shape (H, W) (True = observed), applied to all 3 channels."""

    def __init__(self, image_size: int):
        super().__init__(image_size)
        self._buffers = BufferCache()
        self._n_kept = 0

    def _set_keep(self, keep: torch.Tensor) -> None:
        n = self.image_size
        if tuple(keep.shape) != (n, n) or keep.dtype != torch.bool:
            raise ValueError(f"keep mask must be a bool tensor of shape {(n, n)}, got {keep.dtype} {tuple(keep.shape)}")
        self._buffers.set("keep", keep.reshape(1, 1, n, n))
        self._n_kept = int(keep.sum())

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return self.x_shape

    @property
    def measurement_dim(self) -> int:
        """d_y = 3 × number of observed pixels (the length of the official flattened y)."""
        return self.channels * self._n_kept

    def keep_mask(self) -> torch.Tensor:
        """The keep-mask M as a bool tensor (1, 1, H, W), True where the pixel is observed."""
        return self._buffers.master("keep").clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_floating(x, "x")
        self.check_image(x, "x")
        return x * self._buffers.get("keep", x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_floating(y, "y")
        self.check_measurement(y, "y")
        return y * self._buffers.get("keep", y)

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """M ⊙ y: the minimum-norm least-squares solution (zero in the hole)."""
        return self.adjoint(y)

    def zero_unmeasured(self, y: torch.Tensor) -> torch.Tensor:
        """M ⊙ y: removes whatever noise :func:`add_measurement_noise` put into the hole."""
        return self.adjoint(y)

    def render(self, y: torch.Tensor) -> torch.Tensor:
        """y with the hole filled by mid-grey (0 in [-1, 1]), whatever noise y carries there."""
        return self.adjoint(y).clamp(-1, 1)


@register_operator("box_inpainting")
class BoxInpainting(MaskedOperator):
    """Box inpainting: a rectangular hole of missing pixels.

    Args:
        image_size: side of the square image.
        box: ``"half_face"`` (default; the paper's task, see :func:`half_face_box`) or ``"centered"``
            (a centred ``box_size`` × ``box_size`` square, the PSLD/DPS-style variant).
        box_size: side of the centred square; required for ``box="centered"``, must be None otherwise.
    """

    def __init__(self, image_size: int, box: str = "half_face", box_size: int | None = None):
        super().__init__(image_size)
        if box not in BOX_KINDS:
            raise ValueError(f"box must be one of {list(BOX_KINDS)}, got {box!r}")
        if box == "half_face":
            if box_size is not None:
                raise ValueError(
                    f"box_size is only used with box='centered'; got box_size={box_size!r} with box={box!r}"
                )
            rows_cols = half_face_box(image_size)
        else:
            if isinstance(box_size, bool) or not isinstance(box_size, Integral) or not 0 < box_size < image_size:
                raise ValueError(
                    f"box_size must be an int in [1, image_size - 1] = [1, {image_size - 1}] for box='centered', "
                    f"got {box_size!r}"
                )
            box_size = int(box_size)
            rows_cols = centered_box(image_size, box_size)
        self.box = box
        self.box_size = box_size
        self.hole = rows_cols
        r0, r1, c0, c1 = rows_cols
        keep = torch.ones(image_size, image_size, dtype=torch.bool)
        keep[r0:r1, c0:c1] = False
        self._set_keep(keep)

    def params(self) -> dict[str, Any]:
        return {"box": self.box, "box_size": self.box_size}


@register_operator("random_inpainting")
class RandomInpainting(MaskedOperator):
    """Random inpainting: a fraction ``p`` of the pixels is missing (same pixels in all 3 channels).

    The missing set is the first ⌊p·H·W + ½⌋ entries of ``torch.randperm(H·W)`` drawn from a CPU generator
    seeded with ``seed`` (the official ``inp_random`` also uses a randperm, with p = 0.8; docs/operators.md), so
    ``make_operator("random_inpainting", n, p=p, seed=seed)`` rebuilds the same mask on any machine.
    """

    def __init__(self, image_size: int, p: float = 0.8, seed: int = 0):
        super().__init__(image_size)
        if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 < float(p) < 1.0:
            raise ValueError(f"p (fraction of missing pixels) must be a number in the open interval (0, 1), got {p!r}")
        self.p = float(p)
        self.seed = check_int(seed, "seed", minimum=0)
        n_pixels = image_size * image_size
        n_missing = math.floor(self.p * n_pixels + 0.5)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        missing = torch.randperm(n_pixels, generator=generator)[:n_missing]
        keep = torch.ones(n_pixels, dtype=torch.bool)
        keep[missing] = False
        self._set_keep(keep.reshape(image_size, image_size))

    def params(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed}
