"""What every solver shares: the uniform signature, the result type and small helpers.

Uniform signature (k-diffusion style), implemented by each module in :mod:`dwgf.solvers`::

    solve(prior, operator, y, n_particles, generators, *, n_steps=..., progress=True, **hyper)
        -> SolveResult | list[SolveResult]

* ``prior``: a :class:`~dwgf.priors.base.LatentPrior`.
* ``operator``: a :class:`~dwgf.operators.base.LinearOperator`.
* ``y``: B observations, shape (B, *operator.y_shape); each is shared by its own N particles.
* ``n_particles``: N per image; the B x N particles are solved as one batch (no Python loop over images or
  particles in the step loop).
* ``generators``: one ``torch.Generator`` per image, the only source of randomness for that image
  (initialisation, per-step noise, encoder samples). Each image draws from its own generator in the same order as
  a solo solve, and particles interact only within their own image, so an image's result does not depend on
  which other images share its batch. A single ``torch.Generator`` (with y of shape (1, ...)) is the one-image
  form and returns one :class:`SolveResult`; a list of B generators returns a list of B results.

Per-image divergence: every step checks finiteness per image on the device (a (B,) boolean tensor, no host
sync); an image whose step is not finite is frozen from that step on (its iterate and optimiser state keep their
last finite values, :class:`ImageMask`, :class:`MaskedAdam`) and its first non-finite step is recorded, while the
others go on. The flags are read back every :data:`CHECK_EVERY` steps (to stop early when every image has
diverged) and at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"

#: Steps between host read-backs of the per-image divergence flags (only to stop when every image has diverged;
#: the recorded step is exact whatever this is).
CHECK_EVERY = 50


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


def as_generators(generators: torch.Generator | Sequence[torch.Generator]) -> tuple[list[torch.Generator], bool]:
    """``(list of per-image generators, single)``; ``single`` is True for a bare generator (the one-image form)."""
    if isinstance(generators, torch.Generator):
        return [generators], True
    if isinstance(generators, (list, tuple)) and generators and all(isinstance(g, torch.Generator) for g in generators):
        return list(generators), False
    raise ValueError(
        f"generators must be a torch.Generator or a non-empty list of torch.Generator (one per image), got "
        f"{type(generators).__name__}"
    )


def check_problem(
    prior: Any, operator: Any, y: torch.Tensor, n_particles: int, n_images: int = 1
) -> tuple[int, int, int]:
    """Validate that prior, operator and y (n_images observations) fit together; return the latent shape (c, h, w)."""
    if not isinstance(n_particles, int) or n_particles < 1:
        raise ValueError(f"n_particles must be a positive int, got {n_particles!r}")
    expected = (n_images, *operator.y_shape)
    if tuple(y.shape) != expected:
        raise ValueError(
            f"y must have shape {expected} for operator {operator.name!r} ({n_images} observation(s), one per "
            f"generator, each shared by its particles), got {tuple(y.shape)}"
        )
    try:
        return prior.latent_shape(operator.image_size)
    except ValueError as error:
        raise ValueError(
            f"operator image_size {operator.image_size} does not fit the prior ({prior.kind}): {error}"
        ) from error


def finite_per_image(n_images: int, *tensors: torch.Tensor) -> torch.Tensor:
    """(n_images,) bool on the device: every value of the image's rows is finite in every tensor (no host sync).

    Each tensor's leading dimension is n_images (per-image scalars) or n_images * N (per-particle rows).
    """
    finite = torch.ones(n_images, dtype=torch.bool, device=tensors[0].device)
    for tensor in tensors:
        finite = finite & torch.isfinite(tensor.detach().reshape(n_images, -1)).all(dim=1)
    return finite


class ImageMask:
    """Per-image divergence bookkeeping on the device, without host syncs in the step loop.

    ``active`` (B,) bool: the image has been finite at every step so far. ``diverged_at`` (B,) long: the 0-based
    step of the first non-finite value, -1 while none. :meth:`update` takes the step's (B,) finiteness flags.
    """

    def __init__(self, n_images: int, n_particles: int, device: torch.device | str):
        self.n_images, self.n_particles = n_images, n_particles
        self.active = torch.ones(n_images, dtype=torch.bool, device=device)
        self.diverged_at = torch.full((n_images,), -1, dtype=torch.long, device=device)

    def update(self, step: int, finite: torch.Tensor) -> torch.Tensor:
        """Record the images first non-finite at ``step``; return the per-row keep mask (B * N,) after it."""
        newly = self.active & ~finite
        self.diverged_at = torch.where(newly, torch.full_like(self.diverged_at, step), self.diverged_at)
        self.active = self.active & finite
        return self.rows()

    def rows(self) -> torch.Tensor:
        """(B * N,) bool: the rows (particles) of active images."""
        return self.active.repeat_interleave(self.n_particles)

    def all_diverged(self, step: int) -> bool:
        """True when every image has diverged; reads the flags back only every :data:`CHECK_EVERY` steps."""
        return (step + 1) % CHECK_EVERY == 0 and not bool(self.active.any())

    def statuses(self) -> list[int | None]:
        """Per image: the diverged step, or None (one host read-back)."""
        return [None if step < 0 else int(step) for step in self.diverged_at.tolist()]


def keep_rows(keep: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` on the rows where ``keep`` (a (rows,) bool mask) is True, ``old`` elsewhere."""
    return torch.where(keep.reshape(-1, *([1] * (new.ndim - 1))), new, old)


