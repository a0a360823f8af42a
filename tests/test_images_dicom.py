"""DICOM files as X (skconv.images._dicom): what a viewer shows, nothing of the metadata.

Three kinds of files: ones written here with known pixels (exact expectations), the
79 real files pydicom ships in its wheel (written by scanners and toolkits nobody here
wrote), and mutations of both (hypothesis).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pydicom = pytest.importorskip("pydicom")

from skconv._cache import content_key  # noqa: E402
from skconv._synthetic import write_dicom  # noqa: E402
from skconv.datasets import load_image_folder, make_ultrasound_folder  # noqa: E402
from skconv.images import (  # noqa: E402
    DicomPath,
    ImageLoadError,
    dicom_paths,
    is_dicom,
    load_image,
)

SECRET = "DOE^JANE^SKCONVSECRET"


def grey(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    assert pixels.ndim == 3 and (pixels == pixels[..., :1]).all()  # grey, three channels
    return pixels[..., 0]


@pytest.fixture
def ramp():
    return (np.arange(48 * 40).reshape(48, 40) % 256).astype(np.uint8)


# ------------------------------------------------------------------- files written here


def test_8_bit_grey_is_read_as_stored_and_monochrome1_inverted(tmp_path, ramp):
    write_dicom(ramp, tmp_path / "a.dcm", patient_name=SECRET)
    write_dicom(255 - ramp, tmp_path / "inverted.dcm", photometric="MONOCHROME1")
    np.testing.assert_array_equal(grey(load_image(tmp_path / "a.dcm")), ramp)
    np.testing.assert_array_equal(grey(load_image(tmp_path / "inverted.dcm")), ramp)
    assert load_image(tmp_path / "a.dcm", keep_gray=True).mode == "L"


def test_rgb_and_ybr_become_the_same_rgb(tmp_path, photo):
    rgb = photo(24, 32)
    write_dicom(rgb, tmp_path / "rgb.dcm")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb.dcm")), rgb)
    ybr = pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL")
    write_dicom(ybr, tmp_path / "ybr.dcm", photometric="YBR_FULL")
    back = np.asarray(load_image(tmp_path / "ybr.dcm")).astype(int)
    assert np.abs(back - rgb).max() <= 2  # two 8-bit roundings of a colour transform


def test_window_rescale_and_their_choices(tmp_path):
    # CT-like: stored 0..4095, rescaled to -1024..3071 HU, a soft-tissue window.
    stored = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    attributes = dict(RescaleSlope=1, RescaleIntercept=-1024, BitsStored=12)
    path = write_dicom(stored, tmp_path / "ct.dcm", WindowCenter=40, WindowWidth=400, **attributes)
    hu = stored.astype(float) - 1024
    shown = grey(load_image(path))
    assert shown[hu <= 40 - 200].max() == 0 and shown[hu >= 40 + 200].min() == 255
    inside = (hu > -150) & (hu < 230)
    expected = (hu[inside] - (40 - 0.5)) / (400 - 1) + 0.5  # PS3.3 C.11.2.1.2.1, LINEAR
    assert np.abs(shown[inside] - expected * 255).max() <= 1.0

    bone = grey(load_image(DicomPath(path, window=(500, 2000))))
    assert not np.array_equal(bone, shown) and bone[hu <= -500].max() == 0
    # "none": the full range the header allows (-1024..3071), as stored
    full = grey(load_image(DicomPath(path, window="none")))
    np.testing.assert_array_equal(full, np.rint(stored / 4095 * 255).astype(np.uint8))
    # "minmax": this image's own range
    lo, hi = hu.min(), hu.max()
    np.testing.assert_array_equal(
        grey(load_image(DicomPath(path, window="minmax"))),
        np.rint((hu - lo) / (hi - lo) * 255).astype(np.uint8),
    )


def test_16_bit_without_a_window_is_shown_over_its_own_range(tmp_path):
    pixels = np.array([[1000, 1500], [2000, 3000]], dtype=np.uint16)
    shown = grey(load_image(write_dicom(pixels, tmp_path / "mr.dcm")))
    np.testing.assert_array_equal(shown, [[0, 64], [128, 255]])


def test_signed_pixels_are_scaled_not_clipped(tmp_path):
    pixels = np.array([[-32768, 0], [100, 32767]], dtype=np.int16)
    shown = grey(load_image(DicomPath(write_dicom(pixels, tmp_path / "s.dcm"), window="none")))
    np.testing.assert_array_equal(shown, [[0, 128], [128, 255]])


def test_float_pixel_data_is_shown_over_its_range_and_a_window_is_refused(tmp_path):
    dataset = pydicom.dcmread(write_dicom(np.zeros((4, 4), dtype=np.uint8), tmp_path / "f.dcm"))
    del dataset.PixelData, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation
    values = np.linspace(-100, 100, 16, dtype=np.float32).reshape(4, 4)
    dataset.FloatPixelData, dataset.BitsAllocated = values.tobytes(), 32
    dataset.save_as(tmp_path / "f.dcm")
    expected = np.rint((values + 100) / 200 * 255).astype(np.uint8)
    for window in ("file", "none", "minmax"):
        np.testing.assert_array_equal(
            grey(load_image(DicomPath(tmp_path / "f.dcm", window=window))), expected
        )
    with pytest.raises(ImageLoadError, match=r"f\.dcm.*window=\(0.0, 100.0\) needs integer"):
        load_image(DicomPath(tmp_path / "f.dcm", window=(0, 100)))


def test_palette_colour_goes_through_its_lut(tmp_path):
    import pydicom.data

    palette = pydicom.data.get_testdata_file("examples_palette.dcm")
    dataset = pydicom.dcmread(palette)
    expected = pydicom.pixels.apply_color_lut(dataset.pixel_array, dataset)
    expected = np.rint(expected / (65535 if expected.dtype == np.uint16 else 255) * 255)
    np.testing.assert_array_equal(np.asarray(load_image(palette)), expected.astype(np.uint8))


def test_multi_frame_files_follow_the_frame_policy(tmp_path):
    frames = np.stack([np.full((8, 10), 40 * k, dtype=np.uint8) for k in range(5)])
    path = write_dicom(frames, tmp_path / "cine.dcm")
    with pytest.raises(ImageLoadError, match=r"cine\.dcm' has 5 frames.*frame=0"):
        load_image(path)
    assert grey(load_image(DicomPath(path, frame=1)))[0, 0] == 40
    assert grey(load_image(DicomPath(path, frame=-1)))[0, 0] == 160
    assert grey(load_image(DicomPath(path, frame="middle")))[0, 0] == 80
    with pytest.raises(ImageLoadError, match="frame=5 is out of range"):
        load_image(DicomPath(path, frame=5))


def test_files_are_recognised_by_content_without_an_extension(tmp_path, ramp):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        write_dicom(ramp, tmp_path / "data" / cls / "IM0001")  # as scanners name them
        write_dicom(ramp, tmp_path / "data" / cls / "1.2.840.113619.2.55.3")
        write_dicom(ramp, tmp_path / "data" / cls / "named.DCM")
        (tmp_path / "data" / cls / "notes").write_text("not an image")
    write_dicom(ramp, tmp_path / "data" / "a" / "DICOMDIR")  # an index, never an image
    data = load_image_folder(tmp_path / "data")
    assert [Path(p).name for p in data.paths[:3]] == [
        "1.2.840.113619.2.55.3",
        "IM0001",
        "named.DCM",
    ]
    assert len(data.paths) == 6
    assert is_dicom(tmp_path / "data" / "a" / "IM0001") and not is_dicom(tmp_path / "nothing")
    np.testing.assert_array_equal(grey(load_image(data.paths[0])), ramp)


def test_a_header_cannot_make_it_allocate(tmp_path, ramp):
    path = write_dicom(ramp, tmp_path / "big.dcm")
    dataset = pydicom.dcmread(path)
    dataset.Rows = dataset.Columns = 60000
    dataset.save_as(tmp_path / "bomb.dcm")
    with pytest.raises(ImageLoadError, match=r"bomb\.dcm.*60000x60000x1.*MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "bomb.dcm")
    dataset.Rows = dataset.Columns = 4000  # under the limit, but the file holds 48x40
    dataset.save_as(tmp_path / "short.dcm")
    with pytest.raises(ImageLoadError, match=r"short\.dcm' promises 16000000 pixels"):
        load_image(tmp_path / "short.dcm")
    frames = pydicom.dcmread(path)
    frames.NumberOfFrames = 50000  # rows x columns x frames counts
    frames.save_as(tmp_path / "frames.dcm")
    with pytest.raises(ImageLoadError, match=r"48x40x50000"):
        load_image(DicomPath(tmp_path / "frames.dcm", frame=0))


def test_no_metadata_in_errors_or_warnings(tmp_path, ramp):
    path = write_dicom(ramp, tmp_path / "p.dcm", patient_name=SECRET)
    dataset = pydicom.dcmread(path)
    dataset.PixelData = dataset.PixelData[:100]  # truncated
    dataset.InstitutionName = "SKCONV GENERAL HOSPITAL"
    dataset.save_as(tmp_path / "truncated.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError) as info:
            load_image(tmp_path / "truncated.dcm")
        load_image(path)
    text = str(info.value) + " ".join(str(w.message) for w in caught)
    assert "truncated.dcm" in text
    assert "SKCONVSECRET" not in text and "HOSPITAL" not in text


def test_decoder_errors_are_scrubbed_of_the_files_values(tmp_path, ramp, monkeypatch):
    import skconv.images._dicom as dicom

    path = write_dicom(ramp, tmp_path / "p.dcm", patient_name=SECRET)

    def leaky(dataset, path, frame):
        raise ValueError(f"cannot decode {dataset.PatientName} of {dataset.PatientID}")

    monkeypatch.setattr(dicom, "_decode_pixels", leaky)
    with pytest.raises(ImageLoadError, match="p.dcm") as info:
        load_image(path)
    assert "SKCONVSECRET" not in str(info.value) and "SKCONV-0001" not in str(info.value)
    assert "<redacted>" in str(info.value)


def test_a_missing_decoder_is_named_with_its_extra(tmp_path, ramp, monkeypatch):
    import pydicom.pixels

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0"]

    path = write_dicom(ramp, tmp_path / "j.dcm", compression="jpeg")
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(
        ImageLoadError, match=r"j\.dcm' is stored as JPEG Baseline.*skconv\[dicom\]"
    ):
        load_image(path)


def test_dicom_path_options_validate_pickle_and_key_the_cache(tmp_path, ramp):
    path = write_dicom(ramp, tmp_path / "a.dcm")
    chosen = DicomPath(path, window=(40, 400), frame="middle")
    assert pickle.loads(pickle.dumps(chosen)) == chosen
    assert os.fspath(chosen) == str(path) and str(chosen) == str(path)
    keys = {content_key(p) for p in (str(path), DicomPath(path), chosen)}
    assert len(keys) == 2  # the default options key as the plain path does
    assert content_key(DicomPath(path)) == content_key(str(path))
    X = dicom_paths([path, path], window="none")
    assert X.dtype == object and X[1] == DicomPath(path, window="none")
    for bad, match in [
        (dict(window="soft"), "window must be one of"),
        (dict(window=(40, 0)), "width >= 1"),
        (dict(frame=1.5), "frame must be an integer"),
        (dict(frame=True), "frame must be an integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            DicomPath(path, **bad)


def test_features_of_dicom_equal_those_of_the_png(tmp_path):
    from skconv import ConvFeatureTransformer

    png = load_image_folder(make_ultrasound_folder(tmp_path / "png", 2, 40, random_state=0))
    dcm = load_image_folder(
        make_ultrasound_folder(tmp_path / "dcm", 2, 40, random_state=0, file_format="dicom")
    )
    for path in dcm.paths[:2]:  # a MONOCHROME1 copy shows the same image
        dataset = pydicom.dcmread(path)
        dataset.PhotometricInterpretation = "MONOCHROME1"
        dataset.PixelData = (255 - dataset.pixel_array).astype(np.uint8).tobytes()
        dataset.save_as(path)
    features = ConvFeatureTransformer("resnet18", weights=None, image_size=32, engine="torch")
    features.fit(png.paths)
    np.testing.assert_array_equal(features.transform(png.paths), features.transform(dcm.paths))


# ------------------------------------------------------------- pydicom's own test files


def _pydicom_test_files() -> list[str]:
    try:
        import pydicom.data

        folder = Path(pydicom.data.__file__).parent / "test_files"
    except ImportError:  # pragma: no cover
        return []
    return sorted(os.fspath(p) for p in folder.iterdir() if p.is_file())


TEST_FILES = _pydicom_test_files()


def _what_pydicom_says(path: str) -> tuple[str, int]:
    """("image", frames) if pydicom decodes its pixels, else ("error", 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path)
            frames = int(dataset.get("NumberOfFrames") or 1)
            dataset.pixel_array  # noqa: B018
        except Exception:
            return "error", 0
    return "image", frames


