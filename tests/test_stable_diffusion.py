"""StableDiffusionPrior and the tiny SD folder: every check compares with diffusers/transformers called directly."""

from __future__ import annotations

import gc
import shutil

import pytest
import torch

from dwgf.io import sha256_file
from dwgf.priors import load_prior, scaled_linear_alphas_cumprod
from dwgf.priors.stable_diffusion import REQUIRED_FILES, StableDiffusionPrior
from dwgf.testing.tiny_sd import SD21_BASE_UNET_CONFIG, SD21_BASE_VAE_CONFIG, build_tiny_sd, build_tiny_sd_modules

SCALE = 0.18215


@pytest.fixture(scope="module")
def prior(tiny_sd_path):
    return StableDiffusionPrior.from_pretrained(tiny_sd_path)


@pytest.fixture(scope="module")
def reference(tiny_sd_path):
    """UNet, VAE and empty-prompt embedding loaded without dwgf."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_path / "unet").eval()
    vae = AutoencoderKL.from_pretrained(tiny_sd_path / "vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd_path / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(tiny_sd_path / "text_encoder").eval()
    ids = tokenizer([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embedding = text_encoder(ids)[0]
    return {"unet": unet, "vae": vae, "embedding": embedding, "ids": ids}


def _images(batch=2, side=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, side, side, generator=g) * 2 - 1


def test_tiny_sd_round_trips_through_save_and_load(tiny_sd_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    built = build_tiny_sd_modules(seed=0, sample_size=64)
    loaded = {
        "unet": UNet2DConditionModel.from_pretrained(tiny_sd_path / "unet"),
        "vae": AutoencoderKL.from_pretrained(tiny_sd_path / "vae"),
        "text_encoder": CLIPTextModel.from_pretrained(tiny_sd_path / "text_encoder"),
    }
    for name, module in loaded.items():
        reference = built[name].state_dict()
        state = module.state_dict()
        assert set(state) == set(reference), name
        for key, tensor in reference.items():
            assert torch.equal(state[key], tensor), f"{name}.{key} changed through save/load"


def test_tiny_sd_is_deterministic_in_seed(tmp_path, tiny_sd_path):
    same = build_tiny_sd(tmp_path / "same", seed=0)
    other = build_tiny_sd(tmp_path / "other", seed=1)
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert sha256_file(same / weights) == sha256_file(tiny_sd_path / weights)
    assert sha256_file(other / weights) != sha256_file(tiny_sd_path / weights)
    total = sum(p.stat().st_size for p in tiny_sd_path.rglob("*") if p.is_file())
    assert total < 12e6


def test_tiny_tokenizer_pads_empty_prompt_like_sd2(reference):
    ids = reference["ids"][0].tolist()
    assert len(ids) == 77
    # BOS, EOS, then the SD-2.x pad token "!" (id 0 in both the real and the tiny vocabulary)
    assert ids[2:] == [0] * 75
    assert ids[0] != ids[1] and 0 not in ids[:2]


def test_prior_interface_shapes_and_metadata(prior):
    assert prior.kind == "stable_diffusion"
    assert prior.scaling_factor == SCALE
    assert prior.downsample_factor == 8 and prior.latent_channels == 4
    assert prior.latent_shape(64) == (4, 8, 8)
    assert prior.dtype == torch.float32 and prior.device == torch.device("cpu")
    abar = prior.alphas_cumprod
    assert abar.dtype == torch.float64 and abar.shape == (1000,)
    torch.testing.assert_close(abar, scaled_linear_alphas_cumprod(), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="not divisible"):
        prior.latent_shape(60)


def test_encode_decode_eps_match_diffusers(prior, reference):
    x = _images()
    with torch.no_grad():
        mean_ref = reference["vae"].encode(x).latent_dist.mean * SCALE
        z = prior.encode(x, sample=False)
        torch.testing.assert_close(z, mean_ref)
        assert z.shape == (2, 4, 8, 8)

        # a posterior sample is mean + std * noise, the noise drawn from the given generator
        dist = reference["vae"].encode(x).latent_dist
        noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(7))
        sampled = prior.encode(x, generator=torch.Generator().manual_seed(7), sample=True)
        torch.testing.assert_close(sampled, (dist.mean + dist.std * noise) * SCALE)
        assert not torch.allclose(sampled, z)

        image = prior.decode(z)
        torch.testing.assert_close(image, reference["vae"].decode(z / SCALE).sample)
        assert image.shape == (2, 3, 64, 64)

        eps = prior.eps(z, 500)
        expected = reference["unet"](
            z, torch.tensor([500, 500]), encoder_hidden_states=reference["embedding"].expand(2, -1, -1)
        ).sample
        torch.testing.assert_close(eps, expected)
        # per-sample timesteps
        eps_pair = prior.eps(z, torch.tensor([10, 990]))
        torch.testing.assert_close(eps_pair[1:], prior.eps(z[1:], 990))
        assert not torch.allclose(eps_pair[:1], prior.eps(z[:1], 990))


def test_weights_frozen_and_decode_differentiable(prior, reference):
    params = [*prior.unet.parameters(), *prior.vae.parameters()]
    assert params and not any(p.requires_grad for p in params)
    assert not prior.unet.training and not prior.vae.training

    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    prior.decode(z).square().sum().backward()
    # independent gradient: same function through the reference VAE
    z_ref = z.detach().clone().requires_grad_(True)
    reference["vae"].decode(z_ref / SCALE).sample.square().sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad)
    assert all(p.grad is None for p in prior.vae.parameters())


def test_empty_embedding_computed_once_and_text_encoder_released(tiny_sd_path, reference):
    from transformers import CLIPTextModel

    gc.collect()
    before = sum(type(o) is CLIPTextModel for o in gc.get_objects())
    fresh = StableDiffusionPrior.from_pretrained(tiny_sd_path)
    gc.collect()
    after = sum(type(o) is CLIPTextModel for o in gc.get_objects())
    assert after == before, "the text encoder is still referenced after loading"
    assert not hasattr(fresh, "text_encoder") and not hasattr(fresh, "tokenizer")
    assert fresh.empty_embedding.shape == (1, 77, 32)
    torch.testing.assert_close(fresh.empty_embedding, reference["embedding"])
    stored = fresh.empty_embedding.clone()
    fresh.eps(torch.zeros(3, 4, 8, 8), 999)
    assert torch.equal(fresh.empty_embedding, stored)


def test_bfloat16_on_cpu(tiny_sd_path, prior):
    low = StableDiffusionPrior.from_pretrained(tiny_sd_path, dtype="bfloat16")
    assert low.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in low.unet.parameters())
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eps_low, eps_full = low.eps(z, 300), prior.eps(z, 300)
        image_low, image_full = low.decode(z), prior.decode(z)
    assert eps_low.dtype == torch.float32 and image_low.dtype == torch.float32
    assert torch.isfinite(eps_low).all()
    # bf16 has an 8-bit mantissa: agreement to a few percent of the signal, but not exact
    assert (eps_low - eps_full).abs().max() < 0.05 * eps_full.abs().max()
    assert (image_low - image_full).abs().max() < 0.05 * image_full.abs().max() + 1e-3
    assert not torch.equal(eps_low, eps_full)
    assert low.describe()["dtype"] == "bfloat16"


def test_describe_hashes_each_file(prior, tiny_sd_path):
    info = prior.describe()
    assert info["scaling_factor"] == SCALE and info["revision"] is None
    assert info["path"] == str(tiny_sd_path.resolve())
    for relative in REQUIRED_FILES:
        assert info["files"][relative]["sha256"] == sha256_file(tiny_sd_path / relative)
        assert info["files"][relative]["size"] == (tiny_sd_path / relative).stat().st_size


def test_missing_file_is_named_with_the_fetch_command(tmp_path, tiny_sd_path):
    broken = tmp_path / "sd"
    shutil.copytree(tiny_sd_path, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"unet/diffusion_pytorch_model\.safetensors.*acquire-weights"):
        StableDiffusionPrior.from_pretrained(broken)
    # a pickled .bin in its place is named as refused
    (broken / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        StableDiffusionPrior.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StableDiffusionPrior.from_pretrained(tmp_path / "nowhere")


def test_hub_id_needs_pinned_revision():
    with pytest.raises(ValueError, match="40-hex commit"):
        StableDiffusionPrior.from_pretrained("Manojb/stable-diffusion-2-1-base")
    with pytest.raises(ValueError, match="40-hex commit"):
        StableDiffusionPrior.from_pretrained("Manojb/stable-diffusion-2-1-base", revision="main")
    with pytest.raises(ValueError, match="revision"):
        StableDiffusionPrior.from_spec({"repo_id": "Manojb/stable-diffusion-2-1-base"})


def test_pinned_hub_id_offline_names_the_fetch_command():
    # HF_HUB_OFFLINE=1 (conftest): a pinned id that is not in the local cache fails loudly, no download attempt
    with pytest.raises(FileNotFoundError, match="acquire-weights"):
        StableDiffusionPrior.from_pretrained("nobody/not-a-cached-model", revision="0" * 40)


def test_from_spec_and_load_prior(tiny_sd_path, prior):
    via_spec = load_prior({"kind": "stable_diffusion", "path": str(tiny_sd_path), "dtype": "float32"})
    via_folder = load_prior(tiny_sd_path)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for other in (via_spec, via_folder):
            assert isinstance(other, StableDiffusionPrior)
            torch.testing.assert_close(other.eps(z, 42), prior.eps(z, 42))
    with pytest.raises(ValueError, match="unknown stable_diffusion prior spec keys"):
        StableDiffusionPrior.from_spec({"path": str(tiny_sd_path), "prompt": "a face"})
    with pytest.raises(ValueError, match="exactly one of"):
        StableDiffusionPrior.from_spec({"dtype": "float32"})
    with pytest.raises(ValueError, match="dtype"):
        StableDiffusionPrior.from_spec({"path": str(tiny_sd_path), "dtype": "float64"})


def test_v_prediction_model_is_refused(tmp_path, tiny_sd_path):
    import json

    other = tmp_path / "sd_v"
    shutil.copytree(tiny_sd_path, other)
    config_path = other / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="epsilon"):
        StableDiffusionPrior.from_pretrained(other)


def test_argument_checks(prior):
    with pytest.raises(ValueError, match="z_t must be latents"):
        prior.eps(torch.zeros(1, 3, 8, 8), 10)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1000\)"):
        prior.eps(torch.zeros(1, 4, 8, 8), 1000)
    with pytest.raises(ValueError, match="integer tensor"):
        prior.eps(torch.zeros(2, 4, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="images of shape"):
        prior.encode(torch.zeros(1, 4, 64, 64))


def test_sd21_base_configs_are_the_published_architecture():
    # Cross-check the hand-written configs against the facts listed in docs/install.md and the latent
    # geometry the DWGF code relies on (4 x 64 x 64 latents for 512 px, docs/method.md#dwgf).
    assert SD21_BASE_UNET_CONFIG["block_out_channels"] == (320, 640, 1280, 1280)
    assert SD21_BASE_UNET_CONFIG["attention_head_dim"] == (5, 10, 20, 20)
    assert SD21_BASE_UNET_CONFIG["cross_attention_dim"] == 1024 and SD21_BASE_UNET_CONFIG["use_linear_projection"]
    assert SD21_BASE_UNET_CONFIG["sample_size"] * 2 ** (len(SD21_BASE_VAE_CONFIG["block_out_channels"]) - 1) == 512
    assert SD21_BASE_VAE_CONFIG["scaling_factor"] == SCALE and SD21_BASE_VAE_CONFIG["latent_channels"] == 4


def test_sd21_base_parameter_counts():
    # Built on the meta device (no memory, < 1 s). 865,910,724 (UNet) and 83,653,863 (VAE) are the parameter
    # counts of the released SD-2.x UNet and KL-f8 VAE; a wrong width, head or layer count changes them.
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG)
        vae = AutoencoderKL(**SD21_BASE_VAE_CONFIG)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863


@pytest.mark.gpu
def test_sd21_base_architecture_runs_on_gpu():
    from dwgf.testing.tiny_sd import build_sd21_base_architecture

    unet, vae = build_sd21_base_architecture(torch.bfloat16, device="cuda")
    assert not any(p.requires_grad for p in [*unet.parameters(), *vae.parameters()])
    z = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.bfloat16)
    context = torch.zeros(1, 77, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert unet(z, 999, encoder_hidden_states=context).sample.shape == z.shape
        assert vae.decode(z / SCALE).sample.shape == (1, 3, 512, 512)
