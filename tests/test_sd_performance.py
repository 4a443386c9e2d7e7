"""Speed options of the Stable Diffusion prior (dwgf.priors.performance): each gives the default's results.

Every option is compared with the default prior on the tiny SD for the three things a solver uses: eps(z_t, t),
D(z) with its vector-Jacobian product dD/dz^T v (the decoder backward of DWGF), and E(x) (posterior mean).
Tolerances: float32 options agree to 1e-5 of the output scale (kernel reordering only); bf16 autocast to 5 %
(an 8-bit mantissa, as the bfloat16 prior's test in test_stable_diffusion.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from dwgf.priors import load_prior
from dwgf.priors.performance import DESCRIPTOR_NAME, DESCRIPTOR_SCHEMA, PerformanceOptions, defaults
from dwgf.priors.stable_diffusion import StableDiffusionPrior


@pytest.fixture(scope="module")
def default_prior(tiny_sd_path):
    return StableDiffusionPrior.from_pretrained(tiny_sd_path)


def _outputs(prior):
    """eps, decode, the decoder's VJP and the encoder mean on fixed inputs (float32 results, on the CPU)."""
    g = torch.Generator().manual_seed(3)
    z, v, x = (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.randn(2, 3, 64, 64, generator=g),
        torch.rand(2, 3, 64, 64, generator=g),
    )
    z, v, x = z.to(prior.device), v.to(prior.device), (x * 2 - 1).to(prior.device)
    with torch.no_grad():
        eps = prior.eps(z, 500)
        eps_batch_t = prior.eps(z, torch.tensor([10, 900], device=prior.device))
        encoded = prior.encode(x, sample=False)
    z_grad = z.clone().requires_grad_(True)
    image = prior.decode(z_grad)
    (vjp,) = torch.autograd.grad((image * v).sum(), z_grad)
    out = {"eps": eps, "eps_batch_t": eps_batch_t, "decode": image.detach(), "vjp": vjp, "encode": encoded}
    return {key: value.cpu() for key, value in out.items()}


def _assert_close(got, want, relative):
    for key, reference in want.items():
        assert got[key].dtype == torch.float32, key
        scale = reference.abs().max()
        error = (got[key] - reference).abs().max()
        assert error <= relative * scale, f"{key}: max |diff| {error:.3g} > {relative} x {scale:.3g}"


@pytest.mark.parametrize(
    "options, relative",
    [
        ({"channels_last": True}, 1e-5),
        ({"attention": "math"}, 1e-5),
        ({"attention": "flash"}, 1e-5),
        ({"attention": "matmul"}, 1e-5),
        ({"tf32": True, "cudnn_benchmark": True}, 0.0),  # CUDA-only flags: bit-identical on the CPU
        ({"channels_last": True, "attention": "matmul"}, 1e-5),
        ({"autocast_bf16": True}, 0.05),
    ],
    ids=["channels_last", "sdpa_math", "sdpa_flash", "matmul", "tf32_cudnn_benchmark", "combined", "autocast_bf16"],
)
def test_option_matches_the_default(tiny_sd_path, default_prior, options, relative):
    want = _outputs(default_prior)
    prior = StableDiffusionPrior.from_pretrained(tiny_sd_path, performance=options)
    got = _outputs(prior)
    _assert_close(got, want, relative)
    if options.get("autocast_bf16"):
        # it really ran in bfloat16 (an option that did nothing would also pass the tolerance)
        assert not torch.equal(got["eps"], want["eps"]) and not torch.equal(got["decode"], want["decode"])
    assert prior.describe()["performance"] == {**defaults(), **options}


def test_compile_option_compiles_the_named_modules_in_place(tiny_sd_path):
    # Wiring only on the CPU: running the compiled tiny SD here took > 15 min of a shared 2-core machine (inductor
    # builds C++ kernels), so the numerical comparison below runs on a GPU (benchmarks/gpu_checks.sh).
    prior = StableDiffusionPrior.from_pretrained(tiny_sd_path, performance={"compile": ["decoder"]})
    assert getattr(prior.vae.decoder, "_compiled_call_impl", None) is not None
    assert getattr(prior.unet, "_compiled_call_impl", None) is None
    assert getattr(prior.vae.encoder, "_compiled_call_impl", None) is None
    assert prior.describe()["performance"]["compile"] == ["decoder"]