@pytest.mark.skipif(len(TEST_FILES) < 70, reason="pydicom's test files are not installed")
def test_pydicom_test_files_decode_or_fail_by_name():
    from skconv import ConvFeatureTransformer

    images, refused = [], 0
    for path in TEST_FILES:
        if Path(path).suffix not in (".dcm", "") and not is_dicom(path):
            continue  # .json, .dump, .gz, .icc, README: not DICOM by name or content
        verdict, frames = _what_pydicom_says(path)
        if verdict == "error":
            with pytest.raises(ImageLoadError, match=re.escape(f"/{Path(path).name}'")) as info:
                load_image(path)
            assert info.type is ImageLoadError, path
            refused += 1
        elif frames > 1:
            with pytest.raises(ImageLoadError, match=f"{frames} frames"):
                load_image(path)
            images.append(DicomPath(path, frame="middle"))
        else:
            images.append(path)
    assert len(images) == 58 and refused >= 20  # as pydicom decodes them (3.0, plugins)
    features = ConvFeatureTransformer("resnet18", weights=None, image_size=32, engine="torch")
    out = features.fit(images).transform(images)
    assert out.shape == (58, 512) and np.isfinite(out).all()


# ------------------------------------------------------------------------ mutated bytes


def _seeds() -> list[bytes]:
    with tempfile.TemporaryDirectory() as folder:
        ramp = (np.arange(32 * 24).reshape(32, 24) % 256).astype(np.uint8)
        made = [
            write_dicom(ramp, Path(folder) / "a.dcm"),
            write_dicom(
                ramp.astype(np.uint16) * 16,
                Path(folder) / "b.dcm",
                WindowCenter=2000,
                WindowWidth=1000,
                RescaleSlope=2,
                RescaleIntercept=-100,
            ),
            write_dicom(ramp, Path(folder) / "c.dcm", compression="rle"),
            write_dicom(ramp, Path(folder) / "d.dcm", compression="jpeg"),
        ]
        return [p.read_bytes() for p in made]


