"""A tiny, random-weight Stable-Diffusion-style diffusers folder, and the real SD-2.1-base architecture.

:func:`build_tiny_sd` writes, with the libraries' own ``save_pretrained``, the same folder layout that
``Manojb/stable-diffusion-2-1-base`` has (docs/method.md#components)::

    model_index.json
    scheduler/scheduler_config.json          DDIM, SD scaled-linear betas 0.00085 -> 0.012, steps_offset 1, epsilon
    unet/{config.json, diffusion_pytorch_model.safetensors}
    vae/{config.json, diffusion_pytorch_model.safetensors}   4 latent channels, 4 blocks -> downsampling 8
    text_encoder/{config.json, model.safetensors}            tiny CLIPTextModel
    tokenizer/{vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json}

so :class:`~dwgf.priors.stable_diffusion.StableDiffusionPrior` and :mod:`dwgf.acquire` run through exactly the
code paths they use for the real weights. Only the widths are tiny (about 2 M parameters, a few MB on disk).

The tokenizer is a byte-level BPE vocabulary written locally: the 256 byte symbols of CLIP's byte-to-unicode
table, each also with the end-of-word suffix ``</w>``, one merge, and the two special tokens. Like SD-2.x it
pads with ``"!"`` (id 0), so an empty prompt tokenises to ``[BOS, EOS, 0, 0, ...]`` (77 ids).

:func:`build_sd21_base_architecture` instantiates the UNet and VAE of SD-2.1-base with random weights from the
configs written out below (docs/install.md), for GPU timing runs that must not depend on the download;
:func:`build_random_sd` writes them (with an SD-2.1-shaped text encoder) as a diffusers folder, and
:func:`write_weights_lock` a weights lock with the sha256 of its files (``dwgf build-random-sd``), so the
``gpu_smoke`` suites acquire them through the real ``acquire-weights`` path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: UNet of stabilityai/stable-diffusion-2-1-base (diffusers ``UNet2DConditionModel`` config; public facts,
#: also listed in docs/install.md). ``upcast_attention`` is written as False from memory of the base
#: (512 px, epsilon) model's config; the 768-v model sets it True. It only changes fp16 attention numerics.
SD21_BASE_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "upcast_attention": False,
}

#: VAE (``AutoencoderKL``) of SD-2.x. ``sample_size`` only matters for tiled decoding (unused here); the hub
#: config may say 768 rather than 512 (uncertain), which does not change any computation we run.
SD21_BASE_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

#: Scheduler as DWGF uses it: the repo's PNDM config reloaded as DDIM (docs/method.md#components).
SD21_BASE_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

#: OpenCLIP ViT-H/14 text tower as converted for diffusers (``CLIPTextModel``): 23 layers (the penultimate
#: layer of the 24-layer tower, as SD-2 uses it), width 1024. Reference only; nothing here instantiates it.
SD21_BASE_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
}

_TINY_UNET_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "norm_num_groups": 8,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

_TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 32, 64, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "scaling_factor": 0.18215,
}

_TINY_TEXT_WIDTH = 32
_MODEL_MAX_LENGTH = 77
_BOS, _EOS, _PAD = "<|startoftext|>", "<|endoftext|>", "!"


def _byte_symbols() -> list[str]:
    """CLIP/GPT-2 byte-to-unicode table in vocabulary order: printable bytes as themselves, then the other
    bytes mapped to code points 256, 257, ... (so no symbol is whitespace or a control character)."""
    order = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = [chr(b) for b in order]
    remaining = [b for b in range(256) if b not in set(order)]
    symbols += [chr(256 + n) for n in range(len(remaining))]
    return symbols


def _tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    merges = [("a", "b</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return vocab, merges


def _write_tokenizer(folder: Path) -> int:
    """Write a CLIPTokenizer folder in the SD-2.x layout; return the vocabulary size."""
    vocab, merges = _tiny_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), encoding="utf-8"
    )
    special = {"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _PAD}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": _MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return len(vocab)


def build_tiny_sd_modules(seed: int = 0, sample_size: int = 64) -> dict[str, Any]:
    """Random-weight tiny ``unet``, ``vae``, ``text_encoder`` and ``scheduler``, deterministic in ``seed``.

    ``sample_size`` is the image side in pixels (the UNet's is ``sample_size // 8``). The global torch RNG is
    left untouched (initialisation runs inside ``torch.random.fork_rng``).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if not isinstance(sample_size, int) or sample_size <= 0 or sample_size % 8:
        raise ValueError(f"sample_size must be a positive multiple of 8 (image pixels), got {sample_size!r}")
    vocab, _ = _tiny_vocab()
    text_config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=_TINY_TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MODEL_MAX_LENGTH,
        hidden_act="gelu",
        projection_dim=_TINY_TEXT_WIDTH,
        bos_token_id=vocab[_BOS],
        eos_token_id=vocab[_EOS],
        pad_token_id=vocab[_PAD],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNet2DConditionModel(sample_size=sample_size // 8, **_TINY_UNET_CONFIG)
        vae = AutoencoderKL(sample_size=sample_size, **_TINY_VAE_CONFIG)
        text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(**SD21_BASE_SCHEDULER_CONFIG)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "scheduler": scheduler}


def build_tiny_sd(folder: str | Path, seed: int = 0, sample_size: int = 64) -> Path:
    """Write a tiny random-weight SD-style diffusers folder at ``folder`` and return its path.

    Weights are safetensors (the only format the prior accepts). The same ``seed`` gives byte-identical weight
    files. Takes well under a second once diffusers is imported; about 7 MB on disk.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = build_tiny_sd_modules(seed=seed, sample_size=sample_size)
    modules["unet"].save_pretrained(folder / "unet", safe_serialization=True)
    modules["vae"].save_pretrained(folder / "vae", safe_serialization=True)
    modules["text_encoder"].save_pretrained(folder / "text_encoder", safe_serialization=True)
    modules["scheduler"].save_pretrained(folder / "scheduler")
    _write_tokenizer(folder / "tokenizer")
    _write_model_index(folder)
    return folder


def build_sd21_base_architecture(
    dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[Any, Any]:
    """(unet, vae) with the SD-2.1-base architecture and random weights, frozen, in ``dtype`` on ``device``.

    For timing and memory measurements only: the outputs are meaningless. UNet about 866 M parameters, VAE
    about 84 M (initialising the UNet takes ~12 s on 2 CPU threads; docs/install.md).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
        dtype = getattr(torch, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG)
        vae = AutoencoderKL(**SD21_BASE_VAE_CONFIG)
    for module in (unet, vae):
        module.requires_grad_(False)
        module.eval()
    return unet.to(device=device, dtype=dtype), vae.to(device=device, dtype=dtype)


def _sd21_text_encoder_config() -> Any:
    """SD-2.1-base text tower shapes (:data:`SD21_BASE_TEXT_ENCODER_CONFIG`) with the tiny tokenizer's special ids
    (its ids are all below the real vocabulary size, so the embedding table keeps the published shape)."""
    from transformers import CLIPTextConfig

    vocab, _ = _tiny_vocab()
    return CLIPTextConfig(
        **SD21_BASE_TEXT_ENCODER_CONFIG,
        bos_token_id=vocab[_BOS],
        eos_token_id=vocab[_EOS],
        pad_token_id=vocab[_PAD],
    )


def build_random_sd(folder: str | Path, arch: str = "sd21", seed: int = 0, sample_size: int = 64) -> Path:
    """A random-weight diffusers folder in the layout the prior reads: ``arch="tiny"`` is :func:`build_tiny_sd`
    (``sample_size`` = image side), ``arch="sd21"`` has the SD-2.1-base UNet, VAE and text-encoder shapes (UNet
    866 M, VAE 84 M, text encoder 340 M parameters; about 5.2 GB of float32 safetensors) with the tiny tokenizer.

    For cost measurements and end-to-end DAG runs at the real architecture only: the outputs are meaningless.
    The same ``seed`` gives byte-identical weight files with the same torch/diffusers versions.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    if arch == "tiny":
        return build_tiny_sd(folder, seed=seed, sample_size=sample_size)
    if arch != "sd21":
        raise ValueError(f"arch must be 'sd21' or 'tiny', got {arch!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        modules = {
            "unet": UNet2DConditionModel(**SD21_BASE_UNET_CONFIG),
            "vae": AutoencoderKL(**SD21_BASE_VAE_CONFIG),
        }
        # Why one module at a time: the UNet and the text tower together are ~5 GB of float32 in memory.
        for name, module in modules.items():
            module.save_pretrained(folder / name, safe_serialization=True)
        del modules
        text_encoder = CLIPTextModel(_sd21_text_encoder_config())
        text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
        del text_encoder
    DDIMScheduler(**SD21_BASE_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    _write_tokenizer(folder / "tokenizer")
    _write_model_index(folder)
    return folder


def _write_model_index(folder: Path) -> None:
    from diffusers import __version__ as diffusers_version

    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers_version,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n", encoding="utf-8")


def write_weights_lock(folder: str | Path, lock_path: str | Path, name: str) -> Path:
    """Write a ``dwgf.weights-lock/1`` lock for the diffusers folder ``folder``: the files the prior reads with
    their sha256, as ``dwgf acquire-weights`` checks them (its ``source: local`` path copies from ``folder``)."""
    import yaml

    from dwgf.acquire import LOCK_SCHEMA, validate_lock
    from dwgf.io import atomic_write_bytes, sha256_file
    from dwgf.priors.stable_diffusion import HUB_ALLOW_PATTERNS

    folder = Path(folder)
    present = [relative for relative in HUB_ALLOW_PATTERNS if (folder / relative).is_file()]
    lock = {
        "schema": LOCK_SCHEMA,
        "model": {
            "name": name,
            # Not a hub repo: the files exist only where they were built; acquire them with source: local.
            "mirrors": [{"repo_id": f"local/{name}", "revision": None, "verified": False}],
            "allow_patterns": list(HUB_ALLOW_PATTERNS),
            "files": {relative: sha256_file(folder / relative) for relative in present},
        },
    }
    validate_lock(lock, where=str(lock_path))
    header = (
        f"# Lock of random-weight weights built by `dwgf build-random-sd` into {folder.resolve()}\n"
        "# (cost and DAG tests only; the sha256s were computed from the files just written).\n"
    )
    atomic_write_bytes(Path(lock_path), (header + yaml.safe_dump(lock, sort_keys=False)).encode("utf-8"))
    return Path(lock_path)
