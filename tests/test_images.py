"""Every input form of X becomes the same RGB image; bad input names the culprit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from skconv.images import (
    ImageDataset,
    ImageLoadError,
    Preprocessing,
    check_images,
    load_batch,
    load_image,
    n_images,
)


@pytest.fixture
def gray(rng):
    return rng.integers(0, 256, (20, 30), dtype=np.uint8)


def test_gray_rgb_rgba_arrays_and_pil_agree(gray):
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full_like(gray[..., None], 7)], axis=2)
    expected = np.asarray(load_image(rgb))
    for item in (gray, gray[..., None], rgba, Image.fromarray(gray), Image.fromarray(rgba)):
        image = load_image(item)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_float_image_is_scaled_from_unit_range(gray):
    as_float = gray.astype(np.float32) / 255.0
    np.testing.assert_array_equal(np.asarray(load_image(as_float))[..., 0], gray)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    pixels = np.asarray(load_image(str(path)))[0, :, 0]
    np.testing.assert_array_equal(pixels, [0, 100, 255])


def test_paths_are_decoded_lazily_and_errors_name_the_file(tmp_path, gray):
    good = tmp_path / "good.png"
    Image.fromarray(gray).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    dataset = ImageDataset([str(good), str(bad)], Preprocessing(image_size=16))
    assert dataset[0][0].shape == (3, 16, 16)
    with pytest.raises(ImageLoadError, match="bad.png"):
        dataset[1]
    with pytest.raises(ImageLoadError, match="not found.*missing.png"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(str(tmp_path))


def test_mixed_sizes_in_one_batch(rng):
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 60), (90, 30, 3)]]
    dataset = ImageDataset(images, Preprocessing(image_size=24))
    batch = torch.stack([dataset[i][0] for i in range(2)])
    assert batch.shape == (2, 3, 24, 24)


def test_exif_rotation_is_applied(tmp_path):
    wide = np.zeros((10, 40, 3), dtype=np.uint8)
    image = Image.fromarray(wide)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(str(path)).size == (10, 40)


@pytest.mark.parametrize(
    "X, message",
    [
        ("one.png", "single path"),
        (np.zeros((0, 8, 8), dtype=np.uint8), "no images"),
        (np.zeros((3, 8), dtype=np.float32), r"shape \(n, h, w\)"),
        (np.zeros((3, 8, 8, 2), dtype=np.uint8), "1, 3 or 4 channels"),
        (np.full((2, 8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((2, 8, 8), dtype=np.complex64), "Complex"),
        ([], "no images"),
    ],
)
def test_bad_containers_raise_clear_errors(X, message):
    with pytest.raises(ValueError, match=message):
        check_images(X)


def test_float_out_of_range_and_wrong_type_name_the_position():
    with pytest.raises(ImageLoadError, match=r"X\[2\].*\[0, 1\]"):
        load_image(np.full((4, 4), 2.0), where="X[2]")
    with pytest.raises(ImageLoadError, match="expected a file path"):
        load_image(3.5)


def test_containers_pandas_and_read_only_arrays(rng):
    series = pd.Series(["a.png", "b.png"])
    assert list(check_images(series)) == ["a.png", "b.png"]
    frozen = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    frozen.setflags(write=False)
    assert n_images(frozen) == 3
    assert load_image(frozen[0][:, ::2]).size == (4, 8)  # non-contiguous view


def test_preprocessing_resize_crop_normalise():
    p = Preprocessing(image_size=32, crop_pct=0.5, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert p.resize_size == 64
    out = p(Image.new("RGB", (100, 200), (255, 255, 255)))
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, torch.ones(3, 32, 32))


def test_load_batch_gives_exactly_the_pixels_of_the_per_image_path(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (37, 50), dtype=np.uint8)
    rgb = rng.integers(0, 256, (41, 33, 3), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    deep = (rng.integers(0, 65536, (30, 30))).astype(np.uint16)
    X = [
        str(tmp_path / "gray.png"),
        str(tmp_path / "rgb.png"),
        str(tmp_path / "rgba.png"),
        Image.fromarray(gray),
        deep,
        rng.random((20, 25, 3)),
    ]
    # ImageNet statistics: a different mean and std per channel.
    prep = Preprocessing(image_size=24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    batch = load_batch(X, range(len(X)), prep)
    expected = torch.stack([prep(load_image(x)) for x in X])
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, expected)
    assert torch.equal(load_batch(X, [4, 1], prep), expected[[4, 1]])


def test_load_batch_names_the_file_that_fails(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_batch([str(bad)], [0], Preprocessing(image_size=16))


def test_load_batch_fills_a_given_buffer_and_checks_it():
    X = np.random.default_rng(0).integers(0, 256, (3, 20, 20), dtype=np.uint8)
    prep = Preprocessing(image_size=16)
    buffer = np.full((2, 16, 16, 3), np.nan, dtype=np.float32)
    batch = load_batch(X, [2, 0], prep, out=buffer)
    assert np.shares_memory(batch.numpy(), buffer)
    assert torch.equal(batch, load_batch(X, [2, 0], prep, n_threads=2))
    with pytest.raises(ValueError, match=r"shape \(3, 16, 16, 3\), got float32 \(2, 16, 16, 3\)"):
        load_batch(X, [0, 1, 2], prep, out=buffer)


def test_min_side_decodes_a_large_jpeg_at_a_reduced_scale_only(tmp_path, photo):
    scene = photo(800, 1000)
    Image.fromarray(scene).save(tmp_path / "photo.jpg", quality=90)
    Image.fromarray(scene).save(tmp_path / "photo.png")
    jpeg, png = str(tmp_path / "photo.jpg"), str(tmp_path / "photo.png")
    # 800 // 200 = 4 is the largest of libjpeg's scales (1, 2, 4, 8) keeping both sides >= 200.
    assert load_image(jpeg, min_side=200).size == (250, 200)
    assert load_image(jpeg, min_side=500).size == (1000, 800)  # 1/2 would give 400 < 500
    assert load_image(jpeg).size == (1000, 800)
    assert load_image(png, min_side=200).size == (1000, 800)


def test_load_batch_jpeg_draft_stays_within_a_gray_level_of_full_decoding(tmp_path, photo):
    paths = []
    for i, (height, width) in enumerate([(900, 1200), (1200, 700), (120, 90)]):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(photo(height, width)).save(paths[-1], quality=90)
    prep = Preprocessing(image_size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    full = load_batch(paths, range(3), prep)
    draft = load_batch(paths, range(3), prep, jpeg_draft=True)
    levels = (draft - full).abs() * torch.tensor(prep.std).view(1, 3, 1, 1) * 255
    assert levels[:2].mean() < 1.0  # both decoded at 1/4 of their size (measured: 0.19)
    assert levels[:2].max() > 0  # the reduced decode did happen
    assert torch.equal(draft[2], full[2])  # too small to reduce: the same pixels
    expected = torch.stack([prep(load_image(p, min_side=2 * prep.resize_size)) for p in paths])
    assert torch.equal(draft, expected)


def test_errors_name_a_numpy_string_path_plainly(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageLoadError) as info:
        load_image(np.array([str(bad)])[0])
    assert f"Cannot decode image file {str(bad)!r}" in str(info.value)
    assert "np.str_" not in str(info.value)
