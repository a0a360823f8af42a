"""ConvFeatureTransformer: the estimator contract, real features, caching, persistence."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skconv import ConvFeatureTransformer
from skconv.features import _engine_key
from skconv.images import load_image

# Small random-weight backbone: the contract does not need ImageNet weights. The torch
# engine: exporting to ONNX Runtime costs a second per fit, which every contract check
# would pay; the ONNX Runtime engine has its own contract test below.
SMALL = dict(backbone="resnet18", weights=None, image_size=16, batch_size=64, engine="torch")


class _MatrixAsImages(ConvFeatureTransformer):
    """The transformer behind an adapter that reads a numeric ``(n, d)`` matrix as images.

    scikit-learn's common checks feed numeric matrices, which ConvFeatureTransformer
    refuses on purpose (its tags say so: reading them as pixels would hide a user's
    mistake). Here each row becomes a 1 x d float image (a logistic map into [0, 1];
    NaN and infinity pass through, so that the transformer itself must refuse them),
    and every check runs on the real fit, transform and pickling.
    """

    def fit(self, X, y=None):
        return super().fit(_as_images(X), y)

    def transform(self, X):
        return super().transform(_as_images(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


def _as_images(X):
    nested = isinstance(X, list) and X and isinstance(X[0], (list, tuple))  # rows as lists
    if nested or (hasattr(X, "__array__") and not isinstance(X, np.ndarray)):
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "uifb":
        values = X.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mapped = np.where(np.isfinite(values), 1.0 / (1.0 + np.exp(-values)), values)
        return mapped[:, None, :]
    return X


_ONE_IMAGE_PER_SAMPLE = (
    "n_features_in_ is 1: each sample is one image whatever its pixel count, and images "
    "of different sizes are accepted, so no feature count is compared at transform"
)
EXPECTED_FAILED = {
    "check_n_features_in": _ONE_IMAGE_PER_SAMPLE,
    "check_n_features_in_after_fitting": _ONE_IMAGE_PER_SAMPLE,
    "check_transformer_general": _ONE_IMAGE_PER_SAMPLE,
    "check_transformer_general(readonly_memmap=True)": _ONE_IMAGE_PER_SAMPLE,
    "check_dtype_object": "an object array is read as file paths or PIL images, one per sample",
    "check_estimators_empty_data_messages": (
        "empty images are refused with a message about images, not about 0 features"
    ),
    "check_fit2d_predict1d": (
        "1-D input is refused with a message that names the image shapes accepted, not "
        "'Reshape your data'"
    ),
    "check_methods_subset_invariance": (
        "float32 convolution kernels differ with the batch size: a feature moves by up "
        "to about 1e-6 between batches of different sizes (4.6e-7 measured), more than "
        "the check's rtol=1e-4 on features near 1e-3; test_contract_on_images checks "
        "subsets to 1e-5"
    ),
}


@parametrize_with_checks(
    [_MatrixAsImages(**SMALL)], expected_failed_checks=lambda est: EXPECTED_FAILED
)
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (6, 40, 48), dtype=np.uint8)


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_contract_on_images(images, engine):
    """What the matrix-fed common checks check, on image data, with each engine."""
    t = ConvFeatureTransformer(**{**SMALL, "engine": engine})
    assert t.fit(images) is t
    params = t.get_params()
    state = t.__dict__.copy()
    out = t.transform(images)
    assert t.__dict__ == state  # check_dict_unchanged: transform changes no attribute
    assert t._engine.get().kind == engine
    assert out.dtype == np.float32 and out.shape == (6, t.n_features_out_) == (6, 512)
    assert t.get_params() == params  # fit does not touch parameters
    # sample order and subset invariance
    np.testing.assert_allclose(t.transform(images[::-1]), out[::-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.transform(images[2:4]), out[2:4], rtol=1e-5, atol=1e-5)
    # idempotent fit, pickle round trip, read-only input
    again = clone(t).fit(images).transform(images)
    np.testing.assert_array_equal(again, out)
    restored = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(restored.transform(images), out)
    frozen = images.copy()
    frozen.setflags(write=False)
    np.testing.assert_array_equal(t.transform(frozen), out)


def test_engines_agree_and_auto_takes_the_fastest_installed_on_a_cpu(images):
    from skconv.engine._openvino import openvino_available

    auto = ConvFeatureTransformer(**{**SMALL, "engine": "auto"}, device="cpu").fit(images)
    by_torch = ConvFeatureTransformer(**SMALL).fit(images).transform(images)
    np.testing.assert_allclose(auto.transform(images), by_torch, rtol=1e-4, atol=1e-5)
    assert auto._engine.get().kind == ("openvino" if openvino_available() else "onnxruntime")


def test_engine_cache_key_names_weights_and_feature_spec(images):
    random = ConvFeatureTransformer(**SMALL).fit(images)
    # No sha256 of random weights: not cached.
    assert _engine_key(random.backbone_, random._spec()) is None
    identity = {**random.backbone_, "sha256": "ab" * 32}
    other = clone(random).set_params(pooling="max").fit(images)
    keys = {_engine_key(identity, random._spec()), _engine_key(identity, other._spec())}
    assert len(keys) == 2
    assert _engine_key(identity, random._spec()) == _engine_key(identity, random._spec())


def test_concurrent_transforms_from_threads(images):
    from concurrent.futures import ThreadPoolExecutor

    t = ConvFeatureTransformer(**{**SMALL, "layers": ["layer2", "final"]}).fit(images)
    expected = t.transform(images)
    fresh = pickle.loads(pickle.dumps(t))  # its engine is built by the racing threads
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: fresh.transform(np.roll(images, k, axis=0)), range(8)))
    for k, got in enumerate(results):
        np.testing.assert_allclose(got, np.roll(expected, k, axis=0), rtol=1e-5, atol=1e-5)


def test_parameters_changed_after_fit_need_a_new_fit(images):
    from sklearn.exceptions import NotFittedError

    t = ConvFeatureTransformer(**SMALL).fit(images)
    t.set_params(pooling="avgmax")
    with pytest.raises(NotFittedError, match=r"pooling='avgmax' \(fitted with 'avg'\).*fit again"):
        t.transform(images)
    assert t.fit(images).transform(images).shape == (6, 1024)
    t.set_params(batch_size=2, verbose=0)  # how to run, not what: no new fit needed
    assert t.transform(images).shape == (6, 1024)


def test_the_fitted_network_carries_no_imagenet_classifier(images):
    t = ConvFeatureTransformer(**SMALL).fit(images)
    assert not any(k.startswith(("fc.", "classifier.")) for k in t.module_.state_dict())
    names = {k.split(".")[-2] for k in t.__getstate__()["_module_state"]}
    assert "fc" not in names


def test_unfitted_transform_raises(images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ConvFeatureTransformer(**SMALL).transform(images)


@pytest.mark.parametrize(
    "params, width",
    [
        (dict(pooling="max"), 512),
        (dict(pooling="gem"), 512),
        (dict(pooling="avgmax"), 1024),
        (dict(layers=["layer2", "final"]), 128 + 512),
        (dict(layers=["layer3"], pooling="avgmax"), 512),
    ],
)
def test_pooling_and_layers_set_the_width(images, params, width):
    t = ConvFeatureTransformer(**{**SMALL, **params}).fit(images)
    out = t.transform(images)
    assert out.shape == (6, width) == (6, t.n_features_out_)
    assert len(t.get_feature_names_out()) == width
    assert np.isfinite(out).all()


def test_bad_parameters_raise_in_fit(images):
    with pytest.raises(ValueError, match="pooling"):
        ConvFeatureTransformer(**{**SMALL, "pooling": "median"}).fit(images)
    with pytest.raises(ValueError, match="Unknown stage 'conv9'"):
        ConvFeatureTransformer(**{**SMALL, "layers": ["conv9"]}).fit(images)
    with pytest.raises(ValueError, match="layers"):
        ConvFeatureTransformer(**{**SMALL, "layers": "layer3"}).fit(images)


def test_tta_averages_image_and_mirror(images):
    square = images[:, :, :40]  # a symmetric crop: the crop of the mirror is the mirrored crop
    plain = ConvFeatureTransformer(**SMALL).fit(square)
    tta = ConvFeatureTransformer(**SMALL, tta=True).fit(square)
    expected = 0.5 * (plain.transform(square) + plain.transform(square[:, :, ::-1]))
    np.testing.assert_allclose(tta.transform(square), expected, rtol=1e-4, atol=1e-5)


def test_feature_cache_skips_forward_passes(tmp_path, images, monkeypatch):
    import skconv.features

    computed = []
    original = skconv.features.extract

    def counting(engine, subset, *args, **kwargs):
        computed.append(len(subset))
        return original(engine, subset, *args, **kwargs)

    monkeypatch.setattr(skconv.features, "extract", counting)
    cache = str(tmp_path / "cache")
    t = ConvFeatureTransformer(**SMALL, memory=cache).fit(images)
    first = t.transform(images)
    second = t.transform(images)
    assert computed == [6]  # all six images came from the cache the second time
    np.testing.assert_array_equal(first, second)
    changed = images.copy()
    changed[0, 0, 0] ^= 255
    np.testing.assert_array_equal(t.transform(changed)[1:], first[1:])
    assert computed == [6, 1]  # new content, new key; the others are hits
    other = ConvFeatureTransformer(**{**SMALL, "pooling": "max"}, memory=cache)
    other.fit(images).transform(images)
    assert computed[-1] == 6  # a different configuration never reuses rows
    full = ConvFeatureTransformer(**SMALL, jpeg_draft=False, memory=joblib.Memory(cache))
    full.fit(images).transform(images)
    assert computed[-1] == 6  # nor does decoding JPEGs at full size
    rows = list((tmp_path / "cache" / "skconv-features").rglob("*.npy"))
    assert len(rows) == 6 + 1 + 6 + 6  # one small file per image and configuration


def test_models_saved_by_earlier_versions_load_and_transform_as_fitted(images):
    t = ConvFeatureTransformer(**SMALL).fit(images)
    state = t.__getstate__()
    # As pickled before jpeg_draft and engine existed, with the ImageNet classifier kept.
    for key in ("jpeg_draft", "engine", "_fitted_params"):
        del state[key]
    state["n_forward_passes_"] = 3
    state["_module_state"]["classifier.weight"] = np.zeros((10, 512), dtype=np.float32)
    old = ConvFeatureTransformer.__new__(ConvFeatureTransformer)
    old.__setstate__(state)
    assert old.get_params()["jpeg_draft"] is False  # decoding as its head was trained
    assert not hasattr(old, "n_forward_passes_")
    np.testing.assert_allclose(old.transform(images), t.transform(images), rtol=1e-4, atol=1e-5)


def test_jpeg_draft_features_stay_close_to_full_size_decoding(tmp_path, photo):
    paths = []
    for i in range(4):  # scenes of 480 x 640 px: decoded at 1/4 for a 16 px crop
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(photo(480, 640, seed=i)).save(paths[-1], quality=90)
    draft = ConvFeatureTransformer(**SMALL).fit(paths).transform(paths)
    full = ConvFeatureTransformer(**SMALL, jpeg_draft=False).fit(paths).transform(paths)
    assert not np.array_equal(draft, full)
    relative = np.linalg.norm(draft - full, axis=1) / np.linalg.norm(full, axis=1)
    assert relative.max() < 0.02, relative  # measured: 0.5-0.6 %


def test_set_output_pandas(images):
    t = ConvFeatureTransformer(**SMALL).set_output(transform="pandas")
    frame = t.fit_transform(images)
    assert list(frame.columns[:2]) == ["final_avg_0", "final_avg_1"]
    assert frame.shape == (6, 512)


def test_verbose_shows_progress(images, capsys):
    ConvFeatureTransformer(**SMALL, verbose=1).fit_transform(images)
    assert "features (resnet18)" in capsys.readouterr().err


def test_num_workers_give_same_features(images):
    t = ConvFeatureTransformer(**SMALL).fit(images)
    np.testing.assert_array_equal(
        t.set_params(num_workers=2).transform(images),
        t.set_params(num_workers=0).transform(images),
    )


@pytest.mark.real_data
def test_lite0_features_equal_timm_pooled_features(busi_small):
    paths = busi_small[0][:8]
    t = ConvFeatureTransformer().fit(paths)
    reference = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    weights = {
        k.removeprefix("body.model."): v
        for k, v in t.module_.state_dict().items()
        if k.startswith("body.model.")
    }
    reference.load_state_dict(weights)
    batch = torch.stack([t.preprocessing_(load_image(p)) for p in paths])
    with torch.inference_mode():
        expected = reference(batch).numpy()
    # Batch norms are folded into the convolutions for inference: float32 rounding
    # differs (measured up to 1.1e-5 on features of magnitude up to ~6).
    np.testing.assert_allclose(t.transform(paths), expected, atol=5e-5, rtol=0)


FRESH_PROCESS = textwrap.dedent(
    """
    import socket, sys, joblib, numpy as np
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")
    socket.socket.connect = no_network
    socket.create_connection = no_network
    model = joblib.load(sys.argv[1])
    paths = np.load(sys.argv[2], allow_pickle=False)
    np.save(sys.argv[3], model.predict_proba(paths))
    """
)


@pytest.mark.real_data
@pytest.mark.slow
def test_busi_pipeline_fits_and_round_trips_in_fresh_process(busi_small, tmp_path):
    paths, labels = busi_small
    clf = Pipeline([("features", ConvFeatureTransformer()), ("head", LogisticRegression())])
    train = np.arange(len(paths)) % 3 != 0
    clf.fit(paths[train], labels[train])
    accuracy = clf.score(paths[~train], labels[~train])
    assert accuracy > 1 / 3  # better than chance on three balanced classes
    model_path = tmp_path / "model.joblib"
    joblib.dump(clf, model_path)
    np.save(tmp_path / "paths.npy", paths[~train])
    env = {
        "TORCH_HOME": str(tmp_path / "empty-torch"),
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PATH": "/usr/bin:/bin",
        # the libraries this process runs on (make test-floor puts older ones there)
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(model_path),
            str(tmp_path / "paths.npy"),
            str(tmp_path / "proba.npy"),
        ],
        check=True,
        env=env,
        timeout=120,
    )
    # ONNX Runtime's multi-threaded sums may round differently in another process.
    fresh, here = np.load(tmp_path / "proba.npy"), clf.predict_proba(paths[~train])
    np.testing.assert_allclose(fresh, here, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fresh.argmax(axis=1), here.argmax(axis=1))


@pytest.mark.real_data
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.slow
def test_grid_search_over_backbones(busi_small, n_jobs):
    paths, labels = busi_small
    subset = np.r_[0:8, 20:28, 40:48]
    clf = Pipeline(
        [
            ("features", ConvFeatureTransformer(image_size=96)),
            ("head", LogisticRegression(max_iter=500)),
        ]
    )
    search = GridSearchCV(
        clf,
        {"features__backbone": ["efficientnet_lite0", "squeezenet1_1_caffe"]},
        cv=2,
        n_jobs=n_jobs,
    )
    search.fit(paths[subset], labels[subset])
    assert search.best_params_["features__backbone"] in {
        "efficientnet_lite0",
        "squeezenet1_1_caffe",
    }
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.real_data
@pytest.mark.slow
def test_compiled_fast_path_matches_default(images):
    default = ConvFeatureTransformer(**SMALL).fit(images)
    fast = ConvFeatureTransformer(**SMALL, compile=True).fit(images)
    fast.set_params(batch_size=4)
    # 6 images in batches of 4: the short last batch is padded to the compiled shape.
    np.testing.assert_allclose(
        fast.transform(images), default.transform(images), atol=1e-4, rtol=1e-4
    )
    restored = pickle.loads(pickle.dumps(fast))  # compiled code is not pickled
    assert not restored._engine.built


def test_prefetching_decodes_every_batch_in_order(tmp_path, rng):
    from PIL import Image

    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)
        paths.append(str(path))
    t = ConvFeatureTransformer(**{**SMALL, "batch_size": 3}).fit(paths)
    together = t.transform(paths)
    one_by_one = np.vstack([t.transform([p]) for p in paths])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_cpu_forward_runs_in_small_chunks_with_the_same_features(images):
    t = ConvFeatureTransformer(**{**SMALL, "batch_size": 32}).fit(images)
    engine = t._engine.get()
    assert engine.chunk_size(32) == min(32, max(8, 4 * torch.get_num_threads()))
    sizes = []
    handle = engine.model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    try:
        chunked = t.transform(np.concatenate([images] * 3))  # 18 images, one decoding step
    finally:
        handle.remove()
    assert max(sizes) == engine.chunk_size(32) and sum(sizes) == 18
    whole = t.set_params(batch_size=2).transform(np.concatenate([images] * 3))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