@pytest.mark.gpu
def test_compiled_modules_match_the_default_on_gpu(tiny_sd_path):
    want = _outputs(StableDiffusionPrior.from_pretrained(tiny_sd_path, device="cuda"))
    prior = StableDiffusionPrior.from_pretrained(
        tiny_sd_path, device="cuda", performance={"compile": ["unet", "decoder", "encoder"]}
    )
    _assert_close(_outputs(prior), want, 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "options",
    [{"attention": "efficient"}, {"attention": "math"}, {"channels_last": True, "cudnn_benchmark": True}],
    ids=["sdpa_efficient", "sdpa_math", "channels_last_cudnn_benchmark"],
)
def test_cuda_options_match_the_default_on_gpu(tiny_sd_path, options):
    want = _outputs(StableDiffusionPrior.from_pretrained(tiny_sd_path, device="cuda"))
    _assert_close(_outputs(StableDiffusionPrior.from_pretrained(tiny_sd_path, device="cuda", performance=options)),
                  want, 1e-4)  # fmt: skip


def test_options_are_validated_with_the_config_key(tiny_sd_path):
    with pytest.raises(ValueError, match=r"prior\.performance.*'efficient'.*only\s+for CUDA"):
        StableDiffusionPrior.from_pretrained(tiny_sd_path, performance={"attention": "efficient"})
    with pytest.raises(ValueError, match=r"prior\.performance\.autocast_bf16.*float32"):
        StableDiffusionPrior.from_pretrained(tiny_sd_path, dtype="bfloat16", performance={"autocast_bf16": True})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['fast'\] in 'prior\.performance'"):
        PerformanceOptions.from_mapping({"fast": True})
    with pytest.raises(ValueError, match=r"prior\.performance\.compile"):
        PerformanceOptions.from_mapping({"compile": ["vae"]})
    with pytest.raises(ValueError, match=r"prior\.performance\.tf32"):
        PerformanceOptions.from_mapping({"tf32": "yes"})
    assert PerformanceOptions.from_mapping({"compile": ["encoder", "unet"]}).compile == ("unet", "encoder")


def test_schema_declares_every_option_with_its_default():
    import yaml

    schema = yaml.safe_load(open("workflow/schemas/config.schema.yaml", encoding="utf-8"))
    declared = schema["$defs"]["sd_performance"]["properties"]
    assert {key: value.get("default") for key, value in declared.items()} == defaults()


def test_int_timesteps_come_from_one_cached_table(default_prior):
    # An int t indexes a table built once per device: no new tensor, hence no host-to-device copy per step.
    z = torch.zeros(3, 4, 8, 8)
    first, second = default_prior._timesteps(999, 3), default_prior._timesteps(2, 3)
    assert first.tolist() == [999] * 3 and second.tolist() == [2] * 3
    assert first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
    with torch.no_grad():
        assert torch.equal(default_prior.eps(z, 999), default_prior.eps(z, torch.tensor(999)))


def test_descriptor_carries_weights_and_options_to_load_prior(tmp_path, tiny_sd_path):
    (tmp_path / DESCRIPTOR_NAME).write_text(
        json.dumps({"schema": DESCRIPTOR_SCHEMA, "weights": str(tiny_sd_path), "performance": {"channels_last": True}})
    )
    prior = load_prior(tmp_path, dtype=torch.float32)
    assert isinstance(prior, StableDiffusionPrior) and prior.performance.channels_last
    assert prior.describe()["path"] == str(tiny_sd_path.resolve())
    (tmp_path / DESCRIPTOR_NAME).write_text(json.dumps({"weights": str(tiny_sd_path)}))
    with pytest.raises(ValueError, match="dwgf.sd-prior/1"):
        load_prior(tmp_path)


@pytest.mark.gpu
def test_eps_with_int_timestep_does_not_synchronise(tiny_sd_path):
    prior = StableDiffusionPrior.from_pretrained(tiny_sd_path, device="cuda")
    z = torch.randn(2, 4, 8, 8, device="cuda")
    with torch.no_grad():
        prior.eps(z, 999)  # builds the timestep table (one copy, once)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for t in (999, 500, 2):
                prior.eps(z, t)
        finally:
            torch.cuda.set_sync_debug_mode("default")
