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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
    (docs/method.md#dwgf). Fewer steps give an evenly strided subset that keeps both end points.

    >>> make_timesteps(998)[:3], make_timesteps(998)[-1]
    ([999, 998, 997], 2)
    >>> make_timesteps(4)  # 999 - k * 997 / 3, rounded
    [999, 667, 334, 2]
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


# -- shared math (DWGF and its baselines) -----------------------------------------------------------------------


def randn(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """N(0, I) of ``shape`` drawn from ``generator`` on the generator's own device, then moved to ``device``.

    Drawing on the generator's device keeps a CPU generator usable for a CUDA solve (bitwise identical
    draws on every machine); drawing in float32 or wider and casting keeps low-precision runs on the same
    random stream as float32 runs.
    """
    draw_dtype = torch.promote_types(dtype, torch.float32)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=draw_dtype)
    return noise.to(device=device, dtype=dtype)


def kde_noise_estimate(
    z_t: torch.Tensor, z_0: torch.Tensor, sqrt_abar: float, sqrt_one_minus_abar: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form noise estimate of the particle KDE of the noised particle cloud (docs/method.md#dwgf step 3).

    The law of z_t = sqrt(abar) z_0 + sqrt(1 - abar) eps under the empirical measure of the particles
    z_0^1..z_0^N is the Gaussian mixture (1/N) sum_j N(sqrt(abar) z_0^j, (1 - abar) I). Its score at z_t^i is
    -sum_j pi_ij (z_t^i - sqrt(abar) z_0^j) / (1 - abar) with responsibilities

        pi_ij = softmax_j( -||z_t^i - sqrt(abar) z_0^j||^2 / (2 (1 - abar)) ),

    so the matching noise prediction eps_tilde = -sqrt(1 - abar) * score is

        eps_tilde^i = sum_j pi_ij (z_t^i - sqrt(abar) z_0^j) / sqrt(1 - abar)
                    = (z_t^i - sqrt(abar) sum_j pi_ij z_0^j) / sqrt(1 - abar).

    This equals the gradient the official code obtains with autograd through a Python double loop of full
    Gaussian log-densities (the normalising constants cancel in the softmax). Here no autograd is used, the
    softmax subtracts its row maximum (log-sum-exp safe), and the distances are computed from differences
    (not via ||a||^2 + ||b||^2 - 2ab, which cancels catastrophically when the particles are close).

    Args:
        z_t: noised particles (N, *latent_shape).
        z_0: clean particles (N, *latent_shape), the KDE centres before scaling by sqrt(abar).
        sqrt_abar, sqrt_one_minus_abar: sqrt(abar_t) and sqrt(1 - abar_t).

    Returns:
        ``(eps_tilde, pi)``: eps_tilde of the shape of z_t, and the (N, N) responsibility matrix pi.
    """
    if z_t.shape != z_0.shape:
        raise ValueError(f"z_t and z_0 must have the same shape, got {tuple(z_t.shape)} and {tuple(z_0.shape)}")
    if not sqrt_one_minus_abar > 0:
        raise ValueError(f"sqrt_one_minus_abar must be > 0 (the KDE bandwidth), got {sqrt_one_minus_abar!r}")
    n = z_t.shape[0]
    with torch.no_grad():
        points = z_t.reshape(n, -1)
        centres = sqrt_abar * z_0.reshape(n, -1)
        sq_dist = torch.cdist(points, centres, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        pi = torch.softmax(-sq_dist / (2.0 * sqrt_one_minus_abar**2), dim=1)
        eps_tilde = (points - pi @ centres) / sqrt_one_minus_abar
    return eps_tilde.reshape(z_t.shape), pi


def mean_data_fit(y: torch.Tensor, a_x: torch.Tensor, measurement_dim: int) -> torch.Tensor:
    """The official mean-normalised data-fit term  sum_i ||y - A x^i||^2 / (2 N d_y)
    (docs/method.md#dwgf step 5, docs/method.md#normalisations).

    The official code takes ``mean((y - A x)**2) / 2`` over the N particles and the d_y *real* measurements,
    with no 1/sigma_y^2 factor. ``a_x`` is (N, *y_shape); ``y`` is (1, *y_shape) (broadcast, shared by all
    particles) or (N, *y_shape) (one noise realisation per particle). Entries of y that are not measurements
    (a masked-image layout) must be zero in both y and A x, so summing and dividing by ``measurement_dim``
    gives the official mean over real measurements.
    """
    if measurement_dim < 1:
        raise ValueError(f"measurement_dim must be >= 1, got {measurement_dim!r}")
    if y.shape[1:] != a_x.shape[1:] or y.shape[0] not in (1, a_x.shape[0]):
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not match A x of shape {tuple(a_x.shape)}: y must be (1, ...) or "
            f"(N, ...) with the same measurement shape"
        )
    n = a_x.shape[0]
    return ((y - a_x) ** 2).sum() / (2.0 * n * measurement_dim)