class MaskedAdam:
    """``torch.optim.Adam`` on one (B * N, ...) tensor whose frozen images keep their values and their state.

    Adam is elementwise, so one optimiser over the whole batch gives every active image exactly its solo update
    (its step count is shared, and all active images are at the same step). :meth:`step` takes the rows to keep
    updating; the other rows get back their parameter and moment values from before the step, so a diverged
    image is frozen at its last finite state and its non-finite gradient never reaches another image.

    The update is ``torch.optim.adam.adam``, the functional form that ``torch.optim.Adam.step`` calls, with the
    arguments ``Adam.step`` passes for ``Adam([param], lr, betas, eps)`` (state initialised as ``Adam._init_group``
    does; foreach / fused left to torch's own choice), so the values are bitwise those of ``torch.optim.Adam``
    (tests/test_masked_adam.py). Why not the class: constructing ``torch.optim.Adam`` and its first ``step``
    import ``torch._dynamo``, 1.7 CPU s per process on this machine, a third of a short test-bed solve job
    (docs/testbed-steps.md, "Process overhead").
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float], eps: float):
        self.param = param
        self.optimiser = _FunctionalAdam(param, lr=lr, betas=betas, eps=eps)

    def step(self, grad: torch.Tensor, keep: torch.Tensor) -> None:
        """One Adam step with ``grad``; rows where ``keep`` (B * N,) is False keep their values and moments."""
        state = self.optimiser.state.get(self.param, {})
        self._previous = {key: state[key].clone() for key in ("exp_avg", "exp_avg_sq") if key in state}
        self._previous["param"] = self.param.detach().clone()
        self.param.grad = keep_rows(keep, grad, torch.zeros_like(grad))
        self.optimiser.step()
        self.revert(keep)

    def revert(self, keep: torch.Tensor) -> None:
        """Give the rows where ``keep`` is False back their values and moments from before the last :meth:`step`."""
        state = self.optimiser.state[self.param]
        with torch.no_grad():
            self.param.copy_(keep_rows(keep, self.param, self._previous["param"]))
            for key in ("exp_avg", "exp_avg_sq"):
                before = self._previous.get(key, torch.zeros_like(state[key]))  # zeros: the state before step 1
                state[key].copy_(keep_rows(keep, state[key], before))


class _FunctionalAdam:
    """``torch.optim.Adam([param], lr, betas, eps)`` without the class: the same ``param_groups`` / ``state``
    attributes (``param_groups[0]["lr"]`` may be changed between steps, as on the class) and the same update.

    Adam (Kingma & Ba), per element, at step t with gradient g:
    m_t = β1 m_{t-1} + (1 - β1) g,  v_t = β2 v_{t-1} + (1 - β2) g²,
    param -= lr (m_t / (1 - β1^t)) / (sqrt(v_t / (1 - β2^t)) + eps).
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float], eps: float):
        # The checks of torch.optim.Adam.__init__ for float arguments (same messages).
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        if not all(isinstance(beta, float) for beta in betas):
            raise ValueError("betas must be either both floats or both Tensors")
        self.param = param
        self.param_groups = [{"params": [param], "lr": lr, "betas": tuple(betas), "eps": eps}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def step(self) -> None:
        from torch.optim.adam import adam
        from torch.optim.optimizer import _get_scalar_dtype

        param, group = self.param, self.param_groups[0]
        state = self.state.setdefault(param, {})
        if not state:
            # 1. Lazy state, as Adam._init_group (capturable and fused off: the step count lives on the CPU).
            state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        # 2. The call of Adam.step, with its defaults (differentiable False: no autograd through the update).
        with torch.no_grad():
            adam([param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
                 foreach=None, capturable=False, differentiable=False, fused=None, grad_scale=None,
                 found_inf=None, has_complex=torch.is_complex(param), decoupled_weight_decay=False,
                 amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0, eps=group["eps"],
                 maximize=False)  # fmt: skip


def per_image_trace(
    history: dict[str, list[torch.Tensor]] | None, n_images: int
) -> list[dict[str, list[float]]] | None:
    """Per-step (B,) tensors of traced scalars -> one ``{key: [value per step]}`` per image (one read-back)."""
    if history is None:
        return None
    stacked = {key: torch.stack(values).tolist() if values else [] for key, values in history.items()}
    return [{key: [row[image] for row in rows] for key, rows in stacked.items()} for image in range(n_images)]


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


def randn_per_image(
    shape: tuple[int, ...], generators: Sequence[torch.Generator], device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """One :func:`randn` of ``shape`` per image, each from that image's generator, stacked along dim 0:
    (B * shape[0], *shape[1:]). Image b's rows are bitwise what a solo solve draws from its generator."""
    if len(generators) == 1:
        return randn(shape, generators[0], device, dtype)
    return torch.cat([randn(shape, generator, device, dtype) for generator in generators])


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
    z_t: torch.Tensor, z_0: torch.Tensor, sqrt_abar: float, sqrt_one_minus_abar: float, n_images: int | None = None
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

    With ``n_images`` = B the rows are B images of N = rows / B particles each, and each image's particles form
    their own KDE (particles of different images never interact); the batched distances and products compute
    every image with the same kernel shapes as a solo call.

    Args:
        z_t: noised particles (N, *latent_shape), or (B * N, *latent_shape) with ``n_images`` = B.
        z_0: clean particles of the same shape, the KDE centres before scaling by sqrt(abar).
        sqrt_abar, sqrt_one_minus_abar: sqrt(abar_t) and sqrt(1 - abar_t).
        n_images: B; None for one image.

    Returns:
        ``(eps_tilde, pi)``: eps_tilde of the shape of z_t, and the responsibilities pi, (N, N) for
        ``n_images=None``, else (B, N, N).
    """
    if z_t.shape != z_0.shape:
        raise ValueError(f"z_t and z_0 must have the same shape, got {tuple(z_t.shape)} and {tuple(z_0.shape)}")
    if not sqrt_one_minus_abar > 0:
        raise ValueError(f"sqrt_one_minus_abar must be > 0 (the KDE bandwidth), got {sqrt_one_minus_abar!r}")
    b = 1 if n_images is None else n_images
    if b < 1 or z_t.shape[0] % b:
        raise ValueError(f"n_images={n_images!r} does not divide the {z_t.shape[0]} rows of z_t")
    n = z_t.shape[0] // b
    with torch.no_grad():
        points = z_t.reshape(b, n, -1)
        centres = sqrt_abar * z_0.reshape(b, n, -1)
        sq_dist = torch.cdist(points, centres, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        pi = torch.softmax(-sq_dist / (2.0 * sqrt_one_minus_abar**2), dim=2)
        eps_tilde = (points - torch.bmm(pi, centres)) / sqrt_one_minus_abar
    return eps_tilde.reshape(z_t.shape), (pi[0] if n_images is None else pi)


def mean_data_fit(
    y: torch.Tensor, a_x: torch.Tensor, measurement_dim: int, n_images: int | None = None
) -> torch.Tensor:
    """The official mean-normalised data-fit term  sum_i ||y - A x^i||^2 / (2 N d_y)
    (docs/method.md#dwgf step 5, docs/method.md#normalisations).

    The official code takes ``mean((y - A x)**2) / 2`` over the N particles and the d_y *real* measurements,
    with no 1/sigma_y^2 factor. ``a_x`` is (N, *y_shape); ``y`` is (1, *y_shape) (broadcast, shared by all
    particles) or (N, *y_shape) (one noise realisation per particle). Entries of y that are not measurements
    (a masked-image layout) must be zero in both y and A x, so summing and dividing by ``measurement_dim``
    gives the official mean over real measurements.

    Batched (``n_images`` = B): ``a_x`` is (B * N, *y_shape), ``y`` is (B, *y_shape) (image b's y shared by its N
    particles) or (B * N, *y_shape), and the result is the (B,) vector of per-image terms, each normalised by its
    own N d_y (so each image's gradient is its solo gradient).
    """
    if measurement_dim < 1:
        raise ValueError(f"measurement_dim must be >= 1, got {measurement_dim!r}")
    b = 1 if n_images is None else n_images
    if b < 1 or a_x.shape[0] % b:
        raise ValueError(f"n_images={n_images!r} does not divide the {a_x.shape[0]} rows of A x")
    n = a_x.shape[0] // b
    if y.shape[1:] != a_x.shape[1:] or y.shape[0] not in (b, a_x.shape[0]):
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not match A x of shape {tuple(a_x.shape)}: y must be ({b}, ...) or "
            f"({a_x.shape[0]}, ...) with the same measurement shape"
        )
    if n_images is None:
        return ((y - a_x) ** 2).sum() / (2.0 * n * measurement_dim)
    if y.shape[0] == b:
        residual = y[:, None] - a_x.reshape(b, n, *a_x.shape[1:])  # image b's y broadcast to its N particles
    else:
        residual = y - a_x
    return (residual**2).reshape(b, -1).sum(dim=1) / (2.0 * n * measurement_dim)
