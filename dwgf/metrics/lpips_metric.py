"""LPIPS from the ``lpips`` package with backbone weights read from an explicit cache -- never downloaded.

Use::

    metric = LPIPSMetric.from_cache("alex", torch_home="weights/torch")   # or "vgg"
    metric.status        # "ok", or why it is unavailable ("missing_backbone: ...")
    metric.network       # implementation string for the ``network`` column
    values = metric(x, gt, protocol="standard")   # (B,) float64, or None when unavailable

Weights (docs/install.md):

* the **linear calibration layers** ship inside the lpips wheel (``lpips/weights/v0.1/{alex,vgg}.pth``) and are
  loaded by ``lpips.LPIPS`` itself;
* the **backbone** (ImageNet AlexNet / VGG16 from torchvision) is read from a TORCH_HOME-style folder filled by
  the workflow's weights rule: ``<torch_home>/hub/checkpoints/alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth`` (:data:`BACKBONE_FILES`). ``lpips.LPIPS`` would call torchvision with
  ``pretrained=True``, which downloads when the file is absent; here that call is never made: the trunk is
  built with ``pnet_rand=True`` and the cached weights are copied into it (torchvision's ``features.<i>``
  become lpips' ``net.slice<k>.<i>``; every trunk tensor must be found, with the right shape).
* The cached file must hash to the name's sha256 prefix (torchvision's convention, ``7be5be79``...). A missing
  file or a wrong hash gives an *unavailable* metric: its values are ``None`` and its status says why, so a
  results table shows null, never a number from a random or wrong backbone.
* :meth:`LPIPSMetric.unverified_for_tests` skips the hash check (for tests that build a random backbone to check
  the plumbing). Its status is :data:`STATUS_TEST_ONLY`, and :func:`dwgf.metrics.schema.write_metrics` refuses
  rows with that status, so such numbers cannot reach a results file.

Protocols (docs/protocol.md#evaluation, docs/official-code.md item 8):

``standard``
    Inputs in [-1, 1] as lpips expects: both images clamped and 8-bit quantised (the PNG the workflow stores,
    :func:`dwgf.metrics.image.standard_unit`) and mapped back by 2u - 1.
``repo``
    The official code's call ``lpips.LPIPS(net="alex")(u, u_gt)`` on u = (x + 1) / 2 **unclamped** in [0, 1],
    without ``normalize=True`` (so the network sees inputs in [0, 1] although it expects [-1, 1]).

The value is lpips' default: the spatial average of the linear-layer outputs summed over the 5 layers.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from dwgf.metrics.image import REPO, STANDARD, check_images, standard_unit, to_unit

#: torchvision checkpoint file names (the 8 hex digits are the sha256 prefix of the file)
BACKBONE_FILES: dict[str, str] = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

STATUS_OK = "ok"
STATUS_TEST_ONLY = "test_only_unverified_backbone"
PROTOCOLS = (STANDARD, REPO)

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def backbone_path(net: str, torch_home: str | os.PathLike) -> Path:
    """``<torch_home>/hub/checkpoints/<torchvision file>`` for ``net`` in :data:`BACKBONE_FILES`."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(BACKBONE_FILES)}")
    return Path(torch_home) / "hub" / "checkpoints" / BACKBONE_FILES[net]


def expected_sha256_prefix(net: str) -> str:
    match = re.search(r"-([0-9a-f]{8})\.pth$", BACKBONE_FILES[net])
    assert match, BACKBONE_FILES[net]
    return match.group(1)


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so each backbone is hashed once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def lpips_version() -> str:
    from importlib.metadata import version

    return version("lpips")


