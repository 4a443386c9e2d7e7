"""Stable Diffusion 2.1-base as a :class:`~dwgf.priors.base.LatentPrior` (docs/method.md#components).

What the official DWGF code uses, and what this class provides:

* decoder  D(z) = vae.decode(z / s).sample, not clamped, differentiable in z (docs/method.md#dwgf "Decoder D(z)");
* encoder  E(x) = s · vae.encode(x).latent_dist.sample()  (or ``.mean`` with ``sample=False``); the official
  code samples (docs/method.md#dwgf "Encoder E(x)");
* noise model eps(z_t, t) = unet(z_t, t, encoder_hidden_states=c_empty).sample, with c_empty the CLIP text
  embedding of the empty prompt (no classifier-free guidance; docs/method.md#dwgf "Text conditioning");
* abar_t = the DDIM scheduler's ``alphas_cumprod`` built from the repo's scheduler config (scaled-linear betas
  0.00085 -> 0.012, 1000 steps). diffusers computes it in float32; we keep those float32 values (cast to
  float64) so abar_t is bit-for-bit what the official code reads. They differ from the float64
  :func:`~dwgf.priors.base.scaled_linear_alphas_cumprod` by < 1e-6 relative.

s is the VAE config's ``scaling_factor`` (0.18215 for SD-2.x). Only ``prediction_type == "epsilon"`` models
are accepted: 2.1-base predicts epsilon, the 768 px 2.1 model predicts v and is a different prior
(docs/weights.md).

The text encoder and tokenizer are loaded once, used to compute c_empty, then deleted (no reference kept);
only the (1, 77, width) embedding stays on the device. VAE and UNet are frozen (``requires_grad_(False)``,
``eval()``): unlike the official code (docs/official-code.md (item 4)) no weight gradient is ever accumulated.

Weights: only safetensors files are read (``use_safetensors=True``); pickled ``.bin``/``.ckpt`` files are
never unpickled. A hub id must come with a 40-hex commit ``revision`` (the SD-2.1 repos have moved and been
deleted before; docs/weights.md). Fetch weights with ``dwgf acquire-weights`` (:mod:`dwgf.acquire`).

Provenance (:meth:`StableDiffusionPrior.describe`): the source, revision, dtypes, scaling factor and, for every
file the prior reads, its size and sha256. Hashing the ~5 GB of SD weights takes seconds, so it is done lazily
on the first ``describe()`` call and cached per process, keyed by (path, size, mtime); a file that changes on
disk is hashed again. ``describe()`` also records the speed options (:mod:`dwgf.priors.performance`) and, on
CUDA, the process-wide backend flags in force.

Speed options (``performance=``, config key ``prior.performance``): channels-last memory format, ``torch.compile``
of the UNet / decoder / encoder, the VAE attention kernel, bf16 autocast with float32 weights, TF32 and the cuDNN
autotuner; see :mod:`dwgf.priors.performance`. None of them changes the maths, only rounding.

No host synchronisation per call: ``eps`` takes an int timestep from a per-device table of all timesteps built
once (indexing it with a Python int launches nothing and copies nothing), checks an int's range on the host and
a CUDA tensor's range with an asynchronous device assertion (``torch._assert_async``), so a solver loop that is
otherwise sync-free stays so.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import re
from pathlib import Path
from typing import Any

import torch

from dwgf.io import sha256_file
from dwgf.priors.base import LatentPrior
from dwgf.priors.performance import (
    CUDA_ONLY_ATTENTION,
    DESCRIPTOR_NAME,
    DESCRIPTOR_SCHEMA,
    PerformanceOptions,
)

#: Files the prior reads, relative to the model folder. Weight files are safetensors only.
REQUIRED_FILES: tuple[str, ...] = (
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
)
#: Read when present: SD-2.x sets the pad token ("!") here, which changes the empty-prompt embedding.
OPTIONAL_FILES: tuple[str, ...] = ("tokenizer/special_tokens_map.json", "model_index.json")

#: ``snapshot_download`` patterns for a hub load (same set as ``workflow/weights.lock.yaml``).
HUB_ALLOW_PATTERNS: tuple[str, ...] = (*REQUIRED_FILES, *OPTIONAL_FILES)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

FETCH_HINT = (
    "fetch the weights with the workflow's acquire_weights rule (`snakemake --cores 1 acquire_weights`, which runs "
    "`dwgf acquire-weights` and checks every file against workflow/weights.lock.yaml)"
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SPEC_KEYS = {"path", "repo_id", "revision", "dtype", "device", "local_files_only", "performance"}
_SDPA_BACKENDS = {
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}

#: (resolved path, size, mtime_ns) -> sha256, so repeated loads in one process hash each file once.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def check_model_folder(folder: str | os.PathLike) -> Path:
    """Raise FileNotFoundError naming the first missing required file (and how to fetch it); return the folder.

    A folder that has pickled weights (``.bin``) where a ``.safetensors`` file is required gets a message that
    says only safetensors are accepted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Stable Diffusion folder {str(folder)!r} does not exist; {FETCH_HINT}")
    for relative in REQUIRED_FILES:
        if (folder / relative).is_file():
            continue
        message = f"Stable Diffusion folder {str(folder)!r} lacks {relative!r}"
        if relative.endswith(".safetensors"):
            pickled = (folder / relative).with_suffix(".bin")
            if pickled.is_file():
                message += (
                    f" (it has {pickled.relative_to(folder).as_posix()!r}, a pickle: only safetensors weights are "
                    "accepted, because unpickling downloaded data can run arbitrary code)"
                )
        raise FileNotFoundError(f"{message}; {FETCH_HINT}")
    return folder


