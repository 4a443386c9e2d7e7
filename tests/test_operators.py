"""Forward operators: adjoints, pseudo-inverses, geometry and argument checks.

Every check compares against an independent computation: the dense matrix of A built column by column,
``torch.linalg.pinv``, ``torch.nn.functional`` pooling / interpolation / convolution, or the paper's
numbers (docs/operators.md).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dwgf.operators import add_measurement_noise, make_operator, operator_names
from dwgf.operators.compressed_sensing import CompressedSensing, block_columns

# (id, name, image_size, params): small sizes so that dense matrices (d = 3·12² = 432) are cheap.
CASES = [
    ("box_half_face", "box_inpainting", 12, {}),
    ("box_centered", "box_inpainting", 12, {"box": "centered", "box_size": 6}),
    ("random_inpainting", "random_inpainting", 12, {"p": 0.5, "seed": 3}),
    ("sr_avgpool", "sr_avgpool", 12, {"factor": 4}),
    ("sr_bicubic_symmetric", "sr_bicubic", 12, {"factor": 2}),
    ("sr_bicubic_renormalize", "sr_bicubic", 12, {"factor": 4, "boundary": "renormalize"}),
    ("blur_circular", "gaussian_blur", 12, {"kernel_size": 7, "sigma": 1.5}),
    ("blur_reflect", "gaussian_blur", 12, {"kernel_size": 9, "sigma": 2.0, "padding": "reflect"}),
    ("compressed_sensing", "compressed_sensing", 12, {"ratio": 0.3, "seed": 1}),
]
CASE_IDS = [case[0] for case in CASES]
# Operators whose A⁺ is exact, so that A A⁺ y = y on the range of A.
EXACT_PINV = {"box_inpainting", "random_inpainting", "sr_avgpool", "sr_bicubic", "compressed_sensing"}


def build(case):
    _, name, size, params = case
    return make_operator(name, size, **params)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_matrix(A) -> torch.Tensor:
    """The (prod(y_shape), 3·n²) float64 matrix of A, column j = A e_j."""
    d = 3 * A.image_size**2
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *A.x_shape)
    return A(basis).reshape(d, -1).transpose(0, 1)


def test_every_operator_is_covered():
    assert sorted({case[1] for case in CASES}) == operator_names()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_dot_product(case):
    A = build(case)
    x = torch.randn(2, *A.x_shape, generator=generator(0), dtype=torch.float64)
    y = torch.randn(2, *A.y_shape, generator=generator(1), dtype=torch.float64)
    lhs = (A(x) * y).sum()
    rhs = (x * A.adjoint(y)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-10


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pseudo_inverse_matches_dense_pinv(case):
    A = build(case)
    matrix = dense_matrix(A)
    # Blur: truncated SVD with the operator's relative cut-off; all others: the exact pseudo-inverse.
    rtol = A.pinv_rtol if case[1] == "gaussian_blur" else 1e-10
    if case[1] == "gaussian_blur":
        assert A.n_truncated > 0, "the cut-off should be exercised at this size"
    reference = torch.linalg.pinv(matrix, rtol=rtol)
    y = torch.randn(3, *A.y_shape, generator=generator(2), dtype=torch.float64)
    ours = A.pseudo_inverse(y).reshape(3, -1)
    expected = (reference @ y.reshape(3, -1).transpose(0, 1)).transpose(0, 1)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-9 * expected.abs().max())


@pytest.mark.parametrize("case", [c for c in CASES if c[1] in EXACT_PINV], ids=lambda c: c[0])
def test_forward_of_pseudo_inverse_is_identity_on_range(case):
    A = build(case)
    y = A(torch.randn(2, *A.x_shape, generator=generator(3), dtype=torch.float64))
    assert torch.allclose(A(A.pseudo_inverse(y)), y, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", [c for c in CASES if c[1] != "gaussian_blur"], ids=lambda c: c[0])
def test_measurement_dim_is_rank(case):
    A = build(case)
    assert A.measurement_dim == int(torch.linalg.matrix_rank(dense_matrix(A)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_params_round_trip(case):
    A = build(case)
    params = json.loads(json.dumps(A.params()))
    B = make_operator(case[1], case[2], **params)
    x = torch.randn(2, *A.x_shape, generator=generator(4))
    y = torch.randn(2, *A.y_shape, generator=generator(5))
    assert B.params() == A.params()
    assert torch.equal(A(x), B(x))
    assert torch.equal(A.adjoint(y), B.adjoint(y))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_matches_float64(case):
    A = build(case)
    x = torch.rand(2, *A.x_shape, generator=generator(6), dtype=torch.float64) * 2 - 1
    y64 = A(x)
    y32 = A(x.float())
    assert y32.dtype == torch.float32 and y64.dtype == torch.float64
    assert torch.allclose(y32.double(), y64, atol=1e-5)
    back32 = A.pseudo_inverse(y64.float())
    assert back32.dtype == torch.float32
    assert torch.allclose(back32.double(), A.pseudo_inverse(y64), atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_render_is_an_image_in_range(case):
    A = build(case)
    y = A(torch.rand(1, *A.x_shape, generator=generator(7)) * 2 - 1)
    picture = A.render(3 * y)
    assert picture.ndim == 4 and picture.shape[:2] == (1, 3)
    assert picture.min() >= -1 and picture.max() <= 1


# -- box geometry (docs/operators.md) ------------------------------------------------------------------------
def hole_of(A) -> tuple[int, int, int, int]:
    """(row_start, row_end, col_start, col_end) of the missing pixels, read off the mask."""
    missing = ~A.keep_mask()[0, 0]
    rows = missing.any(dim=1).nonzero().flatten()
    cols = missing.any(dim=0).nonzero().flatten()
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    assert int(missing.sum()) == (r1 - r0) * (c1 - c0), "the missing set is not a rectangle"
    return r0, r1, c0, c1


def test_half_face_box_at_512_is_the_official_one():
    A = make_operator("box_inpainting", 512)
    assert hole_of(A) == (150, 450, 250, 450)  # rows 150–449, cols 250–449 inclusive: 300 × 200
    assert A.measurement_dim == 606_432
    x = torch.ones(1, 3, 512, 512)
    y = A(x)
    assert y[0, :, 150:450, 250:450].abs().sum() == 0 and y.sum() == 3 * (512 * 512 - 300 * 200)


@pytest.mark.parametrize("size", [256, 128, 64])
def test_half_face_box_scales_with_round_half_up(size):
    def scaled(v: int) -> int:  # round half up of v · size / 512, independently in exact fractions
        return math.floor(Fraction(v * size, 512) + Fraction(1, 2))

    expected = (scaled(150), scaled(450), scaled(250), scaled(450))
    assert hole_of(make_operator("box_inpainting", size)) == expected
    if size == 256:
        assert expected == (75, 225, 125, 225)  # docs/operators.md: rows 75–224, cols 125–224
    if size == 64:
        assert expected == (19, 56, 31, 56)  # rows 19–55, cols 31–55: 37 × 25 px


def test_centered_box_geometry():
    A = make_operator("box_inpainting", 64, box="centered", box_size=32)
    assert hole_of(A) == (16, 48, 16, 48)
    assert A.measurement_dim == 3 * (64 * 64 - 32 * 32)


def test_inpainting_render_shows_hole_grey_despite_noise():
    A = make_operator("box_inpainting", 64)
    y = add_measurement_noise(A(torch.ones(1, 3, 64, 64)), 0.1, generator(8))
    picture = A.render(y)
    r0, r1, c0, c1 = A.hole
    assert picture[..., r0:r1, c0:c1].abs().max() == 0
    assert picture[..., :r0, :].mean() > 0.9


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_zero_unmeasured_leaves_exactly_the_measurements(case):
    A = build(case)
    y = add_measurement_noise(A(torch.randn(1, *A.x_shape, generator=generator(19))), 0.1, generator(20))
    cleaned = A.zero_unmeasured(y)
    assert int((cleaned != 0).sum()) == A.measurement_dim
    if case[1] in ("box_inpainting", "random_inpainting"):
        assert torch.equal(cleaned, A.keep_mask() * y)
    else:
        assert torch.equal(cleaned, y)


def test_random_inpainting_mask():
    A = make_operator("random_inpainting", 32, p=0.3, seed=5)
    kept = A.keep_mask()
    assert int((~kept).sum()) == round(0.3 * 32 * 32)
    assert torch.equal(kept, make_operator("random_inpainting", 32, p=0.3, seed=5).keep_mask())
    assert not torch.equal(kept, make_operator("random_inpainting", 32, p=0.3, seed=6).keep_mask())
    y = A(torch.ones(1, 3, 32, 32))
    assert torch.equal(y[0, 0], y[0, 2])  # same pixels missing in every channel


# -- super-resolution ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "factor"), [(64, 8), (32, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sr_avgpool_is_avg_pool2d(size, factor, dtype):
    A = make_operator("sr_avgpool", size, factor=factor)
    x = torch.randn(2, 3, size, size, generator=generator(9), dtype=dtype)
    assert torch.allclose(A(x), F.avg_pool2d(x, factor), atol=1e-6 if dtype == torch.float32 else 1e-14)
    assert A.measurement_dim == 3 * (size // factor) ** 2


def test_sr_avgpool_paper_dimension():
    assert make_operator("sr_avgpool", 512).measurement_dim == 12_288  # docs/method.md#normalisations: d_y for SR×8


def test_sr_bicubic_renormalize_is_torch_antialias_interpolate():
    A = make_operator("sr_bicubic", 64, factor=4, boundary="renormalize")
    x = torch.randn(2, 3, 64, 64, generator=generator(10), dtype=torch.float64)
    expected = F.interpolate(x, size=(16, 16), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(A(x), expected, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_sr_bicubic_symmetric_is_interpolate_of_symmetrically_padded_image(factor):
    # MATLAB imresize mirrors with edge repetition (numpy "symmetric"). Pad by 4f ≥ the kernel's half-width 2f,
    # resize with torch (whose border renormalisation then never triggers inside the crop) and crop back.
    size, pad = 32, 4 * factor
    A = make_operator("sr_bicubic", size, factor=factor)
    x = torch.randn(1, 3, size, size, generator=generator(11), dtype=torch.float64)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="symmetric"))
    out = (size + 2 * pad) // factor
    resized = F.interpolate(padded, size=(out, out), mode="bicubic", antialias=True, align_corners=False)
    crop = pad // factor
    assert torch.allclose(A(x), resized[..., crop:-crop, crop:-crop], atol=1e-12)


# -- blur -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["circular", "reflect"])
def test_gaussian_blur_is_conv2d(padding):
    A = make_operator("gaussian_blur", 32, kernel_size=11, sigma=2.0, padding=padding)
    x = torch.randn(2, 3, 32, 32, generator=generator(12), dtype=torch.float64)
    kernel = A.kernel_2d()
    assert torch.isclose(kernel.sum(), torch.tensor(1.0, dtype=torch.float64))
    weight = kernel.expand(3, 1, 11, 11)
    expected = F.conv2d(F.pad(x, (5, 5, 5, 5), mode=padding), weight, groups=3)
    assert torch.allclose(A(x), expected, atol=1e-12)


def test_gaussian_blur_circular_pinv_is_thresholded_fft_inverse():
    A = make_operator("gaussian_blur", 32, kernel_size=9, sigma=1.0)
    kernel = torch.zeros(32, 32, dtype=torch.float64)
    kernel[:9, :9] = A.kernel_2d()
    transfer = torch.fft.fft2(torch.roll(kernel, shifts=(-4, -4), dims=(0, 1)))
    y = torch.randn(1, 3, 32, 32, generator=generator(13), dtype=torch.float64)
    keep = transfer.abs() > A.pinv_rtol * transfer.abs().max()
    inverse = torch.where(keep, 1 / torch.where(keep, transfer, torch.ones_like(transfer)), 0)
    expected = torch.fft.ifft2(torch.fft.fft2(y) * inverse).real
    assert torch.allclose(A.pseudo_inverse(y), expected, atol=1e-10)


# -- compressed sensing ---------------------------------------------------------------------------------
def test_compressed_sensing_matrix_free_equals_cached(monkeypatch):
    # 32 px, ratio 0.5: m = 1536, d = 3072, so Φ comes in two column blocks (2730 + 342 columns).
    cached = make_operator("compressed_sensing", 32, ratio=0.5, seed=4)
    assert block_columns(cached.m) < cached.d
    x = torch.randn(2, 3, 32, 32, generator=generator(14), dtype=torch.float64)
    y = torch.randn(2, cached.m, generator=generator(15), dtype=torch.float64)
    phi = cached.matrix()
    assert torch.allclose(cached(x), x.reshape(2, -1) @ phi.T, atol=1e-12)
    monkeypatch.setattr(CompressedSensing, "max_cached_entries", 0)
    free = make_operator("compressed_sensing", 32, ratio=0.5, seed=4)
    assert free._cached_matrix(x) is None
    assert torch.allclose(free(x), x.reshape(2, -1) @ phi.T, atol=1e-12)
    assert torch.allclose(free.adjoint(y).reshape(2, -1), y @ phi, atol=1e-12)


def test_compressed_sensing_shape_and_entry_statistics():
    A = make_operator("compressed_sensing", 16, ratio=0.25, seed=0)
    assert A.y_shape == (192,) and A.measurement_dim == 192  # round(0.25 · 768)
    phi = A.matrix()
    assert phi.shape == (192, 768)
    # N(0, 1/m) with N = 147,456 entries: s.e. of the variance ratio √(2/N) ≈ 0.004, of the mean (mN)^(-1/2).
    assert abs(phi.var().item() * 192 - 1) < 0.02
    assert abs(phi.mean().item()) < 4 / (192 * phi.numel()) ** 0.5
    assert not torch.equal(phi, make_operator("compressed_sensing", 16, ratio=0.25, seed=1).matrix())


# -- measurement noise -----------------------------------------------------------------------------------
def test_add_measurement_noise_is_seeded_and_has_the_right_std():
    y = torch.zeros(4, 3, 64, 64)
    a = add_measurement_noise(y, 0.05, generator(16))
    b = add_measurement_noise(y, 0.05, generator(16))
    c = add_measurement_noise(y, 0.05, generator(17))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.std().item() / 0.05 - 1) < 0.02  # 49,152 samples: relative s.e. of the std ≈ 0.3 %
    assert abs(a.mean().item()) < 0.05 * 4 / 49_152**0.5
    assert torch.equal(add_measurement_noise(y + 1, 0.0, generator(16)), y + 1)


# -- argument checks --------------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    (lambda: make_operator("sr_avgpool", 60, factor=8), "factor"),
    (lambda: make_operator("sr_bicubic", 60, factor=8), "image_size"),
    (lambda: make_operator("sr_avgpool", 64, factor=0), "factor"),
    (lambda: make_operator("random_inpainting", 64, p=0.0), "p "),
    (lambda: make_operator("random_inpainting", 64, p=1.0), "p "),
    (lambda: make_operator("random_inpainting", 64, p=1.5), "p "),
    (lambda: make_operator("random_inpainting", 64, seed=-1), "seed"),
    (lambda: make_operator("warp_drive", 64), "sr_avgpool"),
    (lambda: make_operator("box_inpainting", 64, box="left"), "box"),
    (lambda: make_operator("box_inpainting", 64, box="centered"), "box_size"),
    (lambda: make_operator("box_inpainting", 64, box="centered", box_size=64), "box_size"),
    (lambda: make_operator("box_inpainting", 64, box_size=8), "box_size"),
    (lambda: make_operator("sr_bicubic", 64, boundary="zero"), "boundary"),
    (lambda: make_operator("gaussian_blur", 64, kernel_size=8), "kernel_size"),
    (lambda: make_operator("gaussian_blur", 16, kernel_size=17), "kernel_size"),
    (lambda: make_operator("gaussian_blur", 64, sigma=0), "sigma"),
    (lambda: make_operator("gaussian_blur", 64, padding="zeros"), "padding"),
    (lambda: make_operator("compressed_sensing", 16, ratio=0.0), "ratio"),
    (lambda: make_operator("compressed_sensing", 16, ratio=1.5), "ratio"),
    (lambda: make_operator("sr_avgpool", 16, factor=4)(torch.zeros(1, 1, 16, 16)), "x "),
    (lambda: make_operator("sr_avgpool", 16, factor=4)(torch.zeros(1, 3, 8, 8)), "x "),
    (lambda: make_operator("sr_avgpool", 16, factor=4)(torch.zeros(3, 16, 16)), "x "),
    (lambda: make_operator("box_inpainting", 16)(torch.zeros(1, 3, 16, 16, dtype=torch.int64)), "x "),
    (lambda: make_operator("sr_bicubic", 16, factor=4).adjoint(torch.zeros(1, 3, 8, 8)), "y "),
    (lambda: make_operator("compressed_sensing", 16, ratio=0.1).pseudo_inverse(torch.zeros(1, 5)), "y "),
    (lambda: add_measurement_noise(torch.zeros(2), -1.0, generator(0)), "sigma_y"),
]


@pytest.mark.parametrize(
    ("call", "word"), BAD_ARGUMENTS, ids=[f"{i}-{w.strip()}" for i, (_, w) in enumerate(BAD_ARGUMENTS)]
)
def test_bad_arguments_raise_value_error_naming_them(call, word):
    with pytest.raises(ValueError) as info:
        call()
    assert word in str(info.value)


# -- devices --------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_matches_cpu(case):
    A = build(case)
    x = torch.randn(2, *A.x_shape, generator=generator(18), dtype=torch.float64)
    y = A(x)
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        xc, yc = x.to("cuda", dtype), y.to("cuda", dtype)
        assert A(xc).device.type == "cuda" and A(xc).dtype == dtype
        assert torch.allclose(A(xc).cpu().double(), y, atol=tol)
        assert torch.allclose(A.adjoint(yc).cpu().double(), A.adjoint(y), atol=tol)
        assert torch.allclose(A.pseudo_inverse(yc).cpu().double(), A.pseudo_inverse(y), atol=tol * 10)