class LPIPSMetric:
    """One LPIPS network (``alex`` or ``vgg``); construct with :meth:`from_cache`.

    Attributes: ``net``, ``status`` (``"ok"`` when usable), ``network`` (the implementation string recorded in
    every row: lpips version, net, linear-layer version, backbone file and its sha256 prefix), ``model`` (the
    ``lpips.LPIPS`` module, or ``None`` when unavailable).
    """

    def __init__(self, net: str, status: str, network: str, model: torch.nn.Module | None):
        self.net = net
        self.status = status
        self.network = network
        self.model = model

    @property
    def available(self) -> bool:
        return self.model is not None

    @property
    def metric_name(self) -> str:
        """The ``metric`` column value: ``lpips_alex`` / ``lpips_vgg``."""
        return f"lpips_{self.net}"

    def __repr__(self) -> str:
        return f"LPIPSMetric(net={self.net!r}, status={self.status!r})"

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_cache(cls, net: str, torch_home: str | os.PathLike) -> LPIPSMetric:
        """The production constructor: the backbone must exist and hash to its name's sha256 prefix.

        Never raises for a missing or wrong backbone (the metric is returned unavailable, with a status
        saying why and what to do); raises ``ValueError`` for an unknown ``net``.
        """
        path = backbone_path(net, torch_home)
        if not path.is_file():
            return cls(
                net,
                f"missing_backbone: {path} not found; run the workflow's weights rule (or place torchvision's "
                f"{BACKBONE_FILES[net]} there) to enable lpips_{net}",
                _network_string(net, None),
                None,
            )
        sha = file_sha256(path)
        if not sha.startswith(expected_sha256_prefix(net)):
            return cls(
                net,
                f"backbone_hash_mismatch: {path} has sha256 {sha[:16]}..., expected prefix "
                f"{expected_sha256_prefix(net)}; replace it with torchvision's {BACKBONE_FILES[net]}",
                _network_string(net, sha),
                None,
            )
        return cls(net, STATUS_OK, _network_string(net, sha), _build_model(net, path))

    @classmethod
    def unverified_for_tests(cls, net: str, torch_home: str | os.PathLike) -> LPIPSMetric:
        """TEST ONLY: load ``<torch_home>/hub/checkpoints/<file>`` without the hash check.

        The status is :data:`STATUS_TEST_ONLY`; rows carrying it are refused by ``write_metrics``.
        """
        path = backbone_path(net, torch_home)
        if not path.is_file():
            raise FileNotFoundError(f"test backbone {path} not found; save a state dict there first")
        sha = file_sha256(path)
        return cls(net, STATUS_TEST_ONLY, _network_string(net, sha) + "(UNVERIFIED-TEST)", _build_model(net, path))

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, ref: torch.Tensor, protocol: str = STANDARD, chunk: int = 16
    ) -> torch.Tensor | None:
        """LPIPS between each image of ``x`` (B, 3, H, W) in [-1, 1] and ``ref`` (1 or B, 3, H, W) in [-1, 1].

        Returns (B,) float64, or ``None`` if the metric is unavailable (see :attr:`status`).
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown LPIPS protocol {protocol!r}; choose one of {PROTOCOLS}")
        x, ref = check_images(x, ref)
        if self.model is None:
            return None
        if protocol == STANDARD:
            a, b = 2.0 * standard_unit(x) - 1.0, 2.0 * standard_unit(ref) - 1.0
        else:
            a, b = to_unit(x.detach().cpu()), to_unit(ref.detach().cpu())
        out = []
        for start in range(0, a.shape[0], chunk):
            sl = slice(start, start + chunk)
            d = self.model(a[sl].float(), b[sl].float(), normalize=False)
            out.append(d.reshape(-1).to(torch.float64))
        return torch.cat(out)


def _network_string(net: str, sha: str | None) -> str:
    backbone = f"{BACKBONE_FILES[net]}@sha256:{sha[:12]}" if sha else f"{BACKBONE_FILES[net]}@missing"
    return f"lpips=={lpips_version()} net={net} lin=v0.1 backbone={backbone}"


def _build_model(net: str, path: Path) -> torch.nn.Module:
    """``lpips.LPIPS(net)`` with every tensor loaded explicitly: trunk from ``path``, linear layers from the wheel.

    The module is built on the meta device (no torchvision call with ``pretrained=True``, so no download, and
    no random initialisation, which costs seconds for VGG16), then materialised and filled; every entry of its
    state dict must be accounted for.
    """
    import lpips
    from lpips.lpips import ScalingLayer

    with torch.device("meta"):
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    model = model.to_empty(device="cpu")
    # the input scaling constants are computed in ScalingLayer.__init__, so rebuild it off the meta device
    model.scaling_layer = ScalingLayer()

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a torchvision state dict, got {type(state).__name__}")
    wanted: dict[str, torch.Tensor] = {}
    for name, param in model.net.named_parameters():
        # lpips names the trunk "slice<k>.<i>.<weight|bias>" with <i> the index in torchvision's .features
        match = re.fullmatch(r"slice\d+\.(\d+)\.(weight|bias)", name)
        if match is None:
            raise RuntimeError(f"unexpected lpips trunk parameter {name!r} (lpips version {lpips_version()})")
        key = f"features.{match.group(1)}.{match.group(2)}"
        if key not in state:
            raise ValueError(f"{path}: backbone state dict has no {key!r} (needed for lpips {net} {name})")
        if tuple(state[key].shape) != tuple(param.shape):
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, lpips expects {tuple(param.shape)}")
        wanted[f"net.{name}"] = state[key]

    lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not lin_path.is_file():
        raise FileNotFoundError(f"{lin_path} not found: the lpips wheel ships it; reinstall lpips")
    lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)
    wanted.update(lin_state)
    wanted.update({f"scaling_layer.{k}": v for k, v in model.scaling_layer.state_dict().items()})
    # model.lins is a ModuleList holding the same modules as lin0..lin4: its keys alias the lin<k> entries
    wanted.update({f"lins.{k[3:]}": v for k, v in lin_state.items() if re.match(r"lin\d+\.", k)})
    expected = set(model.state_dict())
    if set(wanted) != expected:
        raise RuntimeError(
            f"lpips {net}: tensors not accounted for: missing {sorted(expected - set(wanted))}, "
            f"unexpected {sorted(set(wanted) - expected)}"
        )
    model.load_state_dict(wanted, strict=True)
    model.requires_grad_(False)
    return model.eval()
