"""Tests of dwgf.metrics against independent computations (scikit-image, the lpips package, clean-fid)."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from dwgf.metrics import diversity, fid, image, schema, testbed
from dwgf.metrics.evaluate import (
    STATUS_NON_FINITE,
    ImageMetrics,
    per_image_particle_average,
    policy_images,
    posterior_rows,
    set_rows,
)
from dwgf.metrics.lpips_metric import STATUS_TEST_ONLY, LPIPSMetric, backbone_path
from dwgf.metrics.runtime import solve_record_rows
from dwgf.metrics.schema import RowKeys, read_metrics, write_metrics

KEYS = RowKeys("demo", "box", "dwgf", "main", {"gamma": 0.15, "kappa": 0.1, "sigma_dec": 0.01, "lr": 1.0}, 4)


def rand_images(n: int, seed: int, size: int = 64, spread: float = 1.2) -> torch.Tensor:
    """Images slightly outside [-1, 1] too, so clamping matters."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1) * spread


def np_quantise(x: torch.Tensor) -> np.ndarray:
    """Independent 8-bit quantisation in numpy: round(clip((x + 1) / 2, 0, 1) * 255) / 255."""
    u = np.clip((x.double().numpy() + 1.0) / 2.0, 0.0, 1.0)
    return np.round(u * 255.0) / 255.0


# -- PSNR / SSIM ----------------------------------------------------------------------------------------


def test_psnr_ssim_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gt = rand_images(1, 0, spread=1.0)
    x = 0.6 * gt + 0.5 * rand_images(3, 1)
    psnr, ssim = image.psnr_standard(x, gt), image.ssim_standard(x, gt)
    ref = np_quantise(gt)[0]
    for i in range(3):
        test = np_quantise(x[i : i + 1])[0]
        assert psnr[i].item() == pytest.approx(peak_signal_noise_ratio(ref, test, data_range=1.0), abs=1e-9)
        expected = structural_similarity(
            ref, test, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0
        )
        assert ssim[i].item() == pytest.approx(expected, abs=1e-9)
    assert image.psnr_standard(gt, gt).item() == math.inf
    assert image.ssim_standard(gt, gt).item() == pytest.approx(1.0, abs=1e-12)


def test_standard_quantisation_matches_the_png_writer():
    from dwgf.pipeline.images import to_uint8

    x = rand_images(2, 3, size=16)
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, 1.0 / 255.0])  # u = 0, 1, 0.5 (127.5 levels), exact levels
    for i in range(2):
        assert np.array_equal(image.to_uint8_hwc(x)[i], to_uint8(x[i]))


def test_repo_and_standard_psnr_worked_example():
    # one channel pattern, repeated over 3 channels: x in [-1, 1] scale, one value out of range (1.2)
    x = torch.tensor([[-1.0, 1.2], [0.0, 0.5]], dtype=torch.float64).expand(1, 3, 2, 2)
    gt = torch.tensor([[-1.0, 1.0], [0.0, 0.0]], dtype=torch.float64).expand(1, 3, 2, 2)
    # repo: u = (x+1)/2 unclamped = [0, 1.1, 0.5, 0.75] vs [0, 1, 0.5, 0.5]; squared errors 0, .01, 0, .0625
    expected_repo = 10 * math.log10(1 / ((0.01 + 0.0625) / 4 + 1e-10))  # 17.4172 dB
    assert image.psnr_repo(x, gt).item() == pytest.approx(expected_repo, abs=1e-9)
    assert expected_repo == pytest.approx(17.4172, abs=1e-4)
    # standard: clamp u to [0, 1] -> [0, 1, .5, .75]; levels round(255 u) = [0, 255, 128, 191] vs [0, 255, 128, 128]
    expected_std = 10 * math.log10(1 / ((63 / 255) ** 2 / 4))  # 18.1648 dB
    assert image.psnr_standard(x, gt).item() == pytest.approx(expected_std, abs=1e-9)
    with pytest.raises(ValueError, match="non-finite"):
        image.psnr_standard(torch.full((1, 3, 2, 2), float("nan")), gt)


# -- LPIPS -----------------------------------------------------------------------------------------------


