"""Metrics against the exact posterior of the test bed (docs/testbed.md): plain tensors in, floats out.

Inputs (any space -- latents or decoded images -- as long as all four agree; flattened per sample):

* ``particles``: (N, *dims), the solver's particles;
* ``posterior_mean``, ``posterior_std``: (*dims), the closed-form posterior mean and per-dimension std
  (for a mixture posterior, the marginal std of the mixture);
* ``posterior_samples``: (M, *dims), exact posterior samples.

Metrics:

* :func:`posterior_mean_psnr` -- PSNR of the particle mean xbar = (1/N) sum_i x_i against the exact posterior
  mean: 10 log10(R^2 / mean_d (xbar_d - m_d)^2), R the data range (2 for images in [-1, 1], which equals
  PSNR on [0, 1] with range 1). Protocol ``data_range=<R>``.
* :func:`spread_ratio` -- mean_d s_d / mean_d sigma_d with s_d the across-particle sample std (N - 1 in the
  denominator) and sigma_d the exact posterior std. A ratio of means, not a mean of ratios, because some
  posterior stds are ~0 (e.g. latents fully determined by the observation) and would dominate a mean of
  ratios. 1 = calibrated spread, < 1 under-dispersed (mode collapse), > 1 over-dispersed. Needs N >= 2.
* :func:`sliced_wasserstein2` -- SW_2 = sqrt(mean_l W_2^2(theta_l # P, theta_l # Q)) between the empirical
  measures of the N particles and the M posterior samples, over L directions theta_l drawn uniformly on the
  unit sphere (normalised standard Gaussians) from a ``torch.Generator`` seeded with ``seed``.
  Default L = :data:`DEFAULT_PROJECTIONS` = 256. Each 1-D W_2 is exact for unequal N and M:
  W_2^2 = int_0^1 (F^{-1}(u) - G^{-1}(u))^2 du, with both quantile functions piecewise constant between the
  breakpoints {i/N} ∪ {j/M} (computed in integer units of 1/(N M), so no breakpoint is lost to round-off).
  Protocol ``projections=<L>;seed=<seed>``.

Multimodality (the exact posterior is a mixture sum_k w_k N(m_k, C_k), in latent space):

* :func:`component_weight_entropy` -- H(w) = -sum_k w_k log w_k in nats (0 = one component holds all the mass;
  log K = uniform); exp(H) is the effective number of posterior modes. It selects the multimodal test problems.
* :func:`mode_coverage` -- posterior component k of the test bed is prior component k conditioned on y, so a mode
  is named by its prior component. Assignment rule: particle z_i *visits* a(z_i) = argmax_k pi_k N(z_i; mu_k,
  Sigma_k), the component with the highest *prior* responsibility for that particle (the prior's components are
  wide, so the rule stays meaningful for a particle that missed the narrow posterior; the posterior's own
  responsibilities would be decided by its narrowest directions). Coverage = sum of the posterior weights w_k
  over the visited components, in [0, 1]; 1 = every component with posterior mass was visited. N particles drawn
  from the exact posterior reach :func:`expected_mode_coverage` = sum_k w_k (1 - (1 - w_k)^N) on average when
  the assignment recovers the component each sample came from (well-separated components).
* :func:`calibration_ratio` -- how well the particle spread predicts the error of the particle mean against the
  ground truth: mean_d (x_d - xbar_d)^2 / ((1 + 1/N) mean_d s_d^2), s_d^2 the across-particle sample variance
  (N - 1 in the denominator). If the ground truth and the N particles are independent draws of one posterior
  (the well-specified regime with an exact sampler), numerator and denominator have the same expectation, so the
  ratio is ~1; > 1 = over-confident (spread too small for the error made), < 1 = under-confident. A ratio of
  means, for the same reason as :func:`spread_ratio`. Needs N >= 2.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

DEFAULT_PROJECTIONS = 256


def _flat(t: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(t).detach().cpu().to(torch.float64)
    if t.ndim < 2:
        raise ValueError(f"{name} must have shape (n, *dims), got {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1)


def _vector(t: torch.Tensor, name: str, dim: int) -> torch.Tensor:
    t = torch.as_tensor(t).detach().cpu().to(torch.float64).reshape(-1)
    if t.numel() != dim:
        raise ValueError(f"{name} has {t.numel()} entries, the particles have {dim} per sample")
    return t


def posterior_mean_psnr(particles: torch.Tensor, posterior_mean: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR (dB) of the particle mean against the exact posterior mean (+inf if equal)."""
    x = _flat(particles, "particles")
    m = _vector(posterior_mean, "posterior_mean", x.shape[1])
    mse = float(((x.mean(dim=0) - m) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def spread_ratio(particles: torch.Tensor, posterior_std: torch.Tensor) -> float:
    """mean_d (across-particle sample std) / mean_d (exact posterior std); needs N >= 2."""
    x = _flat(particles, "particles")
    if x.shape[0] < 2:
        raise ValueError(f"spread_ratio needs at least 2 particles, got {x.shape[0]}")
    s = _vector(posterior_std, "posterior_std", x.shape[1])
    if (s < 0).any() or float(s.mean()) == 0.0:
        raise ValueError("posterior_std must be non-negative with a positive mean")
    return float(x.std(dim=0, correction=1).mean() / s.mean())


@functools.lru_cache(maxsize=8)
def _directions(n_projections: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(n_projections, dim, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def random_directions(n_projections: int, dim: int, seed: int) -> torch.Tensor:
    """(L, D) unit vectors, uniform on the sphere, from a generator seeded with ``seed`` (float64).

    The draw depends only on (L, D, seed), so it is memoised (an evaluation process asks for the same directions
    for every image); a copy is returned, so callers may modify it.
    """
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    return _directions(int(n_projections), int(dim), int(seed)).clone()


def wasserstein2_1d_squared(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact W_2^2 between uniform empirical measures, row by row: x (L, N), y (L, M) -> (L,)."""
    x, y = np.sort(x, axis=1), np.sort(y, axis=1)
    n, m = x.shape[1], y.shape[1]
    # breakpoints i/N and j/M in integer units of 1/(N M)
    points = np.unique(np.concatenate([np.arange(n + 1) * m, np.arange(m + 1) * n]))
    left, right = points[:-1], points[1:]
    weights = (right - left) / (n * m)
    # the quantile index on (left, right]: floor(mid * N / (N M)) with mid = (left + right) / 2
    ix = (left + right) // (2 * m)
    iy = (left + right) // (2 * n)
    return ((x[:, ix] - y[:, iy]) ** 2 * weights).sum(axis=1)


class SlicedReference:
    """Exact posterior samples projected once on the sliced-W2 directions.

    Every method, variant and particle count evaluated on one observation compares its particles with the same
    posterior samples and (seeded) directions, so an evaluation process builds this once per observation and
    calls :meth:`distance` per particle set: the (M x D) @ (D x L) projection of the samples is the expensive
    part. ``SlicedReference(samples, L, seed).distance(particles)`` equals
    ``sliced_wasserstein2(particles, samples, L, seed)`` exactly (the latter is implemented with it).
    """

    def __init__(self, posterior_samples: torch.Tensor, n_projections: int = DEFAULT_PROJECTIONS, seed: int = 0):
        if n_projections < 1:
            raise ValueError(f"n_projections must be >= 1, got {n_projections}")
        y = _flat(posterior_samples, "posterior_samples")
        self.dim, self.n_samples = y.shape[1], y.shape[0]
        self.n_projections, self.seed = int(n_projections), int(seed)
        self._theta = _directions(self.n_projections, self.dim, self.seed)
        self._projected = (y @ self._theta.T).T.numpy()

    def distance(self, particles: torch.Tensor) -> float:
        """SW_2 between ``particles`` (N, *dims) and the reference samples."""
        x = _flat(particles, "particles")
        if x.shape[1] != self.dim:
            raise ValueError(f"particles have {x.shape[1]} dims per sample, posterior_samples {self.dim}")
        px = (x @ self._theta.T).T.numpy()
        return float(math.sqrt(wasserstein2_1d_squared(px, self._projected).mean()))


def sliced_wasserstein2(
    particles: torch.Tensor,
    posterior_samples: torch.Tensor,
    n_projections: int = DEFAULT_PROJECTIONS,
    seed: int = 0,
) -> float:
    """Sliced W_2 between particles (N, *dims) and exact posterior samples (M, *dims) (module docstring)."""
    x = _flat(particles, "particles")
    y = _flat(posterior_samples, "posterior_samples")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"particles have {x.shape[1]} dims per sample, posterior_samples {y.shape[1]}")
    return SlicedReference(y, n_projections, seed).distance(x)


def sliced_protocol(n_projections: int, seed: int) -> str:
    return f"projections={n_projections};seed={seed}"


def component_weight_entropy(weights: torch.Tensor) -> float:
    """H(w) = -sum_k w_k log w_k (nats) of posterior component weights (terms with w_k = 0 contribute 0)."""
    w = torch.as_tensor(weights).detach().cpu().to(torch.float64).reshape(-1)
    if w.numel() == 0 or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights must be non-negative and sum to 1, got sum {float(w.sum())!r}")
    positive = w[w > 0]
    return float(-(positive * positive.log()).sum())


def component_assignments(
    latents: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, precision_cholesky: torch.Tensor
) -> torch.Tensor:
    """a(z_i) = argmax_k [log w_k + log N(z_i; m_k, C_k)] for particles (N, *dims) -> (N,) int64.

    ``precision_cholesky`` (K, d, d): lower L_k with C_k^-1 = L_k L_k^T (as
    :class:`~dwgf.priors.gaussian_mixture.GaussianMixturePosterior` stores it).
    """
    z = _flat(latents, "latents")
    w = torch.as_tensor(weights).detach().cpu().to(torch.float64).reshape(-1)
    m = torch.as_tensor(means).detach().cpu().to(torch.float64)
    chol = torch.as_tensor(precision_cholesky).detach().cpu().to(torch.float64)
    K, d = m.shape
    if w.shape != (K,) or chol.shape != (K, d, d) or z.shape[1] != d:
        raise ValueError(
            f"shapes do not fit: latents {tuple(z.shape)}, weights {tuple(w.shape)}, means {tuple(m.shape)}, "
            f"precision_cholesky {tuple(chol.shape)}"
        )
    white = torch.einsum("kij,nki->nkj", chol, z[:, None, :] - m[None])  # L_k^T (z - m_k)
    half_logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    with torch.no_grad():
        log_joint = w.clamp_min(1e-300).log()[None] + half_logdet[None] - 0.5 * (white**2).sum(-1)
    return log_joint.argmax(1)


def mode_coverage(
    latents: torch.Tensor,
    posterior_weights: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    precision_cholesky: torch.Tensor,
) -> float:
    """Sum of ``posterior_weights`` over the components visited by at least one particle (module docstring);
    ``weights``, ``means``, ``precision_cholesky`` are the mixture that assigns them (the prior's)."""
    visited = component_assignments(latents, weights, means, precision_cholesky).unique()
    w = torch.as_tensor(posterior_weights).detach().cpu().to(torch.float64).reshape(-1)
    return float(w[visited].sum())


def expected_mode_coverage(weights: torch.Tensor, n_particles: int) -> float:
    """E[coverage] of ``n_particles`` independent draws of the component label: sum_k w_k (1 - (1 - w_k)^N)."""
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    w = torch.as_tensor(weights).detach().cpu().to(torch.float64).reshape(-1)
    return float((w * (1.0 - (1.0 - w) ** n_particles)).sum())


def calibration_ratio(particles: torch.Tensor, ground_truth: torch.Tensor) -> float:
    """mean_d (x_d - xbar_d)^2 / ((1 + 1/N) mean_d s_d^2); ~1 when x and the particles share one law (docstring)."""
    x = _flat(particles, "particles")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"calibration_ratio needs at least 2 particles, got {n}")
    gt = _vector(ground_truth, "ground_truth", x.shape[1])
    variance = float(x.var(dim=0, correction=1).mean())
    error = float(((gt - x.mean(dim=0)) ** 2).mean())
    if variance == 0.0:
        return math.inf if error > 0 else math.nan
    return error / ((1.0 + 1.0 / n) * variance)
