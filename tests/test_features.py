"""ConvFeatureTransformer: the estimator contract, real features, caching, persistence."""

from __future__ import annotations

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
from skconv.images import load_image

# Small random-weight backbone: the contract does not need ImageNet weights.
SMALL = dict(backbone="resnet18", weights=None, image_size=16, batch_size=64)

# scikit-learn's common checks feed numeric (n, d) matrices; here X is images (paths,
# PIL images, or (n, h, w[, c]) arrays), and a 2-D numeric matrix is refused on purpose
# because silently reading it as pixels would hide user mistakes. Each check below fails
# only at that refusal; the same contract is tested on image data in this file.
_FEEDS_MATRIX = "feeds a numeric (n, d) matrix, which is not an image batch"
EXPECTED_FAILED = {
    name: _FEEDS_MATRIX
    for name in [
        "check_fit_score_takes_y",
        "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit",
        "check_estimators_dtypes",
        "check_dtype_object",
        "check_estimators_empty_data_messages",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_dict_unchanged",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
        "check_fit2d_predict1d",
    ]
}


@parametrize_with_checks(
    [ConvFeatureTransformer(**SMALL)], expected_failed_checks=lambda est: EXPECTED_FAILED
)
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (6, 40, 48), dtype=np.uint8)


def test_contract_on_images(images):
    """What the matrix-fed common checks would have checked, on image data."""
    t = ConvFeatureTransformer(**SMALL)
    assert t.fit(images) is t
    params = t.get_params()
    out = t.transform(images)
    assert out.dtype == np.float32 and out.shape == (6, t.n_features_out_) == (6, 512)
    assert t.get_params() == params  # fit does not touch parameters
    # sample order and subset invariance
    np.testing.assert_allclose(t.transform(images[::-1]), out[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.transform(images[2:4]), out[2:4], rtol=1e-5, atol=1e-6)
    # idempotent fit, pickle round trip, read-only input
    again = clone(t).fit(images).transform(images)
    np.testing.assert_array_equal(again, out)
    restored = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(restored.transform(images), out)
    frozen = images.copy()
    frozen.setflags(write=False)
    np.testing.assert_array_equal(t.transform(frozen), out)


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
    plain = ConvFeatureTransformer(**SMALL).fit(images)
    tta = ConvFeatureTransformer(**SMALL, tta=True).fit(images)
    mirrored = images[:, :, ::-1]
    expected = 0.5 * (plain.transform(images) + plain.transform(mirrored))
    np.testing.assert_allclose(tta.transform(images), expected, rtol=1e-4, atol=1e-5)


def test_feature_cache_skips_forward_passes(tmp_path, images):
    t = ConvFeatureTransformer(**SMALL, memory=str(tmp_path / "cache")).fit(images)
    first = t.transform(images)
    assert t.n_forward_passes_ == 1
    second = t.transform(images)
    assert t.n_forward_passes_ == 1  # all six images came from the cache
    np.testing.assert_array_equal(first, second)
    changed = images.copy()
    changed[0, 0, 0] ^= 255
    t.transform(changed)
    assert t.n_forward_passes_ == 2  # new content, new key
    other = ConvFeatureTransformer(**{**SMALL, "pooling": "max"}, memory=str(tmp_path / "cache"))
    other.fit(images).transform(images)
    assert other.n_forward_passes_ == 1  # a different configuration never reuses rows
    full = ConvFeatureTransformer(**SMALL, jpeg_draft=False, memory=str(tmp_path / "cache"))
    full.fit(images).transform(images)
    assert full.n_forward_passes_ == 1  # nor does decoding JPEGs at full size


def test_models_saved_before_jpeg_draft_keep_full_size_decoding(images):
    t = ConvFeatureTransformer(**SMALL).fit(images)
    state = t.__getstate__()
    del state["jpeg_draft"]  # as pickled by a version without the parameter
    old = ConvFeatureTransformer.__new__(ConvFeatureTransformer)
    old.__setstate__(state)
    assert old.get_params()["jpeg_draft"] is False
    np.testing.assert_allclose(old.transform(images), t.transform(images), rtol=1e-5, atol=1e-6)


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


@pytest.mark.slow
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
    np.testing.assert_array_equal(
        np.load(tmp_path / "proba.npy"), clf.predict_proba(paths[~train])
    )


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])
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


@pytest.mark.slow
def test_compiled_fast_path_matches_default(images):
    default = ConvFeatureTransformer(**SMALL).fit(images)
    fast = ConvFeatureTransformer(**SMALL, compile=True).fit(images)
    # 6 images in batches of 4: the short last batch is padded to the compiled shape.
    fast.set_params(batch_size=4)
    np.testing.assert_allclose(
        fast.transform(images), default.transform(images), atol=1e-4, rtol=1e-4
    )
    restored = pickle.loads(pickle.dumps(fast))  # compiled code is not pickled
    assert not hasattr(restored, "_compiled") or restored._compiled is None


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


def test_cpu_forward_runs_in_small_chunks_with_the_same_features(images, monkeypatch):
    t = ConvFeatureTransformer(**{**SMALL, "batch_size": 32}).fit(images)
    assert t._chunk_size() == min(32, max(8, 4 * torch.get_num_threads()))
    sizes = []
    net = t._inference_module()

    def counting(x, stages):
        sizes.append(len(x))
        return net(x, stages)

    monkeypatch.setattr(t, "_inference_net", counting)
    chunked = t.transform(np.concatenate([images] * 3))  # 18 images, one decoding step
    assert max(sizes) == t._chunk_size() and sum(sizes) == 18
    whole = t.set_params(batch_size=2).transform(np.concatenate([images] * 3))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_background_decoding_for_accelerators_yields_every_batch_in_order(images):
    # The path a GPU takes (decoding the next batch while the current one computes),
    # run here on the CPU.
    from skconv.features import _Batches, _prefetched
    from skconv.images import Preprocessing

    batches = _Batches(images, Preprocessing(image_size=16), batch_size=4)
    got = list(_prefetched(batches))
    assert [len(b) for b in got] == [4, 2]
    for i, batch in enumerate(got):
        assert torch.equal(batch, batches[i])
