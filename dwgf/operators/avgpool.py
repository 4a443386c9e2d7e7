"""Super-resolution by block averaging (the paper's ``sr8`` task; docs/operators.md, DDRM ``SuperResolution``).

y = mean of every f × f block: y[c, i, j] = f⁻² Σ_{a,b < f} x[c, f·i + a, f·j + b], i.e. ``avg_pool2d(x, f)``.
The official code flattens y channel-major (d_y = 3 · (H/f)² = 12,288 for f = 8 at 512 px); here y is kept
as the image (B, 3, H/f, W/f), which holds the same values in the same order.

A Aᵀ = f⁻² I, hence Aᵀ y = nearest-neighbour upsampling / f², and the minimum-norm least-squares
solution A⁺ = Aᵀ (A Aᵀ)⁻¹ = f² Aᵀ is plain nearest-neighbour replication (A A⁺ y = y exactly).
"""

from __future__ import annotations

from typing import Any

import torch

from dwgf.operators import register_operator
from dwgf.operators.base import LinearOperator
from dwgf.operators.checks import check_factor, check_floating


def nearest_upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Replicate every pixel of (B, C, h, w) into a ``factor`` × ``factor`` block: (B, C, h·f, w·f)."""
    return y.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


@register_operator("sr_avgpool")
class AveragePoolSR(LinearOperator):
    """Block-average down-sampling by ``factor`` (default 8, the paper's SR×8)."""

    def __init__(self, image_size: int, factor: int = 8):
        super().__init__(image_size)
        self.factor = check_factor(image_size, factor)

    @property
    def y_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.factor
        return (self.channels, side, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_floating(x, "x")
        self.check_image(x, "x")
        b, c, n, f = x.shape[0], self.channels, self.image_size, self.factor
        return x.reshape(b, c, n // f, f, n // f, f).mean(dim=(3, 5))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_floating(y, "y")
        self.check_measurement(y, "y")
        return nearest_upsample(y, self.factor) / self.factor**2

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        check_floating(y, "y")
        self.check_measurement(y, "y")
        return nearest_upsample(y, self.factor)

    def params(self) -> dict[str, Any]:
        return {"factor": self.factor}
