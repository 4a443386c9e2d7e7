"""Exact-posterior test bed: a linear autoencoder with a Gaussian-mixture latent prior.

Why it exists (``docs/testbed.md``): with a linear decoder and a Gaussian-mixture
latent, both the noised prior p_t and the posterior p(z | y) of a linear inverse problem are available in
closed form, so every solver can be scored against the exact answer.

Model (latent dimension d = latent_channels · (image_size / 8)², laid out (c, h, w) like SD latents):

* decoder ``D(z) = W · diag(s) · z + b`` with W (3·H·W, d) the top-d PCA directions of the training
  crops (orthonormal columns), b their mean and s the per-direction std of the PCA coefficients, so the
  latent is **whitened** (unit variance, like SD's scaled latents; docs/testbed.md "Findings" 1);
* encoder ``E(x) = diag(1/s) · Wᵀ (x − b)`` (exact left inverse of D), plus ``sigma_enc · n``, n ~ N(0, I),
  when ``sample=True`` and ``sigma_enc > 0``;
* latent prior ``p_0(z) = Σ_k π_k N(z; μ_k, Σ_k)``, fitted by EM (scikit-learn ``GaussianMixture``, full
  covariances) on the whitened PCA codes;
* noised prior under the variance-preserving process z_t = √ā z_0 + √(1−ā) ε with SD's scaled-linear
  ā_t: ``p_t = Σ_k π_k N(√ā μ_k, ā Σ_k + (1−ā) I)``, and the exact noise prediction
  ``eps(z_t, t) = −√(1−ā) ∇ log p_t(z_t)`` (the convention of :mod:`dwgf.priors.base`).

With Σ_k = U_k Λ_k U_kᵀ (one eigendecomposition per component, done once),
ā Σ_k + (1−ā) I = U_k (ā Λ_k + (1−ā)) U_kᵀ is a diagonal rescale in component k's fixed eigenbasis, so ``eps``
costs two products per image with the stacked basis [U_1 ... U_K] (d × K d, no per-step factorisation and no
loop over components). All mixture arithmetic runs in float64 and is cast back to the caller's dtype.

The exact posterior for y = A D(z) + noise is :meth:`GaussianMixturePrior.posterior`
(:class:`GaussianMixturePosterior`).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dwgf.io import atomic_path, atomic_write_json, sha256_file
from dwgf.priors.base import LatentPrior, scaled_linear_alphas_cumprod
from dwgf.seeding import make_generator

CONFIG_FILE = "testbed_prior.json"
TENSORS_FILE = "testbed_prior.safetensors"
SCHEMA = "dwgf.testbed_prior/1"

#: Largest number of observed measurements for which Σ_y = σ_y² I + σ_dec² A Aᵀ is formed densely.
MAX_DENSE_MEASUREMENTS = 4096

_TENSOR_KEYS = (
    "decoder.W",
    "decoder.s",
    "decoder.b",
    "mixture.weights",
    "mixture.means",
    "mixture.covariances",
)
_LOG_2PI = math.log(2.0 * math.pi)


def _as_dtype(dtype: torch.dtype | str | None, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
        return getattr(torch, dtype.removeprefix("torch."))
    raise ValueError(f"dtype must be a torch.dtype or a name like 'float32', got {dtype!r}")


class GaussianMixturePrior(LatentPrior):
    """Linear whitened autoencoder + K-component full-covariance Gaussian-mixture latent prior.

    Build it with :meth:`fit` (PCA + EM on training crops), :meth:`load` (a saved folder) or
    :meth:`from_spec`; the constructor takes the parameters directly (float64 master copies are kept on
    the CPU), which also allows small toy priors (e.g. ``image_size=8, latent_channels=2`` gives d = 2).

    Args:
        W: (3·image_size², d) decoder directions with orthonormal columns.
        s: (d,) positive latent scales (std of the PCA coefficients).
        b: (3·image_size²,) image mean.
        weights: (K,) mixture weights π_k (positive, summing to 1).
        means: (K, d) component means μ_k (whitened units).
        covariances: (K, d, d) symmetric positive-definite Σ_k.
        image_size: side of the square RGB images; must be a multiple of 8.
        latent_channels: c of the (c, image_size/8, image_size/8) latent.
        sigma_enc: std of the encoder noise added when ``encode(..., sample=True)``.
        config: JSON-serialisable record of how the parameters were made (saved by :meth:`save`).
        device, dtype: where and in which dtype ``encode``/``decode`` run (``eps`` computes in float64).
    """

    kind = "gaussian_mixture"

    def __init__(
        self,
        W: torch.Tensor,
        s: torch.Tensor,
        b: torch.Tensor,
        weights: torch.Tensor,
        means: torch.Tensor,
        covariances: torch.Tensor,
        *,
        image_size: int,
        latent_channels: int = 4,
        sigma_enc: float = 0.0,
        config: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ):
        if not isinstance(image_size, int) or image_size <= 0 or image_size % self.downsample_factor:
            raise ValueError(f"image_size must be a positive multiple of {self.downsample_factor}, got {image_size!r}")
        if not isinstance(latent_channels, int) or latent_channels <= 0:
            raise ValueError(f"latent_channels must be a positive int, got {latent_channels!r}")
        if not (math.isfinite(sigma_enc) and sigma_enc >= 0):
            raise ValueError(f"sigma_enc must be finite and >= 0, got {sigma_enc!r}")
        self.image_size = image_size
        self.latent_channels = latent_channels
        self.sigma_enc = float(sigma_enc)
        self.config = dict(config or {})
        d = self.latent_dim
        n_pixels = 3 * image_size * image_size
        master = {
            "decoder.W": W,
            "decoder.s": s,
            "decoder.b": b,
            "mixture.weights": weights,
            "mixture.means": means,
            "mixture.covariances": covariances,
        }
        master = {
            key: torch.as_tensor(value).detach().to("cpu", torch.float64).contiguous() for key, value in master.items()
        }
        K = master["mixture.weights"].shape[0] if master["mixture.weights"].ndim == 1 else -1
        expected = {
            "decoder.W": (n_pixels, d),
            "decoder.s": (d,),
            "decoder.b": (n_pixels,),
            "mixture.weights": (K,),
            "mixture.means": (K, d),
            "mixture.covariances": (K, d, d),
        }
        for key, shape in expected.items():
            if tuple(master[key].shape) != shape or K <= 0:
                raise ValueError(
                    f"{key} must have shape {shape} (image_size={image_size}, latent_channels={latent_channels}, "
                    f"d={d}, K={K}), got {tuple(master[key].shape)}"
                )
            if not torch.isfinite(master[key]).all():
                raise ValueError(f"{key} contains non-finite values")
        if not (master["decoder.s"] > 0).all():
            raise ValueError("decoder.s (latent scales) must be strictly positive")
        weights64 = master["mixture.weights"]
        if not (weights64 > 0).all() or abs(float(weights64.sum()) - 1.0) > 1e-8:
            raise ValueError(f"mixture.weights must be positive and sum to 1, got sum {float(weights64.sum())!r}")
        gram = master["decoder.W"].T @ master["decoder.W"]
        if not torch.allclose(gram, torch.eye(d, dtype=torch.float64), atol=1e-8):
            raise ValueError("decoder.W must have orthonormal columns (Wᵀ W = I to 1e-8)")
        covs = master["mixture.covariances"]
        if not torch.allclose(covs, covs.mT, atol=1e-10, rtol=1e-10):
            raise ValueError("mixture.covariances must be symmetric")
        self._master = master
        # One eigendecomposition per component: Σ_k = U_k diag(λ_k) U_kᵀ (see the module docstring).
        eigvals, eigvecs = torch.linalg.eigh(covs)
        if not (eigvals > 0).all():
            raise ValueError(
                f"mixture.covariances must be positive definite; smallest eigenvalue {float(eigvals.min())}"
            )
        self._eigvals, self._eigvecs = eigvals, eigvecs
        self._alphas_cumprod = scaled_linear_alphas_cumprod()
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self.to(device=device if device is not None else "cpu", dtype=_as_dtype(dtype, torch.float32))

    # -- interface ---------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """d = latent_channels · (image_size / 8)²."""
        return self.latent_channels * (self.image_size // self.downsample_factor) ** 2

    @property
    def n_components(self) -> int:
        return int(self._master["mixture.weights"].shape[0])

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def parameters64(self) -> dict[str, torch.Tensor]:
        """The float64 CPU master tensors (``decoder.W``, ``decoder.s``, ``decoder.b``, ``mixture.*``)."""
        return dict(self._master)

    def mixture_components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pi (K,), mu (K, d), L (K, d, d)) of the clean prior; L_k = lower Cholesky factor of Sigma_k^-1 (float64)."""
        precisions = self._eigvecs @ torch.diag_embed(1.0 / self._eigvals) @ self._eigvecs.mT
        chol = torch.linalg.cholesky(0.5 * (precisions + precisions.mT))
        return self._master["mixture.weights"], self._master["mixture.means"], chol

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> GaussianMixturePrior:
        """Move encode/decode to ``device`` in ``dtype`` (the mixture stays float64 on that device); returns self."""
        device = torch.device(device) if device is not None else self._device
        dtype = _as_dtype(dtype, self._dtype)
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self._device, self._dtype = device, dtype
        master = self._master
        self._W = master["decoder.W"].to(device, dtype)
        self._s = master["decoder.s"].to(device, dtype)
        self._b = master["decoder.b"].to(device, dtype)
        K, d = self._eigvecs.shape[0], self.latent_dim
        # Uᵀ (K d, d) with U = [U_1 ... U_K] (d, K d): z ↦ z U gives every U_kᵀ z in one product; U_kᵀ μ_k is
        # precomputed once.
        eigvecs_cat = self._eigvecs.permute(1, 0, 2).reshape(d, K * d)
        self._mix = {
            "log_weights": master["mixture.weights"].log().to(device),
            "eigvals": self._eigvals.to(device),
            "eigvecs_cat_t": eigvecs_cat.T.contiguous().to(device),
            "projected_means": (self._eigvecs.mT @ master["mixture.means"][:, :, None])[:, :, 0].to(device),
        }
        return self

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(c, h, w); the prior only models images of its own ``image_size``."""
        if image_size != self.image_size:
            raise ValueError(
                f"image_size {image_size} does not match the test-bed prior, which was fitted on "
                f"{self.image_size}x{self.image_size} images"
            )
        return super().latent_shape(image_size)

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for key in _TENSOR_KEYS:
            digest.update(key.encode())
            digest.update(self._master[key].numpy().tobytes())
        return {
            "kind": self.kind,
            "image_size": self.image_size,
            "latent_channels": self.latent_channels,
            "latent_dim": self.latent_dim,
            "n_components": self.n_components,
            "sigma_enc": self.sigma_enc,
            "parameters_sha256": digest.hexdigest(),
        }

    # -- autoencoder -------------------------------------------------------------------------------
    def _flat_latent(self, z: torch.Tensor, argument: str) -> torch.Tensor:
        shape = self.latent_shape(self.image_size)
        if z.ndim != 4 or tuple(z.shape[1:]) != shape:
            raise ValueError(f"{argument} must have shape (B, {', '.join(map(str, shape))}), got {tuple(z.shape)}")
        return z.reshape(z.shape[0], self.latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D(z) = W diag(s) z + b, as images (B, 3, H, W) in the prior's dtype; differentiable in z."""
        flat = self._flat_latent(z, "z").to(self._device, self._dtype)
        x = self._row_product(flat * self._s, self._W, transposed=True) + self._b
        return x.reshape(z.shape[0], 3, self.image_size, self.image_size)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """E(x) = diag(1/s) Wᵀ (x − b) (+ sigma_enc · n with n from ``generator`` when ``sample``)."""
        expected = (3, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        flat = x.reshape(x.shape[0], -1).to(self._device, self._dtype)
        z = self._row_product(flat - self._b, self._W, transposed=False) / self._s
        if sample and self.sigma_enc > 0:
            if generator is None:
                raise ValueError("encode(sample=True) with sigma_enc > 0 needs an explicit torch.Generator `generator`")
            z = z + self.sigma_enc * self._encoder_noise(z.shape, [generator])
        return z.reshape(x.shape[0], *self.latent_shape(self.image_size))

    def encode_per_image(
        self, x: torch.Tensor, generators: Sequence[torch.Generator], sample: bool = True
    ) -> torch.Tensor:
        """E(x) for B images' row blocks in one product; block b's encoder noise comes from ``generators[b]``."""
        if len(generators) == 1 or not sample or self.sigma_enc == 0:
            return self.encode(x, generator=generators[0], sample=sample)
        if x.shape[0] % len(generators):
            raise ValueError(f"x has {x.shape[0]} rows, not a multiple of the {len(generators)} generators")
        z = self.encode(x, sample=False).reshape(x.shape[0], self.latent_dim)
        z = z + self.sigma_enc * self._encoder_noise((x.shape[0] // len(generators), self.latent_dim), generators)
        return z.reshape(x.shape[0], *self.latent_shape(self.image_size))

    def _encoder_noise(self, shape: tuple[int, ...], generators: Sequence[torch.Generator]) -> torch.Tensor:
        """N(0, I) of ``shape`` per generator (float64 on the generator's device), stacked, in the prior's dtype."""
        draws = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float64) for g in generators]
        noise = draws[0] if len(draws) == 1 else torch.cat([d.to(self._device) for d in draws])
        return noise.to(self._device, self._dtype)

    def _image_groups(self, rows: int) -> int:
        """Number of images in a batch of ``rows`` rows under :meth:`rows_per_image` (1 without the hint)."""
        n = self._rows_per_image
        return rows // n if n and rows % n == 0 else 1

    def _row_product(self, rows: torch.Tensor, matrix: torch.Tensor, transposed: bool) -> torch.Tensor:
        """``rows @ matrix.T`` (``transposed``) or ``rows @ matrix``, one product per image (:meth:`rows_per_image`).

        Every image's rows go through a product of the same shape whatever the batch, so its values do not depend
        on the other images (a single product over all rows picks BLAS kernels by the total row count: measured on
        MKL, 1-3 rows round differently from 4 or more). Differentiable in ``rows`` (:class:`_RowProduct`).
        """
        return _RowProduct.apply(rows, matrix, transposed, self._image_groups(rows.shape[0]))

    # -- noised mixture ----------------------------------------------------------------------------
    def _abar(self, t: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        """ā_t as a (batch,) float64 tensor on ``device``; ``t`` an int, a 0-d or a (batch,) integer tensor."""
        T = self.num_train_timesteps
        if isinstance(t, torch.Tensor):
            if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != batch):
                raise ValueError(f"t must be an int or a ({batch},) tensor of timesteps, got shape {tuple(t.shape)}")
            if t.is_floating_point() and not torch.equal(t, t.round()):
                raise ValueError(f"t must hold integer timesteps, got {t.tolist()}")
            steps = t.detach().to("cpu").long().reshape(-1).expand(batch)
        elif isinstance(t, numbers.Integral) and not isinstance(t, bool):
            steps = torch.full((batch,), int(t), dtype=torch.long)
        else:
            raise ValueError(f"t must be an int or an integer tensor, got {type(t).__name__}")
        if steps.numel() and not ((steps >= 0) & (steps < T)).all():
            raise ValueError(f"timesteps t must lie in [0, {T}), got {steps.unique().tolist()}")
        return self._alphas_cumprod[steps].to(device)

    def _noised_terms(self, z: torch.Tensor, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For flat float64 z (B, d): log π_k N_k(z) up to a constant (B, K), U_kᵀ (z − m_k) and its variances.

        The last two are (B, K, d): the coordinates of z − m_k in component k's eigenbasis and ā λ_k + 1 − ā.

        N_k = N(m_k, C_k) with m_k = √ā μ_k and C_k = ā Σ_k + (1−ā) I = U_k diag(ā λ_k + 1 − ā) U_kᵀ; the
        dropped constant −d/2 log 2π is shared by all k. U_kᵀ (z − m_k) = U_kᵀ z − √ā U_kᵀ μ_k: all K products
        U_kᵀ z are one product z [U_1 ... U_K] per image, and U_kᵀ μ_k is precomputed (no loop over components).
        """
        mix = self._mix
        rows, d = z.shape
        projected = self._row_product(z, mix["eigvecs_cat_t"], transposed=True).reshape(rows, -1, d)
        proj = projected - abar.sqrt()[:, None, None] * mix["projected_means"][None]  # U_kᵀ (z − m_k)
        var = abar[:, None, None] * mix["eigvals"][None] + (1.0 - abar)[:, None, None]
        log_joint = mix["log_weights"][None] - 0.5 * ((proj**2 / var).sum(-1) + var.log().sum(-1))
        return log_joint, proj, var

    def eps(self, z_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Exact ε(z_t, t) = −√(1−ā_t) ∇ log p_t(z_t) = √(1−ā_t) Σ_k r_k(z_t) C_k⁻¹ (z_t − √ā_t μ_k).

        C_k = ā_t Σ_k + (1−ā_t) I; r_k are the responsibilities of the noised components (softmax over k,
        float64). Returns z_t's dtype and device. With v_k = r_k diag(1/var_k) U_kᵀ (z_t − √ā_t μ_k) stacked
        into (K d,), Σ_k U_k v_k = [U_1 ... U_K] v is one product per image.
        """
        flat = self._flat_latent(z_t, "z_t").to(self._device, torch.float64)
        abar = self._abar(t, flat.shape[0], self._device)
        # 1. Noised component terms in each component's eigenbasis.
        log_joint, proj, var = self._noised_terms(flat, abar)
        # 2. Responsibilities, then Σ_k r_k C_k⁻¹ (z_t − m_k) back in the latent basis.
        responsibilities = torch.softmax(log_joint, dim=1)
        weighted = (responsibilities[:, :, None] * proj / var).reshape(flat.shape[0], -1)
        mix = self._mix
        eps = (1.0 - abar).sqrt()[:, None] * self._row_product(weighted, mix["eigvecs_cat_t"], transposed=False)
        return eps.reshape(z_t.shape).to(z_t.device, z_t.dtype)

    def log_prob(self, z: torch.Tensor, t: int | torch.Tensor = 0) -> torch.Tensor:
        """log p_t(z) (normalised; t = 0 gives ā_0 ≈ 0.99915, not the clean prior exactly), float64 (B,)."""
        flat = self._flat_latent(z, "z").to(self._device, torch.float64)
        abar = self._abar(t, flat.shape[0], self._device)
        log_joint, _, _ = self._noised_terms(flat, abar)
        return torch.logsumexp(log_joint, dim=1) - 0.5 * self.latent_dim * _LOG_2PI

    def log_prob_clean(self, z: torch.Tensor) -> torch.Tensor:
        """log p_0(z) of the fitted (un-noised) mixture, float64 (B,)."""
        flat = self._flat_latent(z, "z").to(self._device, torch.float64)
        log_joint, _, _ = self._noised_terms(flat, torch.ones(flat.shape[0], dtype=torch.float64, device=self._device))
        return torch.logsumexp(log_joint, dim=1) - 0.5 * self.latent_dim * _LOG_2PI

    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n latents z ~ p_0 (component k ~ π, then μ_k + U_k diag(√λ_k) n), shape (n, c, h, w), prior dtype."""
        return (
            _sample_mixture(
                n,
                generator,
                self._master["mixture.weights"],
                self._master["mixture.means"],
                self._eigvecs * self._eigvals.sqrt()[:, None, :],
            )
            .reshape(n, *self.latent_shape(self.image_size))
            .to(self._device, self._dtype)
        )

    # -- exact posterior ---------------------------------------------------------------------------
    def posterior(
        self, y: torch.Tensor, operator: Any, sigma_y: float, sigma_dec: float = 0.0
    ) -> GaussianMixturePosterior:
        """The exact posterior p(z | y) for z ~ p_0, x | z ~ N(D(z), σ_dec² I), y = A x + N(0, σ_y² I).

        Then y | z ~ N(M z + A b, Σ_y) with M = A W diag(s) and Σ_y = σ_y² I + σ_dec² A Aᵀ, and p(z | y) is
        the mixture Σ_k w_k N(m_k, C_k) with (information form, all d × d)

            P = Mᵀ Σ_y⁻¹ M,   q = Mᵀ Σ_y⁻¹ (y − A b),   C_k⁻¹ = Σ_k⁻¹ + P,   m_k = C_k (Σ_k⁻¹ μ_k + q),
            log w_k = log π_k − ½ log det Σ_k − ½ log det C_k⁻¹ − ½ (μ_kᵀ Σ_k⁻¹ μ_k − m_kᵀ C_k⁻¹ m_k) + const,

        which is Woodbury plus the matrix determinant lemma applied to N(y; M μ_k + A b, Σ_y + M Σ_k Mᵀ);
        log det Σ_y and (y − A b)ᵀ Σ_y⁻¹ (y − A b) are shared by all k (they only enter ``log_evidence``).
        M is built column by column (``operator.forward`` on the d decoder directions, one batch).

        Masked measurements: when ``operator.measurement_dim`` < prod(``y_shape``) (y stored as a masked
        image), only the entries where ``operator.forward(ones)`` is non-zero are measurements; the rest
        are structural zeros and are dropped (they carry no information).

        Σ_y⁻¹ is applied exactly: σ_dec = 0 gives I / σ_y²; otherwise A Aᵀ (restricted to the observed
        entries) is tested for being diagonal on random vectors (inpainting, average pooling) and used as
        a diagonal; a general A Aᵀ is formed densely when there are at most 4096 measurements, else a
        ``ValueError`` is raised. Everything runs in float64 on y's device.
        """
        return _exact_posterior(self, y, operator, sigma_y, sigma_dec)

    # -- fitting and files -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        images: torch.Tensor,
        n_components: int = 8,
        latent_channels: int = 4,
        seed: int = 0,
        reg_covar: float = 1e-4,
        sigma_enc: float = 0.0,
        *,
        ids: list[str] | None = None,
        max_iter: int = 500,
        tol: float = 1e-3,
        min_component_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> GaussianMixturePrior:
        """Fit PCA (whitened) + an EM Gaussian mixture on ``images`` (n, 3, S, S) in [-1, 1].

        PCA: b = mean image, W = top-d eigenvectors of the centred data (via the n × n Gram matrix when
        n ≤ 3S², float64), sign-fixed so each column's largest-magnitude entry is positive (stable bytes);
        s = population std of the PCA coefficients. EM: ``sklearn.mixture.GaussianMixture(n_components,
        covariance_type="full", reg_covar, tol, max_iter, n_init=1, init_params="kmeans",
        random_state=seed)`` on the whitened codes; a fit that does not converge raises ``RuntimeError``.
        ``ids`` (the crops' ids) only go into the saved config's hash.

        ``min_component_size`` (None = off, the plain EM fit above): every component must hold at least that many
        training codes under the hard assignment argmax_k p(k | z) -- EM in d = 256 otherwise parks components on
        single outlying crops (weight 1/n, covariance reg_covar·I), which are not modes of the image distribution.
        :func:`_fit_min_size` repairs such a fit by splitting the largest component along its top principal
        direction into the tiny one's slot and refitting; components still too small after
        :data:`MAX_SPLIT_ROUNDS` rounds are dropped (so K may shrink). ``config["em"]`` records the final sizes,
        the rounds and what was dropped.
        """
        import scipy.linalg
        from sklearn.mixture import GaussianMixture

        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (n, 3, S, S) tensor, got {getattr(images, 'shape', type(images))}")
        n, _, size, width = images.shape
        if size != width or size % cls.downsample_factor:
            raise ValueError(f"images must be square with a side divisible by 8, got {size}x{width}")
        d = latent_channels * (size // cls.downsample_factor) ** 2
        if n <= d:
            raise ValueError(f"need more than d={d} training images for a rank-{d} PCA, got n={n}")
        if ids is not None and len(ids) != n:
            raise ValueError(f"ids has {len(ids)} entries but images has {n}")
        if not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {n_components!r}")
        if not reg_covar > 0:
            raise ValueError(f"reg_covar must be > 0, got {reg_covar!r}")

        X = images.detach().to("cpu", torch.float64).reshape(n, -1)
        b = X.mean(0)
        Xc = X - b
        # Only the top-d eigenpairs are needed (scipy's subset "evr" driver is ~2x faster than a full eigh), and
        # numpy dispatches A @ A.T to BLAS syrk (half the flops of a general product).
        Xc_np = Xc.numpy()
        if n <= Xc_np.shape[1]:
            vals, vecs = scipy.linalg.eigh(Xc_np @ Xc_np.T, subset_by_index=[n - d, n - 1], driver="evr")
            vals, vecs = torch.from_numpy(vals[::-1].copy()), torch.from_numpy(vecs[:, ::-1].copy())
            sv = vals.clamp_min(0).sqrt()
            if float(sv[-1]) <= 1e-8 * float(sv[0]):
                raise ValueError(f"the training images span fewer than d={d} dimensions; use more distinct images")
            W = (Xc.T @ vecs) / sv
        else:
            D = Xc_np.shape[1]
            vals, vecs = scipy.linalg.eigh(Xc_np.T @ Xc_np, subset_by_index=[D - d, D - 1], driver="evr")
            W = torch.from_numpy(vecs[:, ::-1].copy())
        # Re-orthonormalise (Gram route loses ~1e-12) and fix signs so saved bytes do not depend on LAPACK.
        W, _ = torch.linalg.qr(W)
        pivot = W.abs().argmax(0)
        W = W * torch.sign(W[pivot, torch.arange(d)])
        codes = Xc @ W
        s = codes.std(0, unbiased=False)
        whitened = (codes / s).numpy()

        mixture = GaussianMixture(
            n_components=n_components,
            covariance_type="full",
            reg_covar=reg_covar,
            tol=tol,
            max_iter=max_iter,
            n_init=1,
            init_params="kmeans",
            random_state=seed,
        ).fit(whitened)
        repair: dict[str, Any] | None = None
        if min_component_size is not None:
            if not isinstance(min_component_size, int) or not 1 <= min_component_size <= n // n_components:
                raise ValueError(
                    f"min_component_size must be an int in [1, n / n_components] = [1, {n // n_components}], "
                    f"got {min_component_size!r}"
                )
            mixture, repair = _fit_min_size(mixture, whitened, min_component_size)
        if not mixture.converged_:
            raise RuntimeError(
                f"EM did not converge in max_iter={max_iter} iterations (tol={tol}); raise max_iter or reg_covar"
            )
        covariances = torch.from_numpy(mixture.covariances_)
        covariances = 0.5 * (covariances + covariances.mT)
        image_bytes = images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        config = {
            "image_size": int(size),
            "latent_channels": int(latent_channels),
            "latent_dim": int(d),
            "n_components": int(mixture.n_components),
            "seed": int(seed),
            "reg_covar": float(reg_covar),
            "sigma_enc": float(sigma_enc),
            "em": {
                "implementation": "sklearn.mixture.GaussianMixture",
                "covariance_type": "full",
                "init_params": "kmeans",
                "n_init": 1,
                "tol": float(tol),
                "max_iter": int(max_iter),
                "random_state": int(seed),
                "n_iter": int(mixture.n_iter_),
                "lower_bound": float(mixture.lower_bound_),
                # EM in 256-D often parks components on single outlying crops (weight 1/n, covariance
                # reg_covar·I); the weights make that visible in the saved record.
                "weights": [float(w) for w in mixture.weights_],
                "component_sizes": [int(c) for c in _hard_counts(mixture, whitened)],
                **({"min_component_size": repair} if repair is not None else {}),
            },
            "pca": {
                "latent_scale_min": float(s.min()),
                "latent_scale_max": float(s.max()),
                "explained_variance_ratio": float((codes**2).sum() / (Xc**2).sum()),
            },
            "fitted_on": {
                "n_images": int(n),
                "images_sha256": hashlib.sha256(image_bytes).hexdigest(),
                "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest() if ids is not None else None,
            },
        }
        return cls(
            W,
            s,
            b,
            torch.from_numpy(mixture.weights_),
            torch.from_numpy(mixture.means_),
            covariances,
            image_size=int(size),
            latent_channels=latent_channels,
            sigma_enc=sigma_enc,
            config=config,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def fit_bundled(
        cls,
        n_per_image: int = 400,
        image_size: int = 64,
        n_test: int = 16,
        seed: int = 0,
        **fit_kwargs: Any,
    ) -> tuple[GaussianMixturePrior, list[str], list[str]]:
        """Fit on scikit-image crops (:func:`dwgf.data.bundled_crops`) minus ``n_test`` held-out crops.

        Returns ``(prior, train_ids, test_ids)``; the split and settings go into ``prior.config["bundled"]``.
        """
        from dwgf.data.bundled import bundled_crops, train_test_split

        images, ids = bundled_crops(n_per_image, size=image_size, seed=seed)
        train_ids, test_ids = train_test_split(ids, n_test, seed=seed)
        train_set = set(train_ids)
        keep = torch.tensor([image_id in train_set for image_id in ids])
        prior = cls.fit(images[keep], seed=seed, ids=train_ids, **fit_kwargs)
        prior.config["bundled"] = {
            "n_per_image": n_per_image,
            "image_size": image_size,
            "n_test": n_test,
            "seed": seed,
            "test_ids": test_ids,
        }
        return prior, train_ids, test_ids

    def save(self, folder: str | Path) -> Path:
        """Write ``testbed_prior.safetensors`` (float64 tensors) then ``testbed_prior.json`` (config + its sha256)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / TENSORS_FILE) as tmp:
            save_file({key: self._master[key] for key in _TENSOR_KEYS}, str(tmp))
        record = {
            "schema": SCHEMA,
            "kind": self.kind,
            "image_size": self.image_size,
            "latent_channels": self.latent_channels,
            "n_components": self.n_components,
            "sigma_enc": self.sigma_enc,
            "schedule": "scaled_linear(beta_start=0.00085, beta_end=0.012, T=1000)",
            "tensors": {"file": TENSORS_FILE, "sha256": sha256_file(folder / TENSORS_FILE)},
            "config": self.config,
        }
        atomic_write_json(folder / CONFIG_FILE, record)
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> GaussianMixturePrior:
        """Load a folder written by :meth:`save` (safetensors, no unpickling); checks the tensors' sha256."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, tensors_path = folder / CONFIG_FILE, folder / TENSORS_FILE
        for path in (config_path, tensors_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist; create the test-bed prior with `dwgf fit-prior`")
        record = json.loads(config_path.read_text(encoding="utf-8"))
        if record.get("schema") != SCHEMA or record.get("kind") != cls.kind:
            raise ValueError(f"{config_path}: not a test-bed prior record (schema {record.get('schema')!r})")
        digest = sha256_file(tensors_path)
        if digest != record["tensors"]["sha256"]:
            raise ValueError(
                f"{tensors_path} has sha256 {digest} but {config_path} records {record['tensors']['sha256']}; "
                f"the folder is inconsistent, re-run `dwgf fit-prior`"
            )
        tensors = load_file(str(tensors_path))
        missing = [key for key in _TENSOR_KEYS if key not in tensors]
        if missing:
            raise ValueError(f"{tensors_path} lacks tensors {missing}")
        return cls(
            *(tensors[key] for key in _TENSOR_KEYS),
            image_size=int(record["image_size"]),
            latent_channels=int(record["latent_channels"]),
            sigma_enc=float(record["sigma_enc"]),
            config=record.get("config", {}),
            device=device,
            dtype=dtype,
        )

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> GaussianMixturePrior:
        """``{"path": folder}`` loads; otherwise the keys are :meth:`fit_bundled` settings.

        Fit keys: n_per_image, image_size, n_test, seed, n_components, latent_channels, reg_covar, sigma_enc,
        max_iter, tol, min_component_size. ``overrides`` may set ``device`` and ``dtype`` (also accepted inside
        ``spec``).
        """
        spec = {**spec, **overrides}
        placement = {key: spec.pop(key) for key in ("device", "dtype") if key in spec}
        if "path" in spec:
            path = spec.pop("path")
            if spec:
                raise ValueError(f"prior spec with 'path' takes no other keys besides device/dtype, got {sorted(spec)}")
            return cls.load(path, **placement)
        allowed = {
            "n_per_image",
            "image_size",
            "n_test",
            "seed",
            "n_components",
            "latent_channels",
            "reg_covar",
            "sigma_enc",
            "max_iter",
            "tol",
            "min_component_size",
        }
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ValueError(f"unknown gaussian_mixture prior spec keys {unknown}; use 'path' or {sorted(allowed)}")
        prior, _, _ = cls.fit_bundled(**spec, **placement)
        return prior


#: Split-and-refit rounds of :func:`_fit_min_size` before components that are still too small are dropped.
MAX_SPLIT_ROUNDS = 6


def _hard_counts(mixture: Any, codes: Any) -> Any:
    """Training codes per component under the hard assignment argmax_k p(k | z) (numpy int array, (K,))."""
    import numpy as np

    return np.bincount(mixture.predict(codes), minlength=mixture.n_components)


def _refit(template: Any, codes: Any, labels: Any) -> Any:
    """EM from the hard partition ``labels`` (weights, means, covariances + reg_covar·I of each group)."""
    import numpy as np
    from sklearn.mixture import GaussianMixture

    groups = np.unique(labels)
    d = codes.shape[1]
    weights, means, precisions = [], [], []
    for g in groups:
        members = codes[labels == g]
        cov = np.cov(members, rowvar=False, bias=True) if len(members) > 1 else np.zeros((d, d))
        cov = cov + template.reg_covar * np.eye(d)
        weights.append(len(members) / len(codes))
        means.append(members.mean(0))
        precisions.append(np.linalg.inv(0.5 * (cov + cov.T)))
    return GaussianMixture(
        n_components=len(groups),
        covariance_type="full",
        reg_covar=template.reg_covar,
        tol=template.tol,
        max_iter=template.max_iter,
        n_init=1,
        weights_init=np.asarray(weights),
        means_init=np.asarray(means),
        precisions_init=np.asarray(precisions),
        random_state=template.random_state,
    ).fit(codes)


def _fit_min_size(mixture: Any, codes: Any, min_size: int) -> tuple[Any, dict[str, Any]]:
    """Make every component hold >= ``min_size`` codes (hard assignment); returns (mixture, record).

    1. Hard-assign the codes; components below ``min_size`` are *tiny*.
    2. For each tiny component (smallest first): the currently largest group is split at the median of its
       projection on its top principal direction; one half becomes the tiny component's group. Members of tiny
       groups are re-assigned to their most likely non-tiny component first.
    3. Refit EM from that partition and repeat, at most :data:`MAX_SPLIT_ROUNDS` rounds.
    4. Still tiny: drop them, refit from the partition of the survivors (K shrinks).
    """
    import numpy as np

    record: dict[str, Any] = {"min_size": int(min_size), "initial_sizes": _hard_counts(mixture, codes).tolist()}
    rounds = 0
    for rounds in range(1, MAX_SPLIT_ROUNDS + 1):
        counts = _hard_counts(mixture, codes)
        tiny = [int(k) for k in np.argsort(counts, kind="stable") if counts[k] < min_size]
        if not tiny:
            rounds -= 1
            break
        # 1. members of tiny components go to their best non-tiny component
        log_resp = mixture._estimate_weighted_log_prob(codes)
        log_resp[:, tiny] = -np.inf
        labels = log_resp.argmax(1)
        # 2. split the largest group into each tiny slot
        for k in tiny:
            sizes = np.bincount(labels, minlength=mixture.n_components)
            parent = int(sizes.argmax())
            members = np.flatnonzero(labels == parent)
            centred = codes[members] - codes[members].mean(0)
            direction = np.linalg.svd(centred, full_matrices=False)[2][0]
            projection = centred @ direction
            labels[members[projection > np.median(projection)]] = k
        mixture = _refit(mixture, codes, labels)
    counts = _hard_counts(mixture, codes)
    dropped = [int(k) for k in np.flatnonzero(counts < min_size)]
    if dropped:
        log_resp = mixture._estimate_weighted_log_prob(codes)
        log_resp[:, dropped] = -np.inf
        mixture = _refit(mixture, codes, log_resp.argmax(1))
    record.update(
        {"split_rounds": rounds, "dropped": len(dropped), "final_sizes": _hard_counts(mixture, codes).tolist()}
    )
    if (_hard_counts(mixture, codes) < min_size).any():
        raise RuntimeError(f"min_component_size={min_size}: could not make every component that large ({record})")
    return mixture, record


class _RowProduct(torch.autograd.Function):
    """``rows @ matrix.T`` (``transposed``) or ``rows @ matrix`` as ``groups`` equal blocks of rows, one product each.

    The backward (in ``rows`` only; the matrix is a constant) is the other product with the same matrix: the
    gradient of rows ↦ rows Mᵀ is grad ↦ grad M and vice versa. Written out because autograd's own backward of
    the forward ``bmm`` runs it in a layout that MKL computes up to ~10x slower for a few rows per image.
    """

    @staticmethod
    def forward(ctx, rows, matrix, transposed, groups):  # noqa: D102 (the class docstring)
        ctx.matrix, ctx.transposed, ctx.groups = matrix, transposed, groups
        return _grouped_product(rows, matrix, transposed, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        return _grouped_product(grad, ctx.matrix, not ctx.transposed, ctx.groups), None, None, None


def _grouped_product(rows: torch.Tensor, matrix: torch.Tensor, transposed: bool, groups: int) -> torch.Tensor:
    """``rows @ matrix.T`` or ``rows @ matrix`` for rows (R, in) and a contiguous matrix, per block of R / groups rows.

    ``rows @ matrix.T`` runs as (matrix @ blockᵀ)ᵀ: for a few rows MKL is 2-3x faster with the long matrix on the
    left in its row-major layout than with ``matrix.T`` on the right (benchmarks/testbed_step_cost.py).
    """
    blocks = rows.contiguous().reshape(groups, rows.shape[0] // groups, rows.shape[1])
    if transposed:
        product = torch.bmm(matrix.expand(groups, *matrix.shape), blocks.mT).mT
    else:
        product = torch.bmm(blocks, matrix.expand(groups, *matrix.shape))
    # Always row-major: for one block the transposed product would reshape to a column-major view, and later
    # reductions over it would then sum in another order than in a batch (an image's bits would depend on B).
    return product.reshape(rows.shape[0], product.shape[-1]).contiguous()


def _sample_mixture(
    n: int, generator: torch.Generator, weights: torch.Tensor, means: torch.Tensor, factors: torch.Tensor
) -> torch.Tensor:
    """n draws (float64, (n, d)) from Σ_k w_k N(means_k, F_k F_kᵀ), on the generator's device."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be an explicit torch.Generator")
    device = generator.device
    components = torch.multinomial(weights.to(device), n, replacement=True, generator=generator)
    noise = torch.randn(n, means.shape[1], generator=generator, device=device, dtype=torch.float64)
    means, factors = means.to(device), factors.to(device)
    return means[components] + torch.einsum("nij,nj->ni", factors[components], noise)


class GaussianMixturePosterior:
    """The exact posterior p(z | y) = Σ_k w_k N(m_k, C_k) of the test bed (float64, on y's device).

    Attributes:
        weights: (K,) posterior component weights w_k.
        means: (K, d) component means m_k.
        covariances: (K, d, d) component covariances C_k.
        precision_cholesky: (K, d, d) lower Cholesky factors L_k of C_k⁻¹ = L_k L_kᵀ.
        mean_latent: (d,) posterior mean Σ_k w_k m_k.
        cov_latent: (d, d) posterior covariance Σ_k w_k (C_k + m_k m_kᵀ) − mean meanᵀ.
        std_latent: (d,) sqrt of its diagonal.
        mean_image: (1, 3, H, W) D(mean_latent) (= E[D(z) | y], D is linear).
        std_image: (1, 3, H, W) pixel std of D(z) under the posterior (decoder noise σ_dec not included).
        log_evidence: log p(y) (normalised over the observed measurements).
        measurement_dim: number of measurements used (observed entries).
    """

    def __init__(
        self,
        prior: GaussianMixturePrior,
        weights: torch.Tensor,
        means: torch.Tensor,
        precision_cholesky: torch.Tensor,
        log_evidence: torch.Tensor,
        measurement_dim: int,
    ):
        self.prior = prior
        self.weights = weights
        self.means = means
        self.precision_cholesky = precision_cholesky
        covariances = torch.cholesky_inverse(precision_cholesky)
        self.covariances = 0.5 * (covariances + covariances.mT)
        self.log_evidence = log_evidence
        self.measurement_dim = measurement_dim
        self.mean_latent = weights @ means
        second = torch.einsum("k,kij->ij", weights, self.covariances) + torch.einsum(
            "k,ki,kj->ij", weights, means, means
        )
        cov = second - torch.outer(self.mean_latent, self.mean_latent)
        self.cov_latent = 0.5 * (cov + cov.T)
        self.std_latent = self.cov_latent.diagonal().clamp_min(0).sqrt()
        master = prior.parameters64()
        device = means.device
        columns = master["decoder.W"].to(device) * master["decoder.s"].to(device)  # W diag(s), (3HW, d)
        shape = (1, 3, prior.image_size, prior.image_size)
        self.mean_image = (columns @ self.mean_latent + master["decoder.b"].to(device)).reshape(shape)
        variance = ((columns @ self.cov_latent) * columns).sum(1)
        self.std_image = variance.clamp_min(0).sqrt().reshape(shape)

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype | None = None) -> torch.Tensor:
        """n latents from the posterior, (n, c, h, w), in ``dtype`` (default the prior's) on the prior's device.

        Component k ~ w, then m_k + L_k⁻ᵀ n (covariance (L_k L_kᵀ)⁻¹ = C_k), n ~ N(0, I) from ``generator``.
        """
        eye = torch.eye(self.means.shape[1], dtype=torch.float64, device=self.means.device)
        # L⁻ᵀ as an explicit factor keeps the sampler shared with the prior's; d ≤ a few hundred.
        factors = torch.linalg.solve_triangular(
            self.precision_cholesky.mT, eye.expand_as(self.precision_cholesky), upper=True
        )
        z = _sample_mixture(n, generator, self.weights, self.means, factors)
        shape = self.prior.latent_shape(self.prior.image_size)
        return z.reshape(n, *shape).to(self.prior.device, dtype or self.prior.dtype)

    def sample_images(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """D(z) for n posterior latents z: (n, 3, H, W) in the prior's dtype (no decoder noise)."""
        return self.prior.decode(self.sample(n, generator))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z | y) for latents (B, c, h, w), float64 (B,)."""
        flat = z.reshape(z.shape[0], -1).to(self.means.device, torch.float64)
        if flat.shape[1] != self.means.shape[1]:
            raise ValueError(f"z must hold {self.means.shape[1]} latent values per item, got shape {tuple(z.shape)}")
        diff = flat[:, None, :] - self.means[None]
        white = torch.einsum("kij,bki->bkj", self.precision_cholesky, diff)  # L_kᵀ (z − m_k)
        half_logdet = self.precision_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_joint = self.weights.log()[None] + half_logdet[None] - 0.5 * (white**2).sum(-1)
        return torch.logsumexp(log_joint, dim=1) - 0.5 * flat.shape[1] * _LOG_2PI


def _exact_posterior(
    prior: GaussianMixturePrior, y: torch.Tensor, operator: Any, sigma_y: float, sigma_dec: float
) -> GaussianMixturePosterior:
    for name, value in (("sigma_y", sigma_y), ("sigma_dec", sigma_dec)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if sigma_y == 0 and sigma_dec == 0:
        raise ValueError("sigma_y and sigma_dec are both 0: the likelihood is degenerate; give sigma_y > 0")
    if operator.image_size != prior.image_size:
        raise ValueError(f"operator image_size {operator.image_size} differs from the prior's {prior.image_size}")
    y_shape = tuple(operator.y_shape)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) not in (y_shape, (1, *y_shape)):
        raise ValueError(f"y must have shape (1, {', '.join(map(str, y_shape))}), got {tuple(getattr(y, 'shape', ()))}")
    device = y.device
    f64 = torch.float64
    size, d = prior.image_size, prior.latent_dim
    master = prior.parameters64()
    columns = (master["decoder.W"] * master["decoder.s"]).to(device)  # (3HW, d)
    n_full = math.prod(y_shape)

    # M = A W diag(s), one operator call on the d column images; A b for the offset.
    AM = operator.forward(columns.T.reshape(d, 3, size, size)).reshape(d, n_full).T.to(f64)
    Ab = operator.forward(master["decoder.b"].to(device).reshape(1, 3, size, size)).reshape(n_full).to(f64)
    residual = y.reshape(n_full).to(f64) - Ab

    n_obs = int(operator.measurement_dim)
    observed: torch.Tensor | None = None
    if n_obs < n_full:
        support = operator.forward(torch.ones(1, 3, size, size, dtype=f64, device=device)).reshape(n_full)
        observed = support != 0
        if int(observed.sum()) != n_obs:
            raise ValueError(
                f"operator {operator.name!r}: forward(ones) has {int(observed.sum())} non-zero entries but "
                f"measurement_dim is {n_obs}; cannot tell which entries of y are measurements"
            )
        if AM[~observed].abs().max() > 0 or Ab[~observed].abs().max() > 0:
            raise ValueError(
                f"operator {operator.name!r}: entries outside forward(ones)'s support are not structurally zero"
            )
        AM, residual = AM[observed], residual[observed]
    elif n_obs != n_full:
        raise ValueError(f"operator {operator.name!r}: measurement_dim {n_obs} exceeds prod(y_shape) = {n_full}")

    solve, logdet_sigma_y = _noise_covariance_solver(operator, observed, n_full, n_obs, sigma_y, sigma_dec, device)
    sigma_inv_M = solve(AM)
    P = AM.T @ sigma_inv_M
    P = 0.5 * (P + P.T)
    q = sigma_inv_M.T @ residual
    mahalanobis_y = residual @ solve(residual[:, None])[:, 0]

    eigvals, eigvecs = prior._eigvals.to(device), prior._eigvecs.to(device)
    mu = master["mixture.means"].to(device)
    prior_precision = eigvecs @ torch.diag_embed(1.0 / eigvals) @ eigvecs.mT
    prior_precision = 0.5 * (prior_precision + prior_precision.mT)
    precision = prior_precision + P[None]
    chol, info = torch.linalg.cholesky_ex(precision)
    if int(info.max()) > 0:
        raise ValueError("posterior precision Σ_k⁻¹ + Mᵀ Σ_y⁻¹ M is not positive definite in float64; increase sigma_y")
    eta = (prior_precision @ mu[:, :, None])[:, :, 0] + q[None]
    means = torch.cholesky_solve(eta[:, :, None], chol)[:, :, 0]
    half_logdet_precision = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_marginal = (
        master["mixture.weights"].to(device).log()
        - 0.5 * eigvals.log().sum(-1)
        - half_logdet_precision
        - 0.5 * ((mu * (prior_precision @ mu[:, :, None])[:, :, 0]).sum(-1) - (eta * means).sum(-1))
    )
    log_evidence = torch.logsumexp(log_marginal, 0) - 0.5 * (n_obs * _LOG_2PI + logdet_sigma_y + mahalanobis_y)
    weights = torch.softmax(log_marginal, 0)
    return GaussianMixturePosterior(prior, weights, means, chol, log_evidence, n_obs)


def _noise_covariance_solver(operator, observed, n_full, n_obs, sigma_y, sigma_dec, device):
    """(V ↦ Σ_y⁻¹ V on the observed entries, log det Σ_y) for Σ_y = σ_y² I + σ_dec² (A Aᵀ)_obs."""
    f64 = torch.float64
    if sigma_dec == 0:
        variance = float(sigma_y) ** 2
        return (lambda V: V / variance), n_obs * math.log(variance)

    y_shape = tuple(operator.y_shape)

    def gram(V: torch.Tensor) -> torch.Tensor:
        """(A Aᵀ)_obs V for V (n_obs, m): embed, adjoint, forward, restrict."""
        full = torch.zeros(V.shape[1], n_full, dtype=f64, device=device)
        if observed is None:
            full = V.T.contiguous()
        else:
            full[:, observed] = V.T
        out = operator.forward(operator.adjoint(full.reshape(V.shape[1], *y_shape))).reshape(V.shape[1], n_full)
        out = out.to(f64)
        return (out if observed is None else out[:, observed]).T

    diagonal = gram(torch.ones(n_obs, 1, dtype=f64, device=device))[:, 0]
    probe = torch.randn(n_obs, 3, generator=make_generator(0), dtype=f64).to(device)
    is_diagonal = torch.allclose(
        gram(probe), diagonal[:, None] * probe, rtol=0, atol=1e-9 * float(diagonal.abs().max())
    )
    if is_diagonal:
        variance = sigma_y**2 + sigma_dec**2 * diagonal
        if not (variance > 0).all():
            raise ValueError(
                "Σ_y = σ_y² I + σ_dec² A Aᵀ is singular (A Aᵀ has zero diagonal entries); give sigma_y > 0"
            )
        return (lambda V: V / variance[:, None]), float(variance.log().sum())
    if n_obs > MAX_DENSE_MEASUREMENTS:
        raise ValueError(
            f"operator {operator.name!r}: A Aᵀ is not diagonal, so sigma_dec={sigma_dec} > 0 needs a dense "
            f"{n_obs}x{n_obs} Σ_y, above the {MAX_DENSE_MEASUREMENTS}-measurement limit; use sigma_dec=0"
        )
    eye = torch.eye(n_obs, dtype=f64, device=device)
    G = torch.cat([gram(eye[:, i : i + 512]) for i in range(0, n_obs, 512)], dim=1)
    sigma = sigma_y**2 * eye + sigma_dec**2 * 0.5 * (G + G.T)
    chol, info = torch.linalg.cholesky_ex(sigma)
    if int(info) > 0:
        raise ValueError("Σ_y = σ_y² I + σ_dec² A Aᵀ is singular; give sigma_y > 0")
    return (lambda V: torch.cholesky_solve(V, chol)), 2.0 * float(chol.diagonal().log().sum())


__all__ = ["GaussianMixturePosterior", "GaussianMixturePrior"]