def _is_hub_id(source: str | os.PathLike) -> bool:
    """True for an ``owner/name`` string that is not an existing local path."""
    if isinstance(source, Path):
        return False
    text = os.fspath(source)
    return bool(_HUB_ID.match(text)) and not text.startswith(".") and not Path(text).exists()


def _hub_snapshot(repo_id: str, revision: str | None, local_files_only: bool | None) -> Path:
    """Folder of a pinned hub snapshot (downloaded into the Hugging Face cache unless already there)."""
    if revision is None or not _COMMIT.match(str(revision)):
        raise ValueError(
            f"hub id {repo_id!r} needs revision= a 40-hex commit hash (got {revision!r}): SD-2.1 repos change and "
            "disappear, so an unpinned hub load is refused. Pin the commit from workflow/weights.lock.yaml, or "
            f"pass a local folder (if {repo_id!r} was meant as a local folder, it does not exist)"
        )
    import huggingface_hub
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE if local_files_only is None else bool(local_files_only)
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=list(HUB_ALLOW_PATTERNS), local_files_only=offline
        )
    except Exception as error:  # the hub client raises many types; all mean "not available here"
        raise FileNotFoundError(
            f"could not get {repo_id}@{revision} from the Hugging Face hub or its local cache "
            f"(local_files_only={offline}): {type(error).__name__}: {error}; {FETCH_HINT}"
        ) from error
    return Path(folder)


