"""precision="int8": calibration in fit, the quantized graph on OpenVINO, its refusals."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from skconv import ConvFeatureTransformer
from skconv.engine import quantize
from skconv.engine.quantize import calibration_indices

pytest.importorskip("nncf")
pytest.importorskip("openvino")

# A random ResNet-18 at 16 px: quantized in a few seconds (Lite0 took twice as long).
SMALL = dict(backbone="resnet18", weights=None, image_size=16, device="cpu")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (8, 24, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def int8(images):
    return ConvFeatureTransformer(**SMALL, precision="int8").fit(images)


def test_int8_features_stay_close_to_fp32(int8, images):
    fp32 = ConvFeatureTransformer(**SMALL, engine="torch").fit(images).transform(images)
    features = int8.transform(images)
    assert int8._engine.get().kind == "openvino"
    assert features.shape == fp32.shape and features.dtype == np.float32
    assert not np.allclose(features, fp32, rtol=1e-4, atol=1e-5)  # quantized, not fp32
    cosine = _cosine(features, fp32)
    assert cosine.mean() >= quantize.MIN_COSINE
    # Calibration ran on these very images: the fitted cosine is the one measured here.
    np.testing.assert_allclose(int8.int8_cosine_, cosine.mean(), atol=2e-3)


def test_int8_pickle_carries_the_quantized_graph(int8, images, monkeypatch):
    def no_quantizing(*args, **kwargs):
        raise AssertionError("an unpickled int8 transformer quantized again")

    monkeypatch.setattr(quantize, "quantize_features", no_quantizing)
    loaded = pickle.loads(pickle.dumps(int8))
    np.testing.assert_allclose(loaded.transform(images), int8.transform(images), atol=1e-6)
    assert loaded.int8_cosine_ == int8.int8_cosine_


def test_int8_and_fp32_features_do_not_share_a_feature_cache(int8, images):
    fp32 = clone(int8).set_params(precision="fp32").fit(images)
    assert fp32.int8_cosine_ is None and fp32._int8_model is None
    assert fp32._cache_config() != int8._cache_config()
    # fp32's keys are those of earlier versions: int8 only appends its name.
    assert int8._cache_config() == (*fp32._cache_config(), "int8")


def test_int8_calibrates_on_at_most_the_limit_spread_over_fit_images(monkeypatch, images):
    seen = {}

    def fake_graph(module, spec, pixels, cache_key=None, verbose=False):
        seen["pixels"] = pixels
        return b"xml", b"bin", 0.999

    monkeypatch.setattr(quantize, "int8_graph", fake_graph)
    monkeypatch.setattr(quantize, "CALIBRATION_IMAGES", 5)
    t = ConvFeatureTransformer(**SMALL, precision="int8").fit(images)
    assert t.int8_cosine_ == 0.999
    assert seen["pixels"].shape == (5, 16, 16, 3)
    assert seen["pixels"].dtype == np.uint8


def test_int8_refuses_a_backbone_below_the_cosine_floor(monkeypatch, images):
    monkeypatch.setattr(quantize, "int8_graph", lambda *a, **k: (b"", b"", 0.5))
    with pytest.raises(ValueError, match=r"cannot quantize backbone 'resnet18'.*0\.500"):
        ConvFeatureTransformer(**SMALL, precision="int8").fit(images)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"engine": "torch"}, "engine='torch'"),
        ({"engine": "onnxruntime"}, "engine='onnxruntime'"),
    ],
)
def test_int8_refuses_engines_that_cannot_run_it(images, params, message):
    with pytest.raises(ValueError, match=message):
        ConvFeatureTransformer(**SMALL, **params, precision="int8").fit(images)


def test_int8_without_openvino_or_nncf_says_what_is_available(monkeypatch, images):
    monkeypatch.setattr(quantize, "int8_available", lambda: False)
    with pytest.raises(ValueError, match=r"openvino and nncf.*available precisions: 'fp32'"):
        ConvFeatureTransformer(**SMALL, precision="int8").fit(images)


def test_unknown_precision_is_refused_in_fit(images):
    t = ConvFeatureTransformer(**SMALL, precision="int4")
    with pytest.raises(ValueError, match="precision"):
        t.fit(images)


def test_calibration_indices_are_spread_and_capped():
    assert calibration_indices(3).tolist() == [0, 1, 2]
    picked = calibration_indices(1000, limit=300)
    assert len(picked) == 300 and picked[0] == 0 and picked[-1] == 999
    assert np.all(np.diff(picked) > 0)
