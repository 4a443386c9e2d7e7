"""Gaussian deblurring operator: y = k ∗ x, a normalised Gaussian kernel, y the same size as x.

The kernel is separable, k(a, b) = g(a) g(b) with g(t) ∝ exp(−t² / (2σ²)) for t = −r … r,
r = (kernel_size − 1) / 2, normalised so that Σ g = 1. The literature setting is kernel_size = 61,
σ = 3 (DPS/PSLD/ReSample configs, docs/operators.md; the default here). The official DWGF code's
``deblur_gauss`` is a different, nearly uniform 4-tap kernel (docs/operators.md) and is not reproduced.

Boundary (``padding``):

* ``"circular"`` (default): periodic extension, y[i] = Σ_t g[t] x[(i + t − r) mod n] along each axis;
* ``"reflect"``: mirror without edge repetition (torch ``F.pad(mode="reflect")``), needs r < n.

Either way the 1-D map is an n × n matrix G and A = G ⊗ G per channel (:mod:`dwgf.operators.separable`):
the adjoint Gᵀ Y G is exact (for the circular case it is the correlation with the flipped kernel). The
pseudo-inverse is the truncated-SVD one: singular-value products s_i s_j ≤ ``pinv_rtol`` · s_max² are
dropped (default 3e-2, the official SVD operators' cut-off, docs/operators.md). For circular padding the s_i are
the moduli of the DFT of the wrapped kernel, so this is the FFT inverse filter with the same threshold;
for reflect padding it is exact where the brief suggested conjugate gradients, and costs one n × n SVD.
"""

from __future__ import annotations

from typing import Any

import torch

from dwgf.operators import register_operator
from dwgf.operators.checks import check_int, check_positive_real
from dwgf.operators.separable import SeparableOperator

PADDINGS = ("circular", "reflect")


def gaussian_taps(kernel_size: int, sigma: float) -> torch.Tensor:
    """g[t] ∝ exp(−(t − r)² / (2σ²)), t = 0 … kernel_size − 1, normalised to sum 1 (float64)."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def convolution_matrix(taps: torch.Tensor, n: int, padding: str) -> torch.Tensor:
    """The n × n matrix G with (G x)[i] = Σ_t taps[t] x[bnd(i + t − r)], bnd = ``padding``'s index map."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
    r = (taps.numel() - 1) // 2
    rows = torch.arange(n)[:, None]
    cols = rows + torch.arange(taps.numel())[None, :] - r
    if padding == "circular":
        cols = cols % n
    else:
        cols = torch.where(cols < 0, -cols, cols)
        cols = torch.where(cols >= n, 2 * (n - 1) - cols, cols)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((rows.expand_as(cols), cols), taps.expand_as(cols).clone(), accumulate=True)
    return matrix


@register_operator("gaussian_blur")
class GaussianBlur(SeparableOperator):
    """Gaussian blur with an odd ``kernel_size`` and width ``sigma`` (pixels); see the module docstring.

    Args:
        image_size: side of the square image.
        kernel_size: odd number of taps per axis, at most ``image_size`` (circular) or
            ``2 * image_size - 1`` (reflect, so that the mirror stays inside the image).
        sigma: standard deviation of the Gaussian in pixels.
        padding: ``"circular"`` or ``"reflect"``.
        pinv_rtol: relative singular-value cut-off of the pseudo-inverse.
    """

    def __init__(
        self,
        image_size: int,
        kernel_size: int = 61,
        sigma: float = 3.0,
        padding: str = "circular",
        pinv_rtol: float = 3e-2,
    ):
        super().__init__(image_size)
        kernel_size = check_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that the kernel has a centre, got {kernel_size}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
        limit = image_size if padding == "circular" else 2 * image_size - 1
        if kernel_size > limit:
            raise ValueError(
                f"kernel_size={kernel_size} is too large for image_size={image_size} with padding={padding!r} "
                f"(at most {limit})"
            )
        self.kernel_size = kernel_size
        self.sigma = check_positive_real(sigma, "sigma")
        self.padding = padding
        self.pinv_rtol = check_positive_real(pinv_rtol, "pinv_rtol")
        taps = gaussian_taps(kernel_size, self.sigma)
        self._set_matrix(convolution_matrix(taps, image_size, padding), self.pinv_rtol)

    def kernel_2d(self) -> torch.Tensor:
        """The (kernel_size, kernel_size) float64 kernel g gᵀ (sums to 1)."""
        taps = gaussian_taps(self.kernel_size, self.sigma)
        return taps[:, None] * taps[None, :]

    def params(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "sigma": self.sigma,
            "padding": self.padding,
            "pinv_rtol": self.pinv_rtol,
        }
