"""What every solver shares: the uniform signature, the result type and small helpers.

Uniform signature (k-diffusion style), implemented by each module in :mod:`dwgf.solvers`::

    solve(prior, operator, y, n_particles, generator, *, n_steps=..., progress=True, **hyper) -> SolveResult

* ``prior``: a :class:`~dwgf.priors.base.LatentPrior`.
* ``operator``: a :class:`~dwgf.operators.base.LinearOperator`.
* ``y``: one observation, shape (1, *operator.y_shape), shared by all particles.
* ``n_particles``: N, solved as one batch (no Python loop over particles).
* ``generator``: the only source of randomness (initialisation, per-step noise, encoder samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"


@dataclass
class SolveResult:
    """Output of one solve (one observation, N particles).

    ``particles``: decoded images after the final update, (N, 3, H, W), unclamped, on CPU.
    ``latents``: final latents, (N, c, h, w), on CPU.
    ``status``: ``"ok"`` or ``"diverged"``; ``diverged_at_step`` is the 0-based step index of the first
    non-finite value. A diverged result still carries the last finite state it had.
    ``trace``: optional per-step scalars (loss terms), only when asked for.
    ``hyper``: the resolved hyper-parameters actually used (recorded in provenance).
    ``extras``: method-specific tensors worth saving (e.g. the repo's pre-update decode).
    """

    particles: torch.Tensor
    latents: torch.Tensor
    status: str = STATUS_OK
    diverged_at_step: int | None = None
    n_steps: int = 0
    hyper: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, list[float]] | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def make_timesteps(n_steps: int, t_max: int = 999, t_min: int = 2) -> list[int]:
    """Descending integer timesteps from ``t_max`` to ``t_min``, evenly strided, ``n_steps`` of them.

    With the defaults and ``n_steps=998`` this is exactly the official loop t = 999, 998, ..., 2
    (paper.md §2.1). Fewer steps give an evenly strided subset that keeps both end points.

    >>> make_timesteps(998)[:3], make_timesteps(998)[-1]
    ([999, 998, 997], 2)
    >>> make_timesteps(4)
    [999, 665, 332, 2]
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if not (0 <= t_min <= t_max):
        raise ValueError(f"need 0 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    span = t_max - t_min + 1
    if n_steps > span:
        raise ValueError(f"n_steps={n_steps} exceeds the {span} integer timesteps in [{t_min}, {t_max}]")
    if n_steps == 1:
        return [t_max]
    steps = [round(t_max - i * (t_max - t_min) / (n_steps - 1)) for i in range(n_steps)]
    return steps


def check_problem(prior: Any, operator: Any, y: torch.Tensor, n_particles: int) -> tuple[int, int, int]:
    """Validate that prior, operator and y fit together; return the latent shape (c, h, w)."""
    if not isinstance(n_particles, int) or n_particles < 1:
        raise ValueError(f"n_particles must be a positive int, got {n_particles!r}")
    expected = (1, *operator.y_shape)
    if tuple(y.shape) != expected:
        raise ValueError(
            f"y must have shape {expected} for operator {operator.name!r} (one observation shared by all "
            f"particles), got {tuple(y.shape)}"
        )
    try:
        return prior.latent_shape(operator.image_size)
    except ValueError as error:
        raise ValueError(
            f"operator image_size {operator.image_size} does not fit the prior ({prior.kind}): {error}"
        ) from error


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def progress_bar(iterable: Iterable[int], enabled: bool, desc: str) -> Iterator[int]:
    """tqdm progress bar that can be silenced (``progress=False``)."""
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True))


def noise_level(alphas_cumprod: torch.Tensor, t: int) -> tuple[float, float]:
    """(sqrt(abar_t), sqrt(1 - abar_t)) as Python floats."""
    abar = float(alphas_cumprod[t])
    return math.sqrt(abar), math.sqrt(1.0 - abar)
