"""Test fixtures that are real artifacts, not mocks: a tiny random-weight Stable Diffusion folder and the
SD-2.1-base architecture with random weights (for GPU timing without the 5 GB download).

See :mod:`dwgf.testing.tiny_sd`.
"""

from dwgf.testing.tiny_sd import (
    SD21_BASE_SCHEDULER_CONFIG,
    SD21_BASE_TEXT_ENCODER_CONFIG,
    SD21_BASE_UNET_CONFIG,
    SD21_BASE_VAE_CONFIG,
    build_sd21_base_architecture,
    build_tiny_sd,
    build_tiny_sd_modules,
)

__all__ = [
    "SD21_BASE_SCHEDULER_CONFIG",
    "SD21_BASE_TEXT_ENCODER_CONFIG",
    "SD21_BASE_UNET_CONFIG",
    "SD21_BASE_VAE_CONFIG",
    "build_sd21_base_architecture",
    "build_tiny_sd",
    "build_tiny_sd_modules",
]
