"""Compressed sensing with a seeded Gaussian matrix: y = Φ x, Φ ∈ R^{m × d}, d = 3·H·W (not a paper task).

x is flattened in PyTorch's (C, H, W) row-major order; m = ⌊ratio · d + ½⌋ rows; entries Φ_ij ~ N(0, 1/m), so
E‖Φx‖² = ‖x‖². Φ is defined column block by column block: blocks of ``block_columns(m)`` columns are drawn
in order with ``torch.randn`` from one CPU float64 generator seeded with ``seed`` and scaled by m^{-1/2}.
The same numbers are therefore produced whether Φ is kept in memory (when m·d ≤ ``max_cached_entries``)
or regenerated block by block on every call (matrix-free), on any device.

Adjoint Φᵀ y. Pseudo-inverse Φ⁺ y = Φᵀ (Φ Φᵀ)⁻¹ y (Φ has full row rank almost surely when m ≤ d), via a
Cholesky factor of the m × m Gram matrix computed once in float64 and cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from numbers import Real
from typing import Any

import torch

from dwgf.operators import register_operator
from dwgf.operators.base import LinearOperator
from dwgf.operators.buffers import BufferCache
from dwgf.operators.checks import check_floating, check_int

#: Entries per generated column block (part of Φ's definition: it fixes the block boundaries).
BLOCK_ENTRIES = 1 << 22
#: Largest m for which the pseudo-inverse's m × m Gram matrix is formed (8192² float64 = 512 MiB).
MAX_PINV_ROWS = 8192


def block_columns(m: int) -> int:
    """Number of columns of Φ per generated block for m rows."""
    return max(1, BLOCK_ENTRIES // m)


@register_operator("compressed_sensing")
class CompressedSensing(LinearOperator):
    """y = Φ x with a seeded Gaussian Φ of ⌊ratio · 3HW + ½⌋ rows (see the module docstring).

    Args:
        image_size: side of the square image.
        ratio: measurements per unknown, 0 < ratio ≤ 1. At 64 px every ratio up to ~0.45 keeps Φ in memory
            (0.25: 3072 × 12288 float64, 302 MB); larger Φ are regenerated on every call, ~10x the CPU of a
            cached product.
        seed: seed of Φ.
    """

    #: Φ is kept in memory (per device and dtype) when m·d is at most this; otherwise it is regenerated.
    # 2^26 float64 entries = 512 MB. Regenerating Φ costs ~10x a cached product: 1378 vs 133 CPU ms per forward +
    # backward of 16 vectors at ratio 0.25, 64 px, one thread (the research suite's CS 25 % task).
    max_cached_entries: int = 1 << 26

    def __init__(self, image_size: int, ratio: float = 0.1, seed: int = 0):
        super().__init__(image_size)
        if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"ratio (measurements per unknown) must be a number in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)
        self.seed = check_int(seed, "seed", minimum=0)
        self.d = math.prod(self.x_shape)
        self.m = math.floor(self.ratio * self.d + 0.5)
        if self.m < 1:
            raise ValueError(f"ratio={ratio!r} gives no measurements at image_size={image_size}; increase ratio")
        self._buffers = BufferCache()

    @property
    def y_shape(self) -> tuple[int]:
        return (self.m,)

    # -- Φ ------------------------------------------------------------------------------------------
    def _blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first column, Φ[:, first : first + width]) in order, float64 on the CPU."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        width = block_columns(self.m)
        scale = 1.0 / math.sqrt(self.m)
        for start in range(0, self.d, width):
            stop = min(start + width, self.d)
            yield start, torch.randn(self.m, stop - start, generator=generator, dtype=torch.float64) * scale

    def matrix(self) -> torch.Tensor:
        """Φ as a dense float64 (m, d) tensor (assembled from the blocks)."""
        return torch.cat([block for _, block in self._blocks()], dim=1)

    def _cached_matrix(self, like: torch.Tensor) -> torch.Tensor | None:
        if self.m * self.d > self.max_cached_entries:
            return None
        if not self._buffers.has("phi"):
            self._buffers.set("phi", self.matrix())
        return self._buffers.get("phi", like)

    # -- linear maps --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_floating(x, "x")
        self.check_image(x, "x")
        flat = x.reshape(x.shape[0], self.d)
        phi = self._cached_matrix(x)
        if phi is not None:
            return flat @ phi.transpose(0, 1)
        y = flat.new_zeros(x.shape[0], self.m)
        for start, block in self._blocks():
            block = block.to(device=x.device, dtype=x.dtype)
            y = y + flat[:, start : start + block.shape[1]] @ block.transpose(0, 1)
        return y

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_floating(y, "y")
        self.check_measurement(y, "y")
        phi = self._cached_matrix(y)
        if phi is not None:
            flat = y @ phi
        else:
            flat = torch.cat([y @ block.to(device=y.device, dtype=y.dtype) for _, block in self._blocks()], dim=1)
        return flat.reshape(y.shape[0], *self.x_shape)

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Φᵀ (Φ Φᵀ)⁻¹ y, the minimum-norm least-squares solution."""
        check_floating(y, "y")
        self.check_measurement(y, "y")
        if not self._buffers.has("gram_cholesky"):
            if self.m > MAX_PINV_ROWS:
                raise ValueError(
                    f"pseudo_inverse needs the {self.m} × {self.m} Gram matrix; at most {MAX_PINV_ROWS} rows are "
                    f"supported: lower ratio or image_size"
                )
            gram = torch.zeros(self.m, self.m, dtype=torch.float64)
            for _, block in self._blocks():
                gram += block @ block.transpose(0, 1)
            self._buffers.set("gram_cholesky", torch.linalg.cholesky(gram))
        chol = self._buffers.get("gram_cholesky", y)
        coefficients = torch.cholesky_solve(y.transpose(0, 1), chol).transpose(0, 1)
        return self.adjoint(coefficients)

    def params(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "seed": self.seed}
