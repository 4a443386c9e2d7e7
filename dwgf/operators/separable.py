"""Separable linear operators: the same 1-D matrix applied along rows and along columns.

For a 1-D matrix K (m × n) the operator maps each channel X (n × n) to Y = K X Kᵀ, i.e. A = K ⊗ K on the
row-major vectorised channel. Everything then follows from the thin SVD K = U diag(s) Vᵀ:

* adjoint: Aᵀ Y = Kᵀ Y K (exact, so the dot test holds to rounding);
* singular values of A are the products s_i s_j, with singular vectors u_i ⊗ u_j and v_i ⊗ v_j;
* pseudo-inverse: A⁺ Y = V [(Uᵀ Y U) ⊘ (s sᵀ)] Vᵀ, keeping only the products s_i s_j > rtol · s_max².
  With nothing truncated this is exactly kron(K⁺, K⁺) = (K ⊗ K)⁺; with truncation it is the truncated-SVD
  pseudo-inverse of A, the convention of the official SVD operators ("singular values < 3e-2 zeroed",
  docs/operators.md), but with a relative threshold so that it does not depend on the kernel's scale.
"""

from __future__ import annotations

import torch

from dwgf.operators.base import LinearOperator
from dwgf.operators.buffers import BufferCache
from dwgf.operators.checks import check_floating


class SeparableOperator(LinearOperator):
    """A = K ⊗ K per channel, for a float64 1-D matrix K of shape (m, image_size); y has shape (3, m, m)."""

    def __init__(self, image_size: int):
        super().__init__(image_size)
        self._buffers = BufferCache()
        self._m = 0

    def _set_matrix(self, matrix: torch.Tensor, pinv_rtol: float) -> None:
        """Store K and the pieces of its SVD that :meth:`pseudo_inverse` needs."""
        if matrix.ndim != 2 or matrix.shape[1] != self.image_size:
            raise ValueError(f"1-D matrix must have shape (m, {self.image_size}), got {tuple(matrix.shape)}")
        matrix = matrix.to(torch.float64)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        products = s[:, None] * s[None, :]
        keep = products > pinv_rtol * s.max() ** 2
        self._buffers.set("K", matrix)
        self._buffers.set("U", u)
        self._buffers.set("V", vh.transpose(0, 1))
        self._buffers.set("W", torch.where(keep, 1.0 / products, torch.zeros_like(products)))
        self._m = matrix.shape[0]
        self.singular_values_1d = s
        self.n_truncated = int((~keep).sum())

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return (self.channels, self._m, self._m)

    def matrix_1d(self) -> torch.Tensor:
        """The 1-D matrix K (float64, CPU)."""
        return self._buffers.master("K").clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Y = K X Kᵀ for every channel."""
        check_floating(x, "x")
        self.check_image(x, "x")
        k = self._buffers.get("K", x)
        return k @ x @ k.transpose(0, 1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """X = Kᵀ Y K for every channel."""
        check_floating(y, "y")
        self.check_measurement(y, "y")
        k = self._buffers.get("K", y)
        return k.transpose(0, 1) @ y @ k

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """X = V [(Uᵀ Y U) ⊘ (s sᵀ)] Vᵀ with truncated products zeroed (see the module docstring)."""
        check_floating(y, "y")
        self.check_measurement(y, "y")
        u, v, w = (self._buffers.get(name, y) for name in ("U", "V", "W"))
        coefficients = (u.transpose(0, 1) @ y @ u) * w
        return v @ coefficients @ v.transpose(0, 1)
