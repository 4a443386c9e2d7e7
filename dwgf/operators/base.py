"""Base class for linear forward operators y = A x.

Images are float tensors of shape (B, 3, H, W) with values in [-1, 1]. Measurements y have shape
(B, *y_shape). Every operator is linear, so the adjoint is defined by <A x, y> = <x, A^T y>.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch


class LinearOperator(abc.ABC):
    """A linear measurement operator A on images of shape (3, image_size, image_size).

    Subclasses set ``name`` and implement :meth:`forward`, :meth:`adjoint`, :meth:`pseudo_inverse`,
    :attr:`y_shape`, :attr:`measurement_dim` and :meth:`params`.

    ``measurement_dim`` is the number of real measurements d_y. It can be smaller than
    ``prod(y_shape)`` when y is stored as a masked image (inpainting): solvers that follow the
    official DWGF normalisation divide the data-fit term by it (docs/method.md#normalisations).
    """

    name: str = "abstract"

    def __init__(self, image_size: int, channels: int = 3):
        if not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if channels != 3:
            raise ValueError(f"channels must be 3 (RGB images), got {channels!r}")
        self.image_size = image_size
        self.channels = channels

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    @abc.abstractmethod
    def y_shape(self) -> tuple[int, ...]:
        """Shape of one measurement (without the batch dimension)."""

    @property
    def measurement_dim(self) -> int:
        """Number of real measurements d_y (default: every entry of y)."""
        return math.prod(self.y_shape)

    # -- linear maps ------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x for x of shape (B, 3, H, W); returns (B, *y_shape)."""

    @abc.abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y for y of shape (B, *y_shape); returns (B, 3, H, W)."""

    @abc.abstractmethod
    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """A^+ y (minimum-norm least-squares solution, or the documented cheap surrogate)."""

    def zero_unmeasured(self, y: torch.Tensor) -> torch.Tensor:
        """y with every entry that is not a real measurement set to 0 (identity unless y is a masked layout).

        Inpainting stores y as the masked image; :func:`add_measurement_noise` also puts noise into the hole,
        which is not data. Apply this after adding noise so that y has exactly ``measurement_dim`` non-zero
        entries, as the official mean normalisation assumes (docs/method.md#normalisations).
        """
        return y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    # -- previews and serialisation -----------------------------------------------------------------
    def render(self, y: torch.Tensor) -> torch.Tensor:
        """An image (B, 3, h, w) in [-1, 1] that shows y to a person (default: A^+ y, clamped)."""
        return self.pseudo_inverse(y).clamp(-1, 1)

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments such that ``make_operator(name, **params)`` rebuilds A."""

    def check_image(self, x: torch.Tensor, argument: str = "x") -> None:
        """Raise ValueError naming ``argument`` if x is not (B, 3, image_size, image_size)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(
                f"{argument} must have shape (B, {', '.join(map(str, self.x_shape))}) for operator "
                f"{self.name!r}, got {tuple(x.shape)}"
            )

    def check_measurement(self, y: torch.Tensor, argument: str = "y") -> None:
        """Raise ValueError naming ``argument`` if y is not (B, *y_shape)."""
        if y.ndim != 1 + len(self.y_shape) or tuple(y.shape[1:]) != tuple(self.y_shape):
            raise ValueError(
                f"{argument} must have shape (B, {', '.join(map(str, self.y_shape))}) for operator "
                f"{self.name!r}, got {tuple(y.shape)}"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def add_measurement_noise(y_clean: torch.Tensor, sigma_y: float, generator: torch.Generator) -> torch.Tensor:
    """Return y = y_clean + sigma_y * n, n ~ N(0, I) drawn from the explicit ``generator``.

    This is the single place where measurement noise is added. A solve shares one y between all of
    its particles; the official code's per-particle noise is reproduced by calling this once per
    particle (solvers expose that as an explicit flag).
    """
    if sigma_y < 0 or not math.isfinite(sigma_y):
        raise ValueError(f"sigma_y must be finite and >= 0, got {sigma_y!r}")
    noise = torch.randn(y_clean.shape, generator=generator, device=generator.device, dtype=y_clean.dtype)
    return y_clean + sigma_y * noise.to(y_clean.device)
