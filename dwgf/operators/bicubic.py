"""Super-resolution with antialiased bicubic down-sampling (the literature variant; not the paper's task).

The paper's SR task averages 8 × 8 blocks (``sr_avgpool``). The latent-diffusion literature (DPS/PSLD's
MATLAB-like ``Resizer``, deepinv ``DownsamplingMatlab``, torchvision ``antialias=True``) instead uses
bicubic down-sampling with the kernel widened by the factor (docs/operators.md, "sr8_bicubic").

Definition (1-D; the image operator applies the same m × n matrix K along rows and columns, see
:mod:`dwgf.operators.separable`). With the Keys cubic

    k(t) = (a+2)|t|³ − (a+3)|t|² + 1        for |t| ≤ 1,
    k(t) = a|t|³ − 5a|t|² + 8a|t| − 4a      for 1 < |t| < 2,   0 otherwise,   a = −0.5,

output sample i (0-based) sits at input coordinate u_i = (i + ½)·f − ½ (half-pixel centres) and takes
input sample j with weight k((u_i − j)/f), the weights of each row normalised to sum to 1.
Taps that fall outside [0, n) are handled by ``boundary``:

* ``"symmetric"`` (default): mirrored with edge repetition (−1 → 0, n → n−1), as MATLAB ``imresize``;
* ``"renormalize"``: dropped, and the remaining weights renormalised, as PIL and
  ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` (identical to the latter).

Both agree away from the borders. The pseudo-inverse is exact: A⁺ = K⁺ ⊗ K⁺ from the SVD of K
(K has full row rank for every size tested; products of singular values below 1e-12 · s_max² would be
dropped and are counted in ``n_truncated``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dwgf.operators import register_operator
from dwgf.operators.avgpool import nearest_upsample
from dwgf.operators.checks import check_factor
from dwgf.operators.separable import SeparableOperator

BICUBIC_A = -0.5
BOUNDARIES = ("symmetric", "renormalize")
#: Relative cut-off on singular-value products for A⁺; only guards against exact rank deficiency.
PINV_RTOL = 1e-12


def keys_cubic(t: torch.Tensor, a: float = BICUBIC_A) -> torch.Tensor:
    """The Keys cubic convolution kernel k(t) (support (−2, 2)), elementwise."""
    t = t.abs()
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def bicubic_matrix(n: int, factor: int, boundary: str = "symmetric") -> torch.Tensor:
    """The (n / factor) × n float64 matrix of antialiased bicubic down-sampling (see the module docstring)."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {list(BOUNDARIES)}, got {boundary!r}")
    m = n // factor
    half_width = 2 * factor  # support of k(t / f)
    matrix = torch.zeros(m, n, dtype=torch.float64)
    for i in range(m):
        centre = (i + 0.5) * factor - 0.5
        taps = torch.arange(math.floor(centre - half_width), math.ceil(centre + half_width) + 1)
        weights = keys_cubic((centre - taps.to(torch.float64)) / factor)
        if boundary == "renormalize":
            inside = (taps >= 0) & (taps < n)
            taps, weights = taps[inside], weights[inside]
        else:
            # Symmetric reflection with period 2n: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
            taps = taps % (2 * n)
            taps = torch.where(taps >= n, 2 * n - 1 - taps, taps)
        matrix[i].index_add_(0, taps, weights / weights.sum())
    return matrix


@register_operator("sr_bicubic")
class BicubicSR(SeparableOperator):
    """Antialiased bicubic down-sampling by ``factor`` (default 8, to pair with the paper's SR×8).

    Args:
        image_size: side of the square image; must be divisible by ``factor``.
        factor: down-sampling factor.
        boundary: ``"symmetric"`` (MATLAB imresize) or ``"renormalize"`` (PIL / torchvision antialias).
    """

    def __init__(self, image_size: int, factor: int = 8, boundary: str = "symmetric"):
        super().__init__(image_size)
        self.factor = check_factor(image_size, factor)
        self.boundary = boundary
        self._set_matrix(bicubic_matrix(image_size, self.factor, boundary), PINV_RTOL)

    def render(self, y: torch.Tensor) -> torch.Tensor:
        """y itself, enlarged by pixel replication (A⁺ y would show ringing that is not in the data)."""
        self.check_measurement(y, "y")
        return nearest_upsample(y, self.factor).clamp(-1, 1)

    def params(self) -> dict[str, Any]:
        return {"factor": self.factor, "boundary": self.boundary}
