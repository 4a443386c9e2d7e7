"""Ground truths sampled from the test-bed prior: the well-specified regime (``data.source: {kind: prior_samples}``).

An image ``x = D(z)`` with ``z ~ p_0`` drawn from the fitted Gaussian mixture is a draw of exactly the model the
exact posterior assumes, so there the exact posterior mean E[D(z) | y] is the Bayes-optimal estimator (minimum
mean squared error) and a solver's gap to it is the solver's own. Held-out photographs (``kind: bundled``) are
not draws of the mixture: there the prior is misspecified (docs/testbed.md).

Ids are ``"prior-<k>"`` with ``k`` written with at least 4 digits (``prior-0000``). Image ``k`` of a suite is
drawn with its own generator, seeded ``derive_seed(seed, "prior-samples", image_id)`` from the suite seed and the
id alone, so it does not depend on how many samples are drawn or in which order. ``x`` is D(z) itself (no decoder
noise, not clamped to [-1, 1], not quantised): ``acquire-images`` stores it as a float32 ``.npy`` file.
:func:`sample_prior_images` is the one implementation, used by the DAG's ``acquire-images`` and by ``dwgf
testbed-compare --regimes prior``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_ID_PATTERN = re.compile(r"^prior-(?P<k>\d{4,})$")


def prior_sample_id(k: int) -> str:
    """The id of prior sample ``k`` (``prior-0000``)."""
    return f"prior-{int(k):04d}"


def parse_prior_sample_id(image_id: str) -> int:
    """``k`` of a prior-sample id; ``ValueError`` naming the grammar for anything else."""
    match = _ID_PATTERN.match(image_id) if isinstance(image_id, str) else None
    if match is None:
        raise ValueError(f"image id {image_id!r} is not a prior-sample id 'prior-<k>' with >= 4 digits ('prior-0000')")
    return int(match["k"])


def prior_sample_seed(seed: int, image_id: str) -> int:
    """The seed of prior sample ``image_id`` in a suite with base seed ``seed``."""
    from dwgf.seeding import derive_seed

    parse_prior_sample_id(image_id)
    return derive_seed(seed, "prior-samples", image_id)


def sample_prior_images(prior: Any, seed: int, ids: Sequence[str]) -> torch.Tensor:
    """x_k = D(z_k), z_k ~ p_0 for each id: float32 (n, 3, S, S), one generator per image (module docstring).

    ``prior`` is a :class:`dwgf.priors.gaussian_mixture.GaussianMixturePrior` (its ``sample_prior`` and
    ``decode``); the draw happens in float64 inside ``sample_prior`` and the decode in the prior's dtype.
    """
    import torch

    from dwgf.seeding import make_generator

    if len(ids) == 0:
        raise ValueError("ids is empty; pass at least one prior-sample id")
    images = []
    for image_id in ids:
        # 1. z ~ p_0 with the image's own generator; 2. x = D(z), detached, float32
        z = prior.sample_prior(1, make_generator(prior_sample_seed(seed, image_id)))
        images.append(prior.decode(z).detach().to("cpu", torch.float32)[0])
    return torch.stack(images)
