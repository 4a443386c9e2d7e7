"""The latent-prior interface every solver uses.

A latent prior bundles an autoencoder (encoder E, decoder D) and a noise-prediction model
eps(z_t, t) for the variance-preserving forward process

    z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I),

with ``alphas_cumprod[t] = abar_t`` for integer t in [0, num_train_timesteps). The score of the noised
prior is grad log p_t(z_t) = -eps(z_t, t) / sqrt(1 - abar_t).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

#: Stable Diffusion's "scaled_linear" schedule: beta from 0.00085 to 0.012 over 1000 steps.
SD_BETA_START = 0.00085
SD_BETA_END = 0.012
SD_NUM_TRAIN_TIMESTEPS = 1000


def scaled_linear_alphas_cumprod(
    beta_start: float = SD_BETA_START,
    beta_end: float = SD_BETA_END,
    num_train_timesteps: int = SD_NUM_TRAIN_TIMESTEPS,
) -> torch.Tensor:
    """abar_t for the scaled-linear schedule: betas = linspace(sqrt(b0), sqrt(b1), T)^2 (float64).

    >>> round(float(scaled_linear_alphas_cumprod()[999]), 5)
    0.00466
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class LatentPrior(abc.ABC):
    """Interface: ``encode``, ``decode``, ``eps``, ``alphas_cumprod``, ``latent_shape``, ``device``, ``dtype``.

    Subclasses must keep every model weight frozen: gradients flow only to the inputs of ``decode``
    (and ``encode``/``eps`` when a solver differentiates through them, as PSLD does).
    """

    #: Short name recorded in provenance ("stable_diffusion", "gaussian_mixture").
    kind: str = "abstract"
    latent_channels: int = 4
    downsample_factor: int = 8
    num_train_timesteps: int = SD_NUM_TRAIN_TIMESTEPS

    @property
    @abc.abstractmethod
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t for t = 0..num_train_timesteps-1 (float64, on CPU)."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype: ...

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(c, h, w) of the latent for square images of side ``image_size``."""
        if image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {image_size} is not divisible by the prior's downsample factor {self.downsample_factor}"
            )
        side = image_size // self.downsample_factor
        return (self.latent_channels, side, side)

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """E(x): images (B, 3, H, W) in [-1, 1] to latents (B, c, h, w); ``sample`` draws from q(z|x)."""

    def encode_per_image(
        self, x: torch.Tensor, generators: Sequence[torch.Generator], sample: bool = True
    ) -> torch.Tensor:
        """E(x) for B images' rows (B * N, 3, H, W): block b of N rows is encoded with ``generators[b]``.

        Each block draws its encoder sample from its own image's generator exactly as ``encode`` does for a solo
        solve. This default encodes block by block; a prior whose sample is mean + noise overrides it with one
        encoder call.
        """
        if len(generators) == 1 or not sample:
            return self.encode(x, generator=generators[0], sample=sample)
        if x.shape[0] % len(generators):
            raise ValueError(f"x has {x.shape[0]} rows, not a multiple of the {len(generators)} generators")
        blocks = x.chunk(len(generators))
        return torch.cat([self.encode(block, generator=g, sample=sample) for block, g in zip(blocks, generators)])

    @contextlib.contextmanager
    def rows_per_image(self, n: int) -> Iterator[None]:
        """Within this block, the rows of every batch come in consecutive blocks of ``n`` rows per image.

        A hint only (the math is unchanged): a prior may use it to compute each image's rows with kernels of the
        same shapes whatever the number of images in the batch, so that an image's values do not depend, even in
        the last bit, on which other images share its batch (the test bed does, :mod:`dwgf.priors.gaussian_mixture`).
        """
        previous = self._rows_per_image
        self._rows_per_image = n
        try:
            yield
        finally:
            self._rows_per_image = previous

    #: Set by :meth:`rows_per_image` (None: no grouping known).
    _rows_per_image: int | None = None

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D(z): latents to images (B, 3, H, W), not clamped, differentiable with respect to z."""

    @abc.abstractmethod
    def eps(self, z_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Noise prediction eps(z_t, t); ``t`` is an int or a (B,) integer tensor."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable identity of the prior for provenance records."""
        return {"kind": self.kind}