def save_random_backbone(net: str, torch_home, seed: int) -> None:
    """A torchvision state dict with random (seeded) conv weights; the unused classifier is a stride-0 view
    (a few bytes on disk) so torchvision's strict load_state_dict still accepts the file."""
    import torchvision

    ctor = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}[net]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ctor().state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features.") and len(shape) == 4:
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.startswith("features."):
            state[key] = 0.01 * torch.randn(shape, generator=g)
        else:
            state[key] = torch.zeros(1).expand(shape)
    path = backbone_path(net, torch_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.fixture(scope="module")
def test_torch_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    save_random_backbone("alex", home, seed=0)
    save_random_backbone("vgg", home, seed=1)
    return home


@pytest.fixture(scope="module")
def alex(test_torch_home):
    return LPIPSMetric.unverified_for_tests("alex", test_torch_home)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_equals_lpips_package_through_the_cache(net, test_torch_home, monkeypatch, alex):
    import lpips

    metric = alex if net == "alex" else LPIPSMetric.unverified_for_tests(net, test_torch_home)
    assert metric.status == STATUS_TEST_ONLY and "UNVERIFIED" in metric.network
    # the lpips package loads the same file through torchvision's own cache lookup (no download: file present)
    monkeypatch.setenv("TORCH_HOME", str(test_torch_home))
    # torchvision's random init (100 M classifier weights for VGG16) is overwritten by the cached file: skip it
    for name in ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_", "constant_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    direct = lpips.LPIPS(net=net, verbose=False).eval()
    x, gt = rand_images(3, 10), rand_images(1, 11, spread=1.0)
    with torch.no_grad():
        expected_std = direct(
            torch.from_numpy(2 * np_quantise(x) - 1).float(), torch.from_numpy(2 * np_quantise(gt) - 1).float()
        )
        expected_repo = direct((x + 1) / 2, (gt + 1) / 2)  # the official call: [0, 1], no normalize
    assert torch.allclose(metric(x, gt, "standard"), expected_std.flatten().double(), atol=1e-6)
    assert torch.allclose(metric(x, gt, "repo"), expected_repo.flatten().double(), atol=1e-6)
    assert not torch.allclose(metric(x, gt, "standard"), metric(x, gt, "repo"), atol=1e-3)
    assert metric(gt, gt).abs().max().item() == 0.0


def test_lpips_never_downloads_and_keeps_the_global_rng(test_torch_home, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    metric = LPIPSMetric.unverified_for_tests("alex", test_torch_home)
    assert torch.equal(torch.rand(3), expected_next)
    assert metric.available


def test_missing_or_wrong_backbone_gives_null_rows_with_status(tmp_path, test_torch_home):
    missing = LPIPSMetric.from_cache("alex", tmp_path)
    assert not missing.available and missing.status.startswith("missing_backbone")
    assert str(backbone_path("alex", tmp_path)) in missing.status
    assert missing(rand_images(2, 0), rand_images(1, 1)) is None
    wrong = LPIPSMetric.from_cache("alex", test_torch_home)  # a random file under the real name
    assert not wrong.available and wrong.status.startswith("backbone_hash_mismatch")

    metrics = ImageMetrics([missing, LPIPSMetric.from_cache("vgg", tmp_path)])
    rows = metrics.rows(rand_images(2, 5), rand_images(1, 6), KEYS.for_image("00001"))
    lp = [r for r in rows if r["metric"].startswith("lpips") or r["metric"].startswith("diversity_lpips")]
    assert len(lp) == 3 * 2 + 3 + 1  # alex std+repo, vgg std, for 2 particles + mean; diversity
    assert all(r["value"] is None and r["status"].startswith("missing_backbone") for r in lp)
    assert all(r["value"] is not None for r in rows if r["metric"] in ("psnr", "ssim"))
    frame = read_metrics(write_metrics(rows, tmp_path / "m.parquet"))
    assert frame.loc[frame["metric"] == "lpips_alex", "value"].isna().all()


def test_test_only_rows_cannot_be_written(alex, tmp_path):
    rows = ImageMetrics([alex]).rows(rand_images(2, 5), rand_images(1, 6), KEYS.for_image("00001"))
    assert any(r["status"] == STATUS_TEST_ONLY and r["value"] is not None for r in rows)
    with pytest.raises(ValueError, match="test_only"):
        write_metrics(rows, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_image_rows_layout_and_non_finite_particles(alex):
    particles = rand_images(3, 7)
    particles[1, 0, 0, 0] = float("nan")
    gt = rand_images(1, 8, spread=1.0)
    rows = ImageMetrics([alex]).rows(particles, gt, KEYS.for_image("00002", "obs", "run"))
    df = pd.DataFrame(rows)
    per_particle = df[df["particle"].notna()]
    assert set(per_particle["particle"]) == {0, 1, 2, -1}
    assert len(per_particle) == 4 * 5  # psnr x2, ssim, lpips_alex x2 for 3 particles + mean
    bad = per_particle[per_particle["particle"].isin([1, -1])]
    assert (bad["status"] == STATUS_NON_FINITE).all() and bad["value"].isna().all()
    good = per_particle[per_particle["particle"] == 2].set_index(["metric", "protocol"])["value"]
    assert good[("psnr", "standard")] == pytest.approx(image.psnr_standard(particles[2:3], gt).item())
    assert good[("psnr", "repo")] == pytest.approx(image.psnr_repo(particles[2:3], gt).item())
    assert good[("lpips_alex", "repo")] == pytest.approx(alex(particles[2:3], gt, "repo").item())
    assert (df["observation_sha256"] == "obs").all() and (df["gamma"] == 0.15).all()
    # the particle-mean image is the mean of the unclamped particles
    clean = rand_images(2, 9)
    rows = ImageMetrics([alex]).rows(clean, gt, KEYS.for_image("00003"))
    mean_psnr = next(r for r in rows if r["particle"] == -1 and r["metric"] == "psnr" and r["protocol"] == "repo")
    assert mean_psnr["value"] == pytest.approx(image.psnr_repo(clean.mean(0, keepdim=True), gt).item())


# -- diversity -----------------------------------------------------------------------------------------


def test_diversity_against_direct_computation(alex):
    particles = rand_images(4, 12)
    u = np_quantise(particles)
    assert diversity.pixel_std(particles) == pytest.approx(u.std(axis=0, ddof=1).mean(), abs=1e-12)
    pairs = [alex(particles[i : i + 1], particles[j : j + 1]).item() for i, j in itertools.combinations(range(4), 2)]
    assert diversity.pairwise_lpips(alex, particles) == pytest.approx(np.mean(pairs), abs=1e-7)
    assert diversity.pixel_std(particles[:1]) is None and diversity.pairwise_lpips(alex, particles[:1]) is None
    assert diversity.pixel_std(particles[:1].expand(3, -1, -1, -1)) == 0.0


# -- exact-posterior test bed ----------------------------------------------------------------------------


def test_testbed_metrics_against_direct_computation():
    g = torch.Generator().manual_seed(0)
    particles = torch.randn(4, 4, 2, 2, generator=g, dtype=torch.float64)
    mean, std = torch.randn(4, 2, 2, generator=g, dtype=torch.float64), torch.rand(4, 2, 2, generator=g) + 0.5
    mse = ((particles.mean(0) - mean) ** 2).mean().item()
    assert testbed.posterior_mean_psnr(particles, mean, 2.0) == pytest.approx(10 * math.log10(4 / mse))
    ratio = particles.numpy().reshape(4, -1).std(axis=0, ddof=1).mean() / std.numpy().mean()
    assert testbed.spread_ratio(particles, std) == pytest.approx(ratio)

    samples = torch.randn(12, 4, 2, 2, generator=g, dtype=torch.float64)
    sw = testbed.sliced_wasserstein2(particles, samples, n_projections=64, seed=3)
    # independent: W2 between 4 atoms and 12 atoms = W2 between each atom repeated 3 times and the 12 atoms,
    # which for equal sizes is the mean squared difference of the sorted projections
    theta = testbed.random_directions(64, 16, seed=3).numpy()
    px = np.sort(np.repeat(particles.reshape(4, -1).numpy() @ theta.T, 3, axis=0), axis=0)
    py = np.sort(samples.reshape(12, -1).numpy() @ theta.T, axis=0)
    assert sw == pytest.approx(math.sqrt(((px - py) ** 2).mean()), rel=1e-12)
    assert testbed.sliced_wasserstein2(samples, samples, 64, 3) == 0.0
    # a pure translation v: every projection is shifted by theta.v
    shift = torch.full((16,), 0.5, dtype=torch.float64)
    moved = samples + shift.view(4, 2, 2)
    expected = math.sqrt(((theta @ shift.numpy()) ** 2).mean())
    assert testbed.sliced_wasserstein2(samples, moved, 64, 3) == pytest.approx(expected, rel=1e-12)

    rows = posterior_rows(particles, mean, std, samples, KEYS.for_image("00004"), n_projections=64, seed=3)
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["sliced_w2"]["value"] == pytest.approx(sw)
    assert "projections=64;seed=3" in by_metric["sliced_w2"]["protocol"]


def test_sliced_reference_is_reusable_and_exact():
    """One SlicedReference per observation serves every particle set with the numbers of a fresh computation."""
    g = torch.Generator().manual_seed(7)
    samples = torch.randn(50, 3, 4, 4, generator=g, dtype=torch.float64)
    reference = testbed.SlicedReference(samples, n_projections=32, seed=5)
    for n in (1, 2, 4):
        particles = torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64)
        assert reference.distance(particles) == testbed.sliced_wasserstein2(particles, samples, 32, 5)
    # the memoised directions are handed out as copies: a caller's edit cannot leak into later draws
    first = testbed.random_directions(32, 48, seed=5)
    first.zero_()
    assert testbed.random_directions(32, 48, seed=5).abs().sum() > 0
    mean, std = samples.mean(0), samples.std(0)
    keys = KEYS.for_image("00004")
    assert posterior_rows(particles, mean, std, reference, keys) == posterior_rows(
        particles, mean, std, samples, keys, n_projections=32, seed=5
    )
    with pytest.raises(ValueError, match="dims per sample"):
        reference.distance(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n_projections"):
        testbed.SlicedReference(samples, n_projections=0)


# -- FID / KID --------------------------------------------------------------------------------------------


def test_frechet_distance_matches_clean_fid():
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(0)
    for n1, n2, d in [(200, 150, 32), (20, 15, 32)]:  # full-rank and rank-deficient covariances
        a, b = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 1.3 + 0.2
        mu2, sigma2 = b.mean(0), np.cov(b, rowvar=False)
        expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), mu2, sigma2)
        assert fid.fid_from_features(a, b) == pytest.approx(expected, rel=1e-7)
        assert fid.fid_from_stats(a, mu2, sigma2) == pytest.approx(expected, rel=1e-7)
    assert fid.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


def test_kid_matches_clean_fid_kernel_distance():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(1)
    a, b = np.abs(rng.normal(size=(30, 64))), np.abs(rng.normal(size=(25, 64))) * 1.2
    for subsets, size in [(10, 8), (5, 1000)]:
        np.random.seed(7)
        expected = kernel_distance(a, b, num_subsets=subsets, max_subset_size=size)
        assert fid.kid_from_features(a, b, subsets, size, seed=7) == pytest.approx(expected, rel=1e-12)
    # identical sets: the unbiased estimator is (2/m)(mean off-diagonal k - mean diagonal k) <= 0, not 0 -- it is
    # unbiased for *independent* samples; it vanishes like 1/m
    k = (a @ a.T / a.shape[1] + 1) ** 3
    m = a.shape[0]
    closed_form = 2 / m * ((k.sum() - np.trace(k)) / (m * (m - 1)) - np.trace(k) / m)
    assert fid.kid_from_features(a, a, 3, 1000) == pytest.approx(closed_form, rel=1e-12)


@pytest.fixture(scope="module")
def inception():
    return fid.load_feature_network(fid.NETWORK_FID_HELPER)


N_FACES = 6


@pytest.fixture(scope="module")
def face_sets():
    """6 crops (64 px) of scikit-image's astronaut, and two noisy versions (sigma 8 and 40 grey levels)."""
    from skimage.data import astronaut

    photo = astronaut()
    rng = np.random.default_rng(0)
    corners = [(r, c) for r in range(96, 400, 100) for c in range(96, 300, 100)][:N_FACES]
    clean = [np.ascontiguousarray(photo[r : r + 64, c : c + 64]) for r, c in corners]

    def noisy(sigma):
        return [np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).round().astype(np.uint8) for im in clean]

    return clean, noisy(8.0), noisy(40.0)


