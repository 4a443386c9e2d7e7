"""Bundled scikit-image crops: offline loading, determinism, ids that rebuild their crops, the split."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from dwgf.data import (
    SOURCE_IMAGES,
    bundled_crops,
    load_crop,
    load_crops,
    parse_crop_id,
    source_image,
    train_test_split,
)


def test_every_source_image_loads_offline_as_rgb():
    assert len(SOURCE_IMAGES) == 8
    for name in SOURCE_IMAGES:
        array = source_image(name)
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, name
        assert min(array.shape[:2]) >= 300, name
        assert source_image(name) is array  # cached in-process
        assert not array.flags.writeable


def test_crops_are_deterministic_distinct_and_match_the_source_pixels():
    images, ids = bundled_crops(6, size=64, seed=3)
    assert images.shape == (48, 3, 64, 64) and images.dtype == torch.float32
    assert len(set(ids)) == 48
    assert [parse_crop_id(i)[0] for i in ids] == [name for name in SOURCE_IMAGES for _ in range(6)]
    again, ids_again = bundled_crops(6, size=64, seed=3)
    assert ids_again == ids and torch.equal(again, images)
    _, other_ids = bundled_crops(6, size=64, seed=4)
    assert not set(other_ids) & set(ids)
    # independent rebuild straight from scikit-image's array for one crop of each image
    for index in range(0, 48, 6):
        name, row, col = parse_crop_id(ids[index])
        raw = getattr(skimage.data, name)()[row : row + 64, col : col + 64].astype(np.float64)
        expected = torch.from_numpy(raw / 127.5 - 1.0).permute(2, 0, 1).float()
        torch.testing.assert_close(images[index], expected, rtol=0, atol=1e-6)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0


def test_crops_of_one_image_do_not_depend_on_the_others():
    only, only_ids = bundled_crops(5, size=32, seed=0, images=["retina"])
    _, all_ids = bundled_crops(5, size=32, seed=0)
    assert only_ids == all_ids[-5:]
    assert torch.equal(only, load_crops(only_ids, size=32))


def test_load_crop_rebuilds_from_the_id():
    images, ids = bundled_crops(3, size=16, seed=1)
    for image, image_id in zip(images, ids):
        assert torch.equal(load_crop(image_id, size=16), image)
    assert parse_crop_id("hubble_deep_field-r0012-c0345") == ("hubble_deep_field", 12, 345)


@pytest.mark.parametrize(
    "bad", ["astronaut-r12-c0001", "astronauts-r0001-c0001", "lena-r0001-c0001", "astronaut_r0001_c0001", 7]
)
def test_bad_ids_are_refused(bad):
    with pytest.raises(ValueError, match="image_id"):
        load_crop(bad)


def test_out_of_range_requests_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        load_crop("chelsea-r0290-c0000", size=64)  # chelsea is 300 rows high
    with pytest.raises(ValueError, match="larger than"):
        bundled_crops(1, size=400)
    with pytest.raises(ValueError, match="n_per_image"):
        bundled_crops(0)
    with pytest.raises(ValueError, match="unknown bundled image"):
        source_image("camera")
    with pytest.raises(ValueError, match="exceeds"):
        bundled_crops(3, size=370, images=["colorwheel"])  # 370x371 holds exactly 1x2 such crops
    _, ids = bundled_crops(2, size=370, images=["colorwheel"])
    assert sorted(ids) == ["colorwheel-r0000-c0000", "colorwheel-r0000-c0001"]


def test_train_test_split_is_a_deterministic_partition():
    _, ids = bundled_crops(4, size=16, seed=0)
    train, test = train_test_split(ids, 5, seed=2)
    assert len(test) == 5 and len(train) == len(ids) - 5
    assert set(train) | set(test) == set(ids) and not set(train) & set(test)
    assert train == [i for i in ids if i in set(train)]  # input order kept
    assert train_test_split(ids, 5, seed=2) == (train, test)
    assert train_test_split(ids, 5, seed=3)[1] != test
    assert train_test_split(ids, 0, seed=2) == (ids, [])
    with pytest.raises(ValueError, match="n_test"):
        train_test_split(ids, len(ids) + 1)
    with pytest.raises(ValueError, match="distinct"):
        train_test_split(ids + ids[:1], 1)