class StableDiffusionPrior(LatentPrior):
    """Stable Diffusion (2.1-base) latent prior: frozen VAE + UNet, empty-prompt conditioning, DDIM abar_t.

    Build with :meth:`from_pretrained` or :meth:`from_spec`; the constructor takes already-loaded modules.
    """

    kind = "stable_diffusion"

    def __init__(
        self,
        vae: Any,
        unet: Any,
        empty_embedding: torch.Tensor,
        alphas_cumprod: torch.Tensor,
        source: dict[str, Any] | None = None,
        performance: PerformanceOptions | dict[str, Any] | None = None,
    ):
        for name, module in (("vae", vae), ("unet", unet)):
            module.requires_grad_(False)
            module.eval()
            if any(p.requires_grad for p in module.parameters()):
                raise RuntimeError(f"{name} still has trainable parameters after requires_grad_(False)")
        self.vae = vae
        self.unet = unet
        self.scaling_factor = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if int(unet.config.in_channels) != self.latent_channels:
            raise ValueError(
                f"unet.in_channels={unet.config.in_channels} does not match vae.latent_channels={self.latent_channels}"
            )
        if empty_embedding.ndim != 3 or empty_embedding.shape[0] != 1:
            raise ValueError(f"empty_embedding must have shape (1, tokens, width), got {tuple(empty_embedding.shape)}")
        if empty_embedding.shape[-1] != int(unet.config.cross_attention_dim):
            raise ValueError(
                f"empty_embedding width {empty_embedding.shape[-1]} does not match unet.cross_attention_dim="
                f"{unet.config.cross_attention_dim}"
            )
        self.empty_embedding = empty_embedding.detach().to(device=self.device, dtype=self.dtype)
        self._alphas_cumprod = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)
        self.num_train_timesteps = int(self._alphas_cumprod.shape[0])
        self.source = dict(source or {})
        self._timestep_tables: dict[torch.device, torch.Tensor] = {}
        self.performance = PerformanceOptions.from_mapping(performance)
        self._apply_performance()

    # -- speed options ----------------------------------------------------------------------------------
    def _apply_performance(self) -> None:
        """Put the modules into the state ``self.performance`` asks for (module docstring; done once)."""
        options, device = self.performance, self.device
        if options.attention in CUDA_ONLY_ATTENTION and device.type != "cuda":
            raise ValueError(
                f"config key 'prior.performance.attention': {options.attention!r} is an SDPA backend torch has only "
                f"for CUDA, but the prior is on {device}; use default, math, flash or matmul"
            )
        if options.autocast_bf16 and self.dtype != torch.float32:
            raise ValueError(
                f"config key 'prior.performance.autocast_bf16' needs the prior in float32 (autocast keeps float32 "
                f"weights and runs each op in bfloat16), but dtype is {str(self.dtype).removeprefix('torch.')}"
            )
        if device.type == "cuda":
            # Why process-wide: the solvers run the decoder's backward outside the prior's methods, so a flag set
            # only around our calls would not reach it.
            if options.tf32 is not None:
                torch.backends.cuda.matmul.allow_tf32 = options.tf32
                torch.backends.cudnn.allow_tf32 = options.tf32
            torch.backends.cudnn.benchmark = options.cudnn_benchmark
        if options.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if options.attention == "matmul":
            from diffusers.models.attention_processor import AttnProcessor

            self.vae.set_attn_processor(AttnProcessor())
        compiled = {"unet": self.unet, "decoder": self.vae.decoder, "encoder": self.vae.encoder}
        for name in options.compile:
            compiled[name].compile(mode=options.compile_mode)  # in place: parameter names and sharing unchanged

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.performance.channels_last else x

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.performance.autocast_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _vae_context(self) -> contextlib.ExitStack:
        """Autocast (if on) and, for an SDPA backend choice, that backend only, around a VAE forward."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._autocast())
        backend = _SDPA_BACKENDS.get(self.performance.attention)
        if backend is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([getattr(SDPBackend, backend)]))
        return stack

    def _timestep_table(self) -> torch.Tensor:
        """0 .. T-1 as an int64 tensor on the prior's device, built once per device."""
        device = self.device
        if device not in self._timestep_tables:
            self._timestep_tables[device] = torch.arange(self.num_train_timesteps, device=device)
        return self._timestep_tables[device]

    def _timesteps(self, t: int | torch.Tensor, batch: int) -> torch.Tensor:
        """(batch,) int64 timesteps on the device without a host synchronisation (module docstring)."""
        limit = self.num_train_timesteps
        if not isinstance(t, torch.Tensor):
            try:
                index = operator.index(t)
            except TypeError:
                raise ValueError(f"t must be an int or an integer tensor of shape ({batch},), got {t!r}") from None
            if not 0 <= index < limit:
                raise ValueError(f"t must lie in [0, {limit}), got {[index] * batch}")
            return self._timestep_table()[index].expand(batch)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be an int or an integer tensor of shape ({batch},), got {t!r}")
        if t.device.type == "cpu":
            if bool(((t < 0) | (t >= limit)).any()):  # a CPU tensor: checking it costs no device sync
                raise ValueError(f"t must lie in [0, {limit}), got {t.tolist()}")
            return t.to(device=self.device)
        torch._assert_async(((t >= 0) & (t < limit)).all(), f"t must lie in [0, {limit})")
        return t.to(device=self.device)

    # -- loading ----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        revision: str | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        local_files_only: bool | None = None,
        performance: PerformanceOptions | dict[str, Any] | None = None,
    ) -> StableDiffusionPrior:
        """Load from a local diffusers folder (used as is) or a hub id pinned to a 40-hex ``revision``.

        ``dtype`` applies to the UNet and the VAE, except that a float16 VAE whose config asks for
        ``force_upcast`` (SD-2.x does: its decoder overflows in fp16) is kept in float32, as diffusers'
        pipelines do. The text encoder always runs in float32, once. ``local_files_only=None`` follows
        ``HF_HUB_OFFLINE`` for hub ids; local folders never touch the network. ``performance``: speed options
        (:mod:`dwgf.priors.performance`).
        """
        performance = PerformanceOptions.from_mapping(performance)  # Why first: a bad option fails before loading
        if _is_hub_id(path_or_repo_id):
            return cls._from_hub(os.fspath(path_or_repo_id), revision, dtype, device, local_files_only, performance)
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} was given with the local folder {os.fspath(path_or_repo_id)!r}; a local "
                "folder is used as is (its files are hashed in describe()), so drop revision"
            )
        folder = check_model_folder(path_or_repo_id)
        source = {"repo_id": None, "revision": None, "path": str(folder.resolve())}
        return cls._load_folder(folder, _resolve_dtype(dtype), torch.device(device), source, performance)

    @classmethod
    def _from_hub(
        cls,
        repo_id: str,
        revision: str | None,
        dtype: str | torch.dtype,
        device: str | torch.device,
        local_files_only: bool | None,
        performance: PerformanceOptions | dict[str, Any] | None = None,
    ) -> StableDiffusionPrior:
        if not _HUB_ID.match(repo_id):
            raise ValueError(f"hub repo id must look like 'owner/name', got {repo_id!r}")
        torch_dtype = _resolve_dtype(dtype)  # Why first: a bad dtype should fail before any download
        folder = check_model_folder(_hub_snapshot(repo_id, revision, local_files_only))
        source = {"repo_id": repo_id, "revision": revision, "path": str(folder)}
        return cls._load_folder(folder, torch_dtype, torch.device(device), source, performance)

    @classmethod
    def _load_folder(
        cls,
        folder: Path,
        torch_dtype: torch.dtype,
        device: torch.device,
        source: dict[str, Any],
        performance: PerformanceOptions | dict[str, Any] | None = None,
    ) -> StableDiffusionPrior:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

        common = {"use_safetensors": True, "local_files_only": True}
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
        prediction_type = scheduler.config.prediction_type
        if prediction_type != "epsilon":
            raise ValueError(
                f"{folder}/scheduler/scheduler_config.json has prediction_type={prediction_type!r}; this prior needs "
                "an epsilon-prediction model (SD-2.1-base). The 768 px SD-2.1 (v-prediction) is a different model"
            )
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch_dtype, **common)
        vae_dtype = torch_dtype
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=vae_dtype, **common)
        if torch_dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae_dtype = torch.float32
            vae = vae.to(dtype=vae_dtype)
        empty = _empty_prompt_embedding(folder, device)
        source = {
            **source,
            "dtype": str(torch_dtype).removeprefix("torch."),
            "vae_dtype": str(vae_dtype).removeprefix("torch."),
        }
        return cls(
            vae=vae.to(device),
            unet=unet.to(device),
            empty_embedding=empty,
            alphas_cumprod=scheduler.alphas_cumprod,
            source=source,
            performance=performance,
        )

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> StableDiffusionPrior:
        """Build from ``{"path": folder}`` or ``{"repo_id": id, "revision": commit}`` plus optional ``dtype``,
        ``device``, ``local_files_only``, ``performance``; ``overrides`` replace spec keys (e.g. ``device="cuda"``)."""
        merged = {**dict(spec), **overrides}
        merged.pop("kind", None)
        unknown = set(merged) - _SPEC_KEYS
        if unknown:
            raise ValueError(
                f"unknown stable_diffusion prior spec keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}"
            )
        path, repo_id = merged.get("path"), merged.get("repo_id")
        if (path is None) == (repo_id is None):
            raise ValueError(
                f"a stable_diffusion prior spec needs exactly one of 'path' (local folder) or 'repo_id' (hub id with "
                f"'revision'), got path={path!r}, repo_id={repo_id!r}"
            )
        dtype, device = merged.get("dtype", "float32"), merged.get("device", "cpu")
        performance = PerformanceOptions.from_mapping(merged.get("performance"))
        if path is not None:
            if merged.get("revision") is not None:
                raise ValueError(f"spec has 'revision' with a local 'path' {path!r}; drop 'revision' or use 'repo_id'")
            return cls.from_pretrained(Path(path), dtype=dtype, device=device, performance=performance)
        return cls._from_hub(
            str(repo_id), merged.get("revision"), dtype, device, merged.get("local_files_only"), performance
        )

    @classmethod
    def from_descriptor(cls, folder: str | os.PathLike, **overrides: Any) -> StableDiffusionPrior:
        """Load what ``<folder>/stable_diffusion.json`` (written by ``dwgf acquire-weights``) names: the weights
        folder and the speed options; ``overrides`` (``dtype``, ``device``) as in :meth:`from_pretrained`."""
        import json

        path = Path(folder) / DESCRIPTOR_NAME
        descriptor = json.loads(path.read_text(encoding="utf-8"))
        if descriptor.get("schema") != DESCRIPTOR_SCHEMA or "weights" not in descriptor:
            raise ValueError(f"{path}: not a {DESCRIPTOR_SCHEMA} descriptor (needs keys 'schema' and 'weights')")
        options = {"performance": descriptor.get("performance"), **overrides}
        return cls.from_pretrained(Path(descriptor["weights"]), **options)

    # -- LatentPrior interface ----------------------------------------------------------------------------
    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the UNet (and, except for an upcast fp16 VAE, of the VAE)."""
        return self.unet.dtype

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """E(x) = s · (sample of q(z|x) drawn with ``generator``, or its mean); output in x's dtype."""
        self._check_images(x)
        with self._vae_context():
            posterior = self.vae.encode(self._layout(x.to(device=self.device, dtype=self.vae.dtype))).latent_dist
        if posterior.parameters.dtype != self.vae.dtype:  # autocast: draw the sample in the weights' dtype
            posterior = type(posterior)(posterior.parameters.to(self.vae.dtype))
        z = posterior.sample(generator=generator) if sample else posterior.mean
        return (z * self.scaling_factor).to(dtype=x.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D(z) = vae.decode(z / s).sample, not clamped, differentiable in z; output in z's dtype."""
        self._check_latents(z, "z")
        with self._vae_context():
            image = self.vae.decode(self._layout(z.to(device=self.device, dtype=self.vae.dtype) / self.scaling_factor))
        return image.sample.to(dtype=z.dtype)

    def eps(self, z_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """unet(z_t, t, empty-prompt embedding).sample for a batch; ``t`` an int or a (B,) tensor; z_t's dtype."""
        self._check_latents(z_t, "z_t")
        batch = z_t.shape[0]
        timesteps = self._timesteps(t, batch)
        context = self.empty_embedding.expand(batch, -1, -1)
        with self._autocast():
            out = self.unet(self._layout(z_t.to(device=self.device, dtype=self.dtype)), timesteps,
                            encoder_hidden_states=context).sample  # fmt: skip
        return out.to(dtype=z_t.dtype)

    def describe(self) -> dict[str, Any]:
        """Source (path / repo id / revision), dtypes, scaling factor, and size + sha256 of every file read."""
        folder = Path(self.source["path"]) if self.source.get("path") else None
        files: dict[str, dict[str, Any]] = {}
        if folder is not None:
            for relative in (*REQUIRED_FILES, *OPTIONAL_FILES):
                path = folder / relative
                if path.is_file():
                    files[relative] = {"size": path.stat().st_size, "sha256": _cached_sha256(path)}
        return {
            "kind": self.kind,
            "path": self.source.get("path"),
            "repo_id": self.source.get("repo_id"),
            "revision": self.source.get("revision"),
            "dtype": str(self.dtype).removeprefix("torch."),
            "vae_dtype": str(self.vae.dtype).removeprefix("torch."),
            "scaling_factor": self.scaling_factor,
            "latent_channels": self.latent_channels,
            "downsample_factor": self.downsample_factor,
            "prediction_type": "epsilon",
            "conditioning": "empty prompt, no classifier-free guidance",
            "performance": self.performance.as_dict(),
            **({"cuda_backend_flags": _cuda_backend_flags()} if self.device.type == "cuda" else {}),
            "files": files,
        }

    # -- helpers ------------------------------------------------------------------------------------------
    def _check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(
                f"image side {tuple(x.shape[-2:])} is not divisible by the VAE downsample factor "
                f"{self.downsample_factor}"
            )

    def _check_latents(self, z: torch.Tensor, argument: str) -> None:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"{argument} must be latents of shape (B, {self.latent_channels}, h, w), got {tuple(z.shape)}"
            )


def _cuda_backend_flags() -> dict[str, bool]:
    """The process-wide CUDA flags that change how the prior's kernels run (recorded by ``describe``)."""
    return {
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }


def _empty_prompt_embedding(folder: Path, device: torch.device) -> torch.Tensor:
    """CLIP last hidden state of the empty prompt, padded to ``model_max_length`` (as diffusers'
    ``encode_prompt([""], do_classifier_free_guidance=False)`` computes it for SD-2.x, which has no
    ``use_attention_mask`` and no clip-skip). Runs the text encoder once in float32, then frees it."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True, local_files_only=True)
    text_encoder = text_encoder.to(device=device, dtype=torch.float32).eval()
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        embedding = text_encoder(ids.to(device))[0].detach().clone()
    # Why: the SD-2 text encoder is 1.3 GB in fp32; nothing else needs it once c_empty is known.
    del text_encoder, tokenizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return embedding
