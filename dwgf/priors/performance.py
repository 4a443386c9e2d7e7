"""Speed options of the Stable Diffusion prior (config key ``prior.performance``), torch-free.

Each option changes how the UNet and VAE are executed, never what they compute beyond floating-point rounding;
all defaults reproduce the plain eager fp32 execution. The options are part of the suite's spec: they are in the
``acquire-weights`` record's config, in ``prior/stable_diffusion.json`` (which the solve jobs load), and in
:meth:`StableDiffusionPrior.describe` (docs/weights.md). The measured effect of each one is in
``benchmarks/README.md``.

=================== ========= ==========================================================================================
key                 default   effect
=================== ========= ==========================================================================================
``channels_last``   false     UNet/VAE weights and their image/latent inputs in NHWC (``torch.channels_last``)
``compile``         []        ``torch.compile`` these modules in place: any of ``unet``, ``decoder``, ``encoder``
                              (forward and, through AOTAutograd, backward)
``compile_mode``    default   ``torch.compile`` mode; ``reduce-overhead`` = CUDA graphs of the compiled regions
``attention``       default   the VAE's self-attention (1 head of dim 512): ``default`` (diffusers' SDPA processor,
                              backend chosen by torch), ``math`` / ``flash`` / ``efficient`` / ``cudnn`` (that SDPA
                              backend only; an unavailable one raises), ``matmul`` (diffusers' plain
                              baddbmm-softmax-bmm processor)
``autocast_bf16``   false     UNet/VAE forward under ``torch.autocast(bfloat16)`` with float32 weights (needs
                              ``dtype: float32``); latents, gradients and Adam state stay float32
``tf32``            null      CUDA only, process-wide: ``true``/``false`` set TF32 for matmuls and cuDNN convolutions;
                              ``null`` leaves torch's own defaults (matmul fp32, cuDNN conv TF32)
``cudnn_benchmark`` false     CUDA only, process-wide: ``torch.backends.cudnn.benchmark``
=================== ========= ==========================================================================================

``efficient`` and ``cudnn`` exist only on CUDA; on a CPU prior they are refused (``ValueError``), the others are
valid everywhere (``tf32`` and ``cudnn_benchmark`` do nothing on the CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Any

COMPILE_MODULES: tuple[str, ...] = ("unet", "decoder", "encoder")
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ATTENTION_BACKENDS: tuple[str, ...] = ("default", "math", "flash", "efficient", "cudnn", "matmul")
#: SDPA backends that torch implements only for CUDA tensors.
CUDA_ONLY_ATTENTION: tuple[str, ...] = ("efficient", "cudnn")

#: Name of the file in ``<results>/<suite>/prior/`` that points the solve jobs at the weights and these options.
DESCRIPTOR_NAME = "stable_diffusion.json"
DESCRIPTOR_SCHEMA = "dwgf.sd-prior/1"


@dataclasses.dataclass(frozen=True)
class PerformanceOptions:
    """Validated ``prior.performance`` (see the module docstring for each field)."""

    channels_last: bool = False
    compile: tuple[str, ...] = ()
    compile_mode: str = "default"
    attention: str = "default"
    autocast_bf16: bool = False
    tf32: bool | None = None
    cudnn_benchmark: bool = False

    def __post_init__(self) -> None:
        where = "prior.performance"
        for name in ("channels_last", "autocast_bf16", "cudnn_benchmark"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config key '{where}.{name}' must be true or false, got {getattr(self, name)!r}")
        if self.tf32 is not None and not isinstance(self.tf32, bool):
            raise ValueError(f"config key '{where}.tf32' must be true, false or null, got {self.tf32!r}")
        modules = tuple(self.compile) if isinstance(self.compile, (list, tuple)) else None
        if modules is None or any(m not in COMPILE_MODULES for m in modules) or len(set(modules)) != len(modules):
            raise ValueError(
                f"config key '{where}.compile' must be a list of distinct names from {list(COMPILE_MODULES)}, "
                f"got {self.compile!r}"
            )
        object.__setattr__(self, "compile", tuple(m for m in COMPILE_MODULES if m in modules))  # canonical order
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"config key '{where}.compile_mode' must be one of {list(COMPILE_MODES)}, got {self.compile_mode!r}"
            )
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(
                f"config key '{where}.attention' must be one of {list(ATTENTION_BACKENDS)}, got {self.attention!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | PerformanceOptions | None) -> PerformanceOptions:
        """Options from a config mapping (missing keys take their defaults); unknown keys raise naming them."""
        if isinstance(mapping, PerformanceOptions):
            return mapping
        mapping = dict(mapping or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown} in 'prior.performance'; allowed: {sorted(known)}")
        return cls(**mapping)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with every key (what provenance records)."""
        out = dataclasses.asdict(self)
        out["compile"] = list(self.compile)
        return out

    @property
    def is_default(self) -> bool:
        return self == PerformanceOptions()


def defaults() -> dict[str, Any]:
    """Every option at its default (the values the config schema declares)."""
    return PerformanceOptions().as_dict()