SEEDS = _seeds()


def _mutate(data: bytes, offsets: list[int], values: list[int], cut: int | None) -> bytes:
    data = bytearray(data)
    for offset, value in zip(offsets, values):
        data[offset % len(data)] = value
    return bytes(data[:cut] if cut else data)


def test_malformed_transfer_syntax_is_a_named_load_error(tmp_path):
    """Found by the fuzz test: a backslash made the UID a MultiValue (unhashable)."""
    for number, seed in enumerate(SEEDS):
        start = seed.index(b"1.2.840.10008.1.2")
        path = tmp_path / f"scan{number}.dcm"
        path.write_bytes(seed[: start + 5] + b"\\" + seed[start + 6 :])
        with pytest.raises(ImageLoadError, match="scan"):
            load_image(path)


@pytest.mark.timeout(120)
@settings(
    max_examples=int(os.environ.get("SKCONV_FUZZ_EXAMPLES", 150)),
    # CI replays the same examples every run; SKCONV_FUZZ_EXAMPLES=N explores new ones.
    derandomize="SKCONV_FUZZ_EXAMPLES" not in os.environ,
    deadline=2000,  # ms per file: a hang fails the example
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(
    data=st.builds(
        _mutate,
        st.sampled_from(SEEDS),
        st.lists(st.integers(0, 2048), min_size=1, max_size=8),
        st.lists(st.integers(0, 255), min_size=1, max_size=8),
        st.none() | st.integers(132, 2048),
    ),
    extension=st.sampled_from([".dcm", ""]),
)
def test_mutated_dicom_loads_or_fails_cleanly_in_bounded_memory(data, extension):
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as folder:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
        path = os.path.join(folder, "scan" + extension)
        Path(path).write_bytes(data)
        tracemalloc.start()
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            assert path in str(exc)
        else:
            assert np.asarray(image).ndim == 3
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peak < 64 * 2**20  # the pixel limit bounds what a header can make it allocate


@pytest.mark.filterwarnings("ignore::UserWarning")  # skorch's notes on tiny validation sets
def test_every_consumer_of_x_takes_dicom_as_png(tmp_path):
    """Duplicates, fine-tuning and heat maps see the PNGs' pixels in the DICOM copies."""
    from skconv import FineTuneClassifier
    from skconv.explain import heatmaps
    from skconv.model_selection import find_near_duplicates

    png = load_image_folder(make_ultrasound_folder(tmp_path / "png", 8, 32, random_state=0))
    dcm = load_image_folder(
        make_ultrasound_folder(tmp_path / "dcm", 8, 32, random_state=0, file_format="dicom")
    )
    np.testing.assert_array_equal(find_near_duplicates(png.paths), find_near_duplicates(dcm.paths))
    tiny = dict(backbone="resnet18", weights=None, image_size=32, batch_size=8, random_state=0)
    fitted = [FineTuneClassifier(**tiny, max_epochs=1).fit(d.paths, d.target) for d in (png, dcm)]
    np.testing.assert_array_equal(
        fitted[0].predict_proba(png.paths), fitted[1].predict_proba(dcm.paths)
    )
    for a, b in zip(heatmaps(fitted[0], png.paths[:2]), heatmaps(fitted[1], dcm.paths[:2])):
        np.testing.assert_array_equal(a, b)
