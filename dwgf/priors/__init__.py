"""Latent priors. See :func:`load_prior`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dwgf.priors.base import LatentPrior, scaled_linear_alphas_cumprod


def load_prior(spec: str | Path | dict[str, Any], **overrides: Any) -> LatentPrior:
    """Load a prior from a folder or a config dict.

    * a folder holding ``testbed_prior.json`` -> :class:`~dwgf.priors.gaussian_mixture.GaussianMixturePrior`;
    * a folder holding ``stable_diffusion.json`` (``dwgf acquire-weights``) -> the SD weights it names, with its
      speed options (:mod:`dwgf.priors.performance`);
    * a folder with diffusers sub-folders (``unet/``, ``vae/``, ``scheduler/``) ->
      :class:`~dwgf.priors.stable_diffusion.StableDiffusionPrior`;
    * a dict ``{"kind": "gaussian_mixture" | "stable_diffusion", ...}`` forwarded to the class's
      ``from_spec``.
    """
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind == "gaussian_mixture":
            from dwgf.priors.gaussian_mixture import GaussianMixturePrior

            return GaussianMixturePrior.from_spec(spec, **overrides)
        if kind == "stable_diffusion":
            from dwgf.priors.stable_diffusion import StableDiffusionPrior

            return StableDiffusionPrior.from_spec(spec, **overrides)
        raise ValueError(f"prior spec key 'kind' must be 'gaussian_mixture' or 'stable_diffusion', got {kind!r}")
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(
            f"prior folder {str(path)!r} does not exist; build the test-bed prior with `dwgf fit-prior` or "
            f"fetch Stable Diffusion with `dwgf acquire-weights`"
        )
    from dwgf.priors.performance import DESCRIPTOR_NAME

    if (path / DESCRIPTOR_NAME).is_file():  # written by `dwgf acquire-weights`: weights folder + speed options
        from dwgf.priors.stable_diffusion import StableDiffusionPrior

        return StableDiffusionPrior.from_descriptor(path, **overrides)
    if (path / "testbed_prior.json").is_file():
        from dwgf.priors.gaussian_mixture import GaussianMixturePrior

        return GaussianMixturePrior.load(path, **overrides)
    from dwgf.priors.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.from_pretrained(path, **overrides)


__all__ = ["LatentPrior", "load_prior", "scaled_linear_alphas_cumprod"]
