"""Pixel metrics: PSNR and SSIM under two stated protocols.

Images enter as float tensors (B, 3, H, W) on the project's [-1, 1] scale (``README.md ("Conventions")``); the ground
truth has the same shape (or (1, 3, H, W), broadcast over the batch). Every function returns one value per
batch element, as a float64 tensor of shape (B,).

Protocols (docs/protocol.md#evaluation and docs/official-code.md item 8; every metric row carries its protocol name):

``standard`` (:data:`STANDARD`)
    Both images are mapped to [0, 1] by u = (x + 1) / 2, clamped to [0, 1] and quantised to 8 bit exactly
    as the workflow's PNG files store them (:func:`quantize_unit`: ``round(255 u) / 255`` in float64, round
    half to even, exactly ``dwgf.pipeline.images.to_uint8``; the official code's ``save_image`` rounds half up,
    which differs only for values exactly halfway between two levels).
    PSNR = 10 log10(1 / MSE) over C×H×W with data range 1 (``skimage.metrics.peak_signal_noise_ratio``;
    identical images give +inf). SSIM is the Gaussian-window SSIM of Wang et al. (2004): 11×11 window,
    sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population (not sample) covariances, averaged over the
    valid region and then over the three channels -- ``structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)`` in scikit-image.

``repo`` (:data:`REPO`, "repo-faithful")
    PSNR as the official ``src/main.py`` computes it (docs/protocol.md#evaluation): u = (x + 1) / 2 **unclamped and not
    quantised**, ground truth in [0, 1], PSNR = 10 log10(1 / (MSE + 1e-10)). The official code has no SSIM.

>>> x = torch.zeros(1, 3, 4, 4); gt = torch.full((1, 3, 4, 4), 0.2)   # u = 0.5 vs 0.6
>>> round(float(psnr_repo(x, gt)), 4)                                # 10 log10(1 / 0.01)
20.0
"""

from __future__ import annotations

import math

import torch

#: protocol names written to the ``protocol`` column
STANDARD = "standard"
REPO = "repo"

#: the additive constant in the official PSNR, 10 log10(1 / (MSE + 1e-10)) (docs/protocol.md#evaluation)
REPO_PSNR_EPS = 1e-10

#: SSIM constants (Wang et al. 2004; scikit-image defaults with gaussian_weights=True)
SSIM_SIGMA = 1.5
SSIM_WIN = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def check_images(x: torch.Tensor, ref: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes (B, 3, H, W) vs (B or 1, 3, H, W); return both broadcast to the same batch size."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if ref.ndim == 3:
        ref = ref.unsqueeze(0)
    if ref.ndim != 4 or tuple(ref.shape[1:]) != tuple(x.shape[1:]) or ref.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"reference must have shape (1 or {x.shape[0]}, {', '.join(map(str, x.shape[1:]))}) to match {name}, "
            f"got {tuple(ref.shape)}"
        )
    if not torch.isfinite(ref).all():
        raise ValueError("reference image contains non-finite values; check the ground-truth file")
    return x, ref.expand_as(x)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]: u = (x + 1) / 2, no clamping (the official ``postprocess``)."""
    return (x + 1.0) / 2.0


def quantize_unit(u: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and quantise to 8 bit as the workflow's PNGs store it: round(255 u) / 255 (float64)."""
    return to_uint8_levels(u).to(torch.float64) / 255.0


def to_uint8_levels(u: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> integer levels 0..255: round(255 clamp(u, 0, 1)) in float64, uint8 (callers reject non-finite)."""
    return (u.to(torch.float64).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def to_uint8_hwc(x: torch.Tensor) -> list:
    """[-1, 1] images (B, 3, H, W) -> list of B uint8 numpy arrays (H, W, 3), the bytes a PNG would hold."""
    levels = to_uint8_levels(to_unit(x.detach().cpu()))
    return [img.permute(1, 2, 0).contiguous().numpy() for img in levels]


def standard_unit(x: torch.Tensor) -> torch.Tensor:
    """The ``standard`` protocol's view of a [-1, 1] image: [0, 1], clamped and 8-bit quantised, float64.

    Raises ``ValueError`` for non-finite input: a PNG of a diverged particle has no defined content.
    """
    x = x.detach().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("image contains non-finite values (a diverged particle?); it has no 8-bit version")
    return quantize_unit(to_unit(x))


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a.to(torch.float64) - b.to(torch.float64)) ** 2).flatten(1).mean(dim=1)


def psnr_standard(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) on clamped, 8-bit quantised [0, 1] images, data range 1: 10 log10(1 / MSE); +inf if equal."""
    x, ref = check_images(x, ref)
    mse = _mse(standard_unit(x), standard_unit(ref))
    with torch.no_grad():
        return 10.0 * torch.log10(1.0 / mse)  # mse = 0 -> +inf, as scikit-image


def psnr_repo(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Repo-faithful PSNR (dB): 10 log10(1 / (MSE + 1e-10)) on (x+1)/2 unclamped vs (ref+1)/2.

    docs/protocol.md#evaluation.
    """
    x, ref = check_images(x, ref)
    mse = _mse(to_unit(x.detach().cpu()), to_unit(ref.detach().cpu()))
    return 10.0 * torch.log10(1.0 / (mse + REPO_PSNR_EPS))


def gaussian_window(sigma: float = SSIM_SIGMA, size: int = SSIM_WIN) -> torch.Tensor:
    """Normalised 1-D Gaussian taps exp(-k^2 / (2 sigma^2)), k = -(size//2)..size//2, float64.

    scikit-image filters with ``scipy.ndimage.gaussian_filter(truncate=3.5)``: radius int(3.5 * 1.5 + 0.5) = 5,
    i.e. the same 11 taps.
    """
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    taps = torch.exp(-(k**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def ssim_standard(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """SSIM on clamped, 8-bit quantised [0, 1] images (see the module docstring for the exact definition).

    With mu, sigma^2 and sigma_xy the Gaussian-weighted local means, variances and covariance,
    SSIM_map = ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (0.01)^2, C2 = (0.03)^2; the map is averaged over pixels whose window lies inside the image
    (scikit-image crops the same 5-pixel border), then over channels.
    """
    x, ref = check_images(x, ref)
    if min(x.shape[-2:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN}×{SSIM_WIN} pixels, got {tuple(x.shape[-2:])}")
    a, b = standard_unit(x), standard_unit(ref)
    taps = gaussian_window()
    # the separable valid-region filter as two banded matrices: blur(t) = K_h t K_w^T (float64 BLAS; a grouped
    # float64 conv2d is ~100x slower on CPU)
    k_h, k_w = _band(taps, a.shape[-2]), _band(taps, a.shape[-1])

    def blur(t: torch.Tensor) -> torch.Tensor:
        return k_h @ t @ k_w.T

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def _band(taps: torch.Tensor, n: int) -> torch.Tensor:
    """(n - k + 1, n) matrix whose row i holds ``taps`` at columns i..i+k-1 (valid 1-D correlation)."""
    k = taps.numel()
    band = torch.zeros(n - k + 1, n, dtype=taps.dtype)
    for i in range(n - k + 1):
        band[i, i : i + k] = taps
    return band


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """10 log10(data_range^2 / mse), +inf for mse = 0."""
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