@pytest.fixture(scope="module")
def face_features(inception, face_sets):
    store = fid.FeatureStore(inception, batch_size=N_FACES)
    started = time.perf_counter()
    feats = [store.features(images) for images in face_sets]
    print(
        f"\n[metrics] Inception features of {3 * N_FACES} images (64 px -> 299): {time.perf_counter() - started:.2f} s"
    )
    return store, feats


def test_fid_kid_on_small_image_sets(face_sets, face_features):
    store, (f_clean, f_mild, f_strong) = face_features
    assert f_clean.shape == (N_FACES, 2048) and len(store) == 3 * N_FACES
    assert np.array_equal(store.features(face_sets[0][:2]), f_clean[:2])  # memoised, same numbers
    assert fid.fid_from_features(f_clean, f_clean) == pytest.approx(0.0, abs=1e-6)
    # KID of identical sets is (2/m)(mean off-diagonal k - mean diagonal k), not 0 (unbiased only for independent
    # sets); at a few images that term dominates, so only the ordering of the noisy sets is asserted
    kid_same, kid_mild = fid.kid_from_features(f_clean, f_clean), fid.kid_from_features(f_mild, f_clean)
    k, m = (f_clean @ f_clean.T / 2048 + 1) ** 3, N_FACES
    assert kid_same == pytest.approx(2 / m * ((k.sum() - np.trace(k)) / (m * (m - 1)) - np.trace(k) / m), rel=1e-9)
    fid_mild, fid_strong = fid.fid_from_features(f_mild, f_clean), fid.fid_from_features(f_strong, f_clean)
    assert 0 < fid_mild < fid_strong
    assert kid_mild < fid.kid_from_features(f_strong, f_clean)
    print(
        f"[metrics] {m} vs {m} crops: FID(sigma 8) {fid_mild:.1f}, FID(sigma 40) {fid_strong:.1f}, KID(same) "
        f"{kid_same:.4f}, KID(sigma 8) {kid_mild:.4f}"
    )


def test_features_match_clean_fid_folder_pipeline(inception, face_sets, face_features, tmp_path):
    from cleanfid.fid import get_folder_features
    from PIL import Image

    store, (f_clean, _, _) = face_features
    for i, im in enumerate(face_sets[0][:3]):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    theirs = get_folder_features(
        str(tmp_path), inception, num_workers=0, batch_size=3, device=torch.device("cpu"), mode="clean", verbose=False
    )
    np.testing.assert_allclose(f_clean[:3], theirs, rtol=0, atol=1e-5)
    # PNG paths hit the same content keys as the arrays (lossless round trip): no new features computed
    ours = store.features(sorted(tmp_path.glob("*.png")))
    assert len(store) == 3 * N_FACES and np.array_equal(ours, f_clean[:3])


class FakeCleanFidInception(torch.nn.Module):
    """Stands in for inception-2015-12-05.pt: a TorchScript module whose ``.layers`` maps 299 px to 2048 x 1 x 1."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 2048, 3, stride=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("dwgf must call .layers on resized inputs, as clean-fid's InceptionV3W does")


def test_cleanfid_network_is_read_from_the_cache(tmp_path):
    assert fid.available_feature_networks(tmp_path) == [fid.NETWORK_FID_HELPER]
    path = fid.feature_network_path(fid.NETWORK_CLEANFID, tmp_path)
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    fake = FakeCleanFidInception().eval()
    torch.jit.script(fake).save(str(path))
    assert fid.available_feature_networks(tmp_path) == [fid.NETWORK_CLEANFID, fid.NETWORK_FID_HELPER]
    net = fid.load_feature_network(fid.NETWORK_CLEANFID, torch_home=tmp_path)
    assert net.network.startswith("cleanfid-inception-2015-12-05@sha256:")
    batch = torch.rand(2, 3, 299, 299) * 255
    with torch.no_grad():
        expected = fake.layers((batch - 128) / 128).reshape(2, 2048)  # clean-fid InceptionV3W normalisation
    assert torch.allclose(net(batch), expected, atol=1e-5)


def test_set_rows_reference_stats_and_network_guard(tmp_path):
    rng = np.random.default_rng(2)
    fake, real = rng.normal(size=(12, 256)), rng.normal(size=(10, 256)) + 0.1  # any feature dim
    rows = set_rows(fake, real, KEYS, sample_policy="all_particles", reference_name="gt", network="net-a")
    stats = fid.ReferenceStats.from_features("ffhq-test", "net-a", real)
    stats = fid.ReferenceStats.load(stats.save(tmp_path / "ref.npz"), expected_network="net-a")
    rows += set_rows(fake, stats, KEYS, sample_policy="all_particles", reference_name="ffhq-test", network="net-a")
    assert rows[0]["value"] == pytest.approx(rows[2]["value"], rel=1e-12)  # FID: stored features, low-rank form
    # without stored features the covariance square root is used: another matrix path, ~1e-9 apart
    no_features = fid.ReferenceStats.from_features("ffhq-test", "net-a", real, keep_features=False)
    assert no_features.fid(fake) == pytest.approx(rows[0]["value"], rel=1e-7)
    assert rows[1]["value"] == pytest.approx(rows[3]["value"], rel=1e-12)  # KID: stored features
    assert all(r["level"] == "set" and r["n_samples"] == 12 and r["image_id"] is None for r in rows)
    with pytest.raises(ValueError, match="net-a"):
        fid.ReferenceStats.load(tmp_path / "ref.npz", expected_network="net-b")
    tiny = set_rows(fake[:1], real, KEYS, sample_policy="first_particle", reference_name="gt", network="net-a")
    assert [r["metric"] for r in tiny] == ["fid", "kid"]
    assert all(r["value"] is None and r["status"].startswith("too_few_images") for r in tiny)
    other = rows + [dict(rows[0], network="net-b")]
    with pytest.raises(ValueError, match="mixes feature networks"):
        schema.assert_one_network(pd.DataFrame(other))
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        fid.load_feature_network(fid.NETWORK_CLEANFID, torch_home=tmp_path)


def test_policy_images():
    particles = {"b": ["b0", "b1"], "a": ["a0", "a1"]}
    assert policy_images(particles, "first_particle") == ["a0", "b0"]
    assert policy_images(particles, "all_particles") == ["a0", "a1", "b0", "b1"]
    assert policy_images(particles, "particle_mean", {"a": "am", "b": "bm"}) == ["am", "bm"]
    with pytest.raises(ValueError, match="mean_images"):
        policy_images(particles, "particle_mean")


# -- Parquet schema ----------------------------------------------------------------------------------------


def sample_rows() -> list[dict]:
    keys = KEYS.for_image("00001", "a" * 64, "b" * 64)
    rows = [
        keys.row(metric="psnr", protocol="standard", value=math.inf, particle=0, network="dwgf.metrics"),
        keys.row(metric="psnr", protocol="repo", value=23.5, particle=-1),
        keys.row(metric="lpips_alex", protocol="standard", value=None, status="missing_backbone: x", particle=0),
        keys.row(metric="ssim", protocol="standard", value=float("nan"), particle=1),
    ]
    rows += solve_record_rows(
        {"image_id": "00002", "status": "diverged", "runtime_s": 1.25, "peak_memory_bytes": 2**30}, KEYS, "cpu"
    )
    rows += set_rows(
        np.eye(4, 8), np.eye(4, 8)[::-1] * 2, KEYS, sample_policy="first_particle", reference_name="gt", network="n"
    )
    return rows


def test_parquet_round_trip_with_dtypes(tmp_path):
    rows = sample_rows()
    path = write_metrics(rows, tmp_path / "metrics.parquet")
    df = read_metrics(path)
    assert tuple(df.columns) == schema.COLUMNS and len(df) == len(rows)
    for column in ("suite", "metric", "protocol", "status", "image_id", "hyper"):
        assert isinstance(df[column].dtype, pd.StringDtype)
    for column in ("particle", "n_particles", "n_samples"):
        assert isinstance(df[column].dtype, pd.Int64Dtype)
    for column in ("value", "gamma", "kappa", "sigma_dec"):
        assert isinstance(df[column].dtype, pd.Float64Dtype)
    assert df.loc[0, "value"] == math.inf and pd.isna(df.loc[2, "value"])
    assert df.loc[3, "status"] == "non_finite_value" and pd.isna(df.loc[3, "value"])  # NaN never passes as ok
    assert df.loc[1, "particle"] == -1 and df.loc[0, "kappa"] == 0.1 and df.loc[0, "n_particles"] == 4
    assert json.loads(df.loc[0, "hyper"]) == {"gamma": 0.15, "kappa": 0.1, "lr": 1.0, "sigma_dec": 0.01}
    runtime = df[df["metric"] == "runtime_s"].iloc[0]
    assert runtime["value"] == 1.25 and runtime["status"] == "solve_diverged" and runtime["image_id"] == "00002"
    sets = df[df["level"] == "set"]
    assert set(sets["metric"]) == {"fid", "kid"} and sets["particle"].isna().all()
    assert sets["image_id"].isna().all() and (sets["sample_policy"] == "first_particle").all()
    # a second write of the same rows gives the same table (deterministic rows)
    assert read_metrics(write_metrics(sample_rows(), tmp_path / "again.parquet")).equals(df)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"value": "high"}, "'value'"),
        ({"particle": 1.5}, "'particle'"),
        ({"metric": None}, "'metric' must not be null"),
        ({"level": "set"}, "sample_policy"),
        ({"sample_policy": "all_particles"}, "must not have a sample_policy"),
        ({"hyper": "[1]"}, "JSON object"),
        ({"particle": -2}, "particle must be >= -1"),
    ],
)
def test_write_metrics_rejects_bad_rows(tmp_path, change, message):
    rows = sample_rows()
    rows[1] = {**rows[1], **change}
    with pytest.raises(ValueError, match=message):
        write_metrics(rows, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing \\['network'\\]"):
        write_metrics(pd.DataFrame(sample_rows()).drop(columns="network"), tmp_path / "bad.parquet")


def test_read_metrics_checks_the_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"metric": ["psnr"]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="schema version"):
        read_metrics(tmp_path / "other.parquet")
    with pytest.raises(FileNotFoundError, match="dwgf evaluate"):
        read_metrics(tmp_path / "absent.parquet")


def test_per_image_particle_average_is_the_official_aggregation():
    rows = []
    values = {"i1": [20.0, 22.0], "i2": [30.0, 34.0]}
    for image_id, vals in values.items():
        keys = KEYS.for_image(image_id)
        rows += [keys.row(metric="psnr", protocol="repo", value=v, particle=j) for j, v in enumerate(vals)]
        rows.append(keys.row(metric="psnr", protocol="repo", value=99.0, particle=-1))  # excluded
    out = per_image_particle_average(schema.validate_frame(rows))
    assert len(out) == 1
    assert out.loc[0, "mean"] == pytest.approx((21.0 + 32.0) / 2)
    assert out.loc[0, "std"] == pytest.approx(np.std([21.0, 32.0], ddof=1))
    assert out.loc[0, "n_images"] == 2


def test_parquet_steps_do_not_import_torch():
    """`dwgf --help` and the Parquet-only steps (aggregate, tables) start without torch (~2.5 s here)."""
    import subprocess
    import sys

    code = (
        "import sys; from dwgf.cli import build_parser; build_parser(); import dwgf.metrics; "
        "from dwgf.metrics.schema import read_metrics, write_metrics; import dwgf.pipeline.aggregate; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    from dwgf.metrics import RowKeys, sliced_wasserstein2  # the lazy exports still resolve

    assert RowKeys.__module__ == "dwgf.metrics.schema" and callable(sliced_wasserstein2)
