"""skconv.explain: CAM of the feature pipeline, Grad-CAM of FineTuneClassifier, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv.explain import SMOOTH, TRIM, heatmaps, overlay
from skconv.explain._cam import _check_maps
from skconv.explain._mapping import _inside_crop, _smoothed_and_trimmed, _to_original
from skconv.images import Preprocessing

# Random weights, small inputs: the maths, not ImageNet, is under test.
TINY = dict(backbone="resnet18", weights=None, image_size=32)
H, W = 56, 72  # the blob images: landscape, so the crop cuts the sides


def _blobs(n: int, seed: int):
    """Speckle; every other image has a bright blob in a random corner (class "blob")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    X = np.empty((n, H, W), dtype=np.uint8)
    corners = np.full(n, -1)
    for i in range(n):
        image = rng.normal(90, 25, (H, W))
        if i % 2 == 0:
            corners[i] = rng.integers(4)  # 0 top-left, 1 top-right, 2 bottom-left, 3 ...
            cy = H * (0.27 if corners[i] < 2 else 0.73) + rng.normal(0, 1.5)
            cx = W * (0.3 if corners[i] % 2 == 0 else 0.7) + rng.normal(0, 1.5)
            image += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
        X[i] = image.clip(0, 255)
    return X, np.where(corners >= 0, "blob", "none"), corners


def _quadrant(heat: np.ndarray) -> int:
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    return 2 * int(row >= heat.shape[0] / 2) + int(col >= heat.shape[1] / 2)


@pytest.fixture(scope="module")
def blobs():
    return _blobs(40, 0), _blobs(20, 1)


@pytest.fixture(scope="module")
def pipeline(blobs):
    (X, y, _), _ = blobs
    features = ConvFeatureTransformer("resnet18", weights=None, image_size=64)
    return make_pipeline(features, LogisticRegression(max_iter=1000)).fit(X, y)


@pytest.fixture(scope="module")
def finetuned(blobs):
    (X, y, _), _ = blobs
    # Packaged ImageNet weights: a few epochs teach it the blob.
    clf = FineTuneClassifier(
        "squeezenet1_1_caffe",
        image_size=64,
        train_layers="all",  # Grad-CAM of a network trained throughout
        max_epochs=3,
        train_split=None,
        patience=None,
        augment=None,
        batch_size=8,
        random_state=0,
    )
    return clf.fit(X, y)


@pytest.fixture(scope="module")
def small_images():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (9, 40, 56), dtype=np.uint8)
    return X, np.array(["a", "b", "c"] * 3)


# -- shape, range, determinism ------------------------------------------------------------


@pytest.mark.parametrize("model", ["pipeline", "finetuned"])
def test_maps_have_the_image_shape_lie_in_0_1_and_are_deterministic(model, request, tmp_path):
    estimator = request.getfixturevalue(model)
    rng = np.random.default_rng(2)
    portrait = rng.integers(0, 256, (90, 47), dtype=np.uint8)
    landscape = Image.fromarray(rng.integers(0, 256, (33, 80, 3), dtype=np.uint8))
    path = tmp_path / "square.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    X = [portrait, landscape, str(path)]

    maps = heatmaps(estimator, X)
    assert [m.shape for m in maps] == [(90, 47), (33, 80), (64, 64)]
    for m in maps:
        assert m.dtype == np.float32
        assert m.min() >= 0 and m.max() <= 1
        assert m.max() == 1 or m.max() == 0  # min-max scaled, or a map that points nowhere
    for a, b in zip(maps, heatmaps(estimator, X)):
        np.testing.assert_array_equal(a, b)
    # Batches of another size change the arithmetic's order, not the maps.
    for a, b in zip(maps, heatmaps(estimator, X, batch_size=2)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_outside_the_crop_is_zero_or_the_edge(pipeline):
    X = np.random.default_rng(3).integers(0, 256, (2, 40, 120), dtype=np.uint8)
    raw = dict(normalize=False, smooth=0, trim=0)
    zero = heatmaps(pipeline, X, outside="zero", **raw)
    edge = heatmaps(pipeline, X, outside="edge", **raw)
    # 120 x 40 is resized to 219 x 73 (64 / 0.875) and cropped to 64 x 64 from (78, 4):
    # columns 43 to 77 and rows 3 to 37 of the original.
    assert np.all(zero[0][:, :42] == 0) and np.all(zero[0][:, 79:] == 0)
    assert np.all(zero[0][:2] == 0) and np.all(zero[0][38:] == 0)
    assert np.any(zero[0][3:37, 44:77] != 0)
    np.testing.assert_array_equal(edge[0][:, 0], edge[0][:, 40])
    middle = (slice(3, 37), slice(44, 77))
    np.testing.assert_allclose(zero[0][middle], edge[0][middle], rtol=1e-6)


# -- the models look at the blob ----------------------------------------------------------


# Random-weight features (the pipeline) point at the blob's corner well above chance
# (0.25; 0.40 to 0.60 measured on sets of 10 to 40 blob images); the fine-tuned
# network with ImageNet weights learns to.
@pytest.mark.parametrize("model, least", [("pipeline", 0.4), ("finetuned", 0.7)])
def test_map_maximum_lies_in_the_blob_corner(model, least, request, blobs):
    estimator = request.getfixturevalue(model)
    _, (X, y, corners) = blobs
    assert estimator.score(X, y) >= 0.8
    blob = corners >= 0
    maps = heatmaps(estimator, X[blob], target="blob")
    hits = np.mean([_quadrant(m) == c for m, c in zip(maps, corners[blob])])
    assert hits >= least, hits


@pytest.mark.parametrize("model", ["pipeline", "finetuned"])
def test_shifted_crops_refine_the_map(model, request, blobs):
    estimator = request.getfixturevalue(model)
    _, (X, _, corners) = blobs
    X, corners = X[corners >= 0][:6], corners[corners >= 0][:6]
    plain = heatmaps(estimator, X, target="blob")
    shifted = heatmaps(estimator, X, target="blob", shift=4)
    assert [m.shape for m in shifted] == [m.shape for m in plain]
    assert not np.allclose(plain[0], shifted[0])
    if model == "finetuned":  # random-weight features point at the blob only loosely
        hits = np.mean([_quadrant(m) == c for m, c in zip(shifted, corners)])
        assert hits >= 4 / 6, hits


# -- exactness: the map decomposes the score ----------------------------------------------


def _decision(clf, X) -> np.ndarray:
    scores = clf.decision_function(X)
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores


@pytest.mark.parametrize(
    "features, head, scaler, n_classes",
    [
        (dict(), LogisticRegression(max_iter=500), None, 2),
        (dict(), LogisticRegression(max_iter=500), None, 3),
        (dict(), LinearSVC(), StandardScaler(), 3),
        (dict(tta=True), RidgeClassifier(), StandardScaler(with_mean=False), 2),
        (dict(layers=["layer3", "final"]), LogisticRegression(max_iter=500), None, 3),
    ],
    ids=["logistic-binary", "logistic", "svc+scaler", "ridge+scaler+tta-binary", "two-stages"],
)
def test_cam_mean_plus_intercept_is_the_decision_function(
    small_images, features, head, scaler, n_classes
):
    X, y = small_images
    y = y if n_classes == 3 else np.where(y == "a", "a", "b")
    steps = [ConvFeatureTransformer(**TINY, **features)]
    steps += [clone(scaler)] if scaler is not None else []
    clf = make_pipeline(*steps, clone(head)).fit(X, y)
    intercept = np.atleast_1d(clf[-1].intercept_)
    if n_classes == 2:
        intercept = np.array([-intercept[0], intercept[0]])
    decision = _decision(clf, X)
    for k, label in enumerate(clf.classes_):
        raw = heatmaps(clf, X, target=label, normalize=False, resize=False)
        np.testing.assert_allclose(
            [m.mean() for m in raw], decision[:, k] - intercept[k], atol=1e-4
        )


def test_gradcam_mean_plus_bias_is_the_logit(finetuned, blobs):
    _, (X, _, _) = blobs
    module = finetuned.module_
    modes = [m.training for m in module.modules()]
    flags = [p.requires_grad for p in module.parameters()]
    logits = finetuned.forward(X[:6]).numpy()
    for k, label in enumerate(finetuned.classes_):
        raw = heatmaps(finetuned, X[:6], target=label, normalize=False, resize=False)
        bias = module.head.bias[k].item()
        np.testing.assert_allclose([m.mean() + bias for m in raw], logits[:, k], atol=1e-4)
    # The model is left as it was found.
    assert [m.training for m in module.modules()] == modes
    assert [p.requires_grad for p in module.parameters()] == flags


@pytest.mark.parametrize("pooling", ["max", "gem", "avgmax"])
def test_other_poolings_are_explained_by_gradcam(small_images, pooling):
    X, y = small_images
    clf = make_pipeline(
        ConvFeatureTransformer(**TINY, pooling=pooling), LogisticRegression(max_iter=500)
    ).fit(X, y)
    maps = heatmaps(clf, X[:3])
    assert [m.shape for m in maps] == [(40, 56)] * 3
    assert all(0 <= m.min() and m.max() <= 1 for m in maps)


# -- targets -------------------------------------------------------------------------------


def test_target_defaults_to_the_predicted_class(pipeline, finetuned, blobs):
    _, (X, _, _) = blobs
    for estimator in (pipeline, finetuned):
        predicted = heatmaps(estimator, X[:6])
        given = heatmaps(estimator, X[:6], target=estimator.predict(X[:6]))
        for a, b in zip(predicted, given):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_target_one_label_or_one_per_image(pipeline, blobs):
    _, (X, _, _) = blobs
    one = heatmaps(pipeline, X[:3], target="none")
    each = heatmaps(pipeline, X[:3], target=["none", "none", "none"])
    for a, b in zip(one, each):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(
        ValueError,
        match=r"does not know: 'cat'; its classes are "
        r"\['blob', 'none'\]",
    ):
        heatmaps(pipeline, X[:3], target="cat")
    with pytest.raises(ValueError, match=r"one label per image \(3\)"):
        heatmaps(pipeline, X[:3], target=["blob", "none"])


def test_a_fitted_search_is_explained_through_its_best_estimator(small_images):
    X, y = small_images
    pipe = make_pipeline(ConvFeatureTransformer(**TINY), LogisticRegression(max_iter=500))
    search = GridSearchCV(pipe, {"logisticregression__C": [1.0]}, cv=2).fit(X[:6], y[:6])
    assert heatmaps(search, X[:2])[0].shape == (40, 56)


# -- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(70, 40), (50, 90), (48, 48)])
def test_a_map_over_the_crop_lands_where_the_crop_came_from(size):
    """Feed the crop of a smooth image as the map: mapping back must give the image."""
    prep = Preprocessing(image_size=32, crop_pct=0.8)
    width, height = size
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    ramp = Image.fromarray(xx + 2 * yy)  # mode "F"  # linear: resampling reproduces it
    crop = prep.resize_image(ramp).crop(prep.crop_box(*size))  # what the network is fed
    back, inside = _to_original(np.asarray(crop, dtype=np.float64), size, prep, "zero")
    assert back.shape == (height, width)
    rows, cols = np.nonzero(inside)
    core = (slice(rows.min() + 3, rows.max() - 2), slice(cols.min() + 3, cols.max() - 2))
    np.testing.assert_allclose(back[core], (xx + 2 * yy)[core], atol=0.5)
    assert np.all(back[~inside] == 0)


# -- bad input -----------------------------------------------------------------------------


def test_unsupported_estimators_are_refused(small_images):
    X, y = small_images
    with pytest.raises(
        TypeError,
        match="explains a fitted FineTuneClassifier, or a fitted "
        "Pipeline.*got a LogisticRegression",
    ):
        heatmaps(LogisticRegression(), X)
    with pytest.raises(TypeError, match="not a ConvFeatureTransformer alone"):
        heatmaps(ConvFeatureTransformer(**TINY), X)
    with pytest.raises(
        TypeError, match="linear classifier.*'randomforestclassifier' is a RandomForestClassifier"
    ):
        heatmaps(make_pipeline(ConvFeatureTransformer(**TINY), RandomForestClassifier()), X)
    with pytest.raises(TypeError, match="only a StandardScaler.*step 'pca' is a PCA"):
        heatmaps(make_pipeline(ConvFeatureTransformer(**TINY), PCA(), LogisticRegression()), X)
    with pytest.raises(TypeError, match="steps are StandardScaler, LogisticRegression"):
        heatmaps(make_pipeline(StandardScaler(), LogisticRegression()), X)
    dummy = make_pipeline(ConvFeatureTransformer(**TINY), DummyClassifier()).fit(X, y)
    with pytest.raises(TypeError, match="'dummyclassifier' is a DummyClassifier"):
        heatmaps(dummy, X)


def test_unfitted_estimators_are_refused(small_images):
    X, _ = small_images
    pipe = Pipeline([("features", ConvFeatureTransformer(**TINY)), ("head", LogisticRegression())])
    with pytest.raises(NotFittedError, match="step 'features'.*call fit before heatmaps"):
        heatmaps(pipe, X)
    with pytest.raises(NotFittedError, match="FineTuneClassifier is not fitted yet"):
        heatmaps(FineTuneClassifier(**TINY), X)


def test_token_maps_are_refused_by_name():
    with pytest.raises(
        ValueError,
        match=r"backbone 'timm/vit_tiny' gives shape \(2, 197, 192\) "
        r"\(tokens, not a spatial grid\)",
    ):
        _check_maps([torch.zeros(2, 197, 192)], "timm/vit_tiny")


def test_bad_options_are_refused(pipeline, blobs):
    _, (X, _, _) = blobs
    with pytest.raises(
        ValueError, match=r"'outside' parameter.*\{'(zero|edge)', '(zero|edge)'\}. Got 'mean'"
    ):
        heatmaps(pipeline, X[:1], outside="mean")
    with pytest.raises(ValueError, match=r"'batch_size' parameter.*\[1, inf\). Got 0"):
        heatmaps(pipeline, X[:1], batch_size=0)
    with pytest.raises(ValueError, match="shift .* needs resize=True"):
        heatmaps(pipeline, X[:1], shift=8, resize=False)
    with pytest.raises(ValueError, match=r"'shift' parameter.*\[0, inf\)"):
        heatmaps(pipeline, X[:1], shift=-1)


def test_smooth_and_trim_defaults_scale_with_the_crop(pipeline, blobs):
    _, (X, _, _) = blobs
    crop = pipeline[0].preprocessing_.image_size
    auto = heatmaps(pipeline, X[:3])
    explicit = heatmaps(pipeline, X[:3], smooth=SMOOTH * crop, trim=TRIM * crop)
    for a, b in zip(auto, explicit):
        np.testing.assert_array_equal(a, b)
    before = heatmaps(pipeline, X[:3], smooth=0, trim=0)
    assert not all(np.allclose(a, b) for a, b in zip(auto, before))
    with pytest.raises(ValueError, match="smooth .* needs resize=True"):
        heatmaps(pipeline, X[:1], smooth=4, resize=False)
    with pytest.raises(ValueError, match="trim .* needs resize=True"):
        heatmaps(pipeline, X[:1], trim=4, resize=False)
    with pytest.raises(ValueError, match=r"'smooth' parameter"):
        heatmaps(pipeline, X[:1], smooth=-1)


def test_trim_zeroes_the_crop_border_and_keeps_the_rest(pipeline, blobs):
    _, (X, _, _) = blobs
    prep = pipeline[0].preprocessing_
    plain = heatmaps(pipeline, X[:2], normalize=False, smooth=0, trim=0)
    trimmed = heatmaps(pipeline, X[:2], normalize=False, smooth=0, trim=8)
    for a, b in zip(plain, trimmed):
        kept = _inside_crop((W, H), prep, 8)
        assert kept.any() and not kept.all()
        np.testing.assert_array_equal(b[~kept], 0)
        np.testing.assert_allclose(b[kept], a[kept], rtol=1e-6)


def test_smoothing_is_normalised_over_the_crop():
    prep = Preprocessing(image_size=32, crop_pct=0.875)  # 72 x 56 -> 46 x 36, crop 32
    size = (72, 56)
    inside = _inside_crop(size, prep)
    # A constant map stays constant inside the crop: the zeros outside do not leak in.
    flat = np.where(inside, 2.0, 0.0)
    out = _smoothed_and_trimmed(flat, size, prep, smooth=5, trim=0)
    np.testing.assert_allclose(out[inside], 2.0)
    np.testing.assert_array_equal(out[~inside], 0)
    # A sharp peak spreads out and keeps its place; two peaks' mass wins over one's height.
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    heat = np.zeros(size[::-1])
    heat[rows[5], cols[5]] = 3.0  # a lone sharp spike
    heat[rows[-12] : rows[-12] + 6, cols[-12] : cols[-12] + 6] = 1.0  # a broad warm region
    assert np.unravel_index(np.argmax(heat), heat.shape) == (rows[5], cols[5])
    out = _smoothed_and_trimmed(heat, size, prep, smooth=3, trim=0)
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert rows[-12] <= y < rows[-12] + 6 and cols[-12] <= x < cols[-12] + 6
    # edge: the trimmed crop's border values are extended outwards.
    edge = _smoothed_and_trimmed(heat, size, prep, smooth=0, trim=4, outside="edge")
    kept = _inside_crop(size, prep, 4)
    np.testing.assert_array_equal(edge[kept], heat[kept])
    first = np.flatnonzero(kept.any(axis=0))[0]
    assert first > cols[0]
    np.testing.assert_array_equal(edge[:, 0], edge[:, first])


# -- overlay -------------------------------------------------------------------------------


def test_overlay_blends_the_colormap_into_the_image():
    image = np.full((20, 30), 200, dtype=np.uint8)
    heat = np.zeros((20, 30))
    heat[5, 7] = 1.0
    assert np.array_equal(np.asarray(overlay(image, heat, alpha=0)), np.full((20, 30, 3), 200))
    full = np.asarray(overlay(image, heat, alpha=1, colormap="gray"))
    assert full[5, 7].tolist() == [255, 255, 255] and full[0, 0].tolist() == [0, 0, 0]
    half = overlay(Image.fromarray(image), heat)
    assert half.size == (30, 20) and half.mode == "RGB"


def test_overlay_refuses_a_map_that_does_not_fit():
    image = np.zeros((20, 30), dtype=np.uint8)
    with pytest.raises(
        ValueError,
        match=r"heatmap has shape \(30, 20\) but the image is "
        r"20 x 30",
    ):
        overlay(image, np.zeros((30, 20)))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        overlay(image, np.full((20, 30), 1.5))
    with pytest.raises(ValueError, match="alpha must lie in"):
        overlay(image, np.zeros((20, 30)), alpha=2)
    with pytest.raises(ValueError, match="Unknown colormap 'nope'"):
        overlay(image, np.zeros((20, 30)), colormap="nope")


def test_gradcam_works_under_no_grad_and_leaves_it_on(finetuned, blobs):
    _, (X, _, _) = blobs
    expected = heatmaps(finetuned, X[:2])
    with torch.no_grad():
        maps = heatmaps(finetuned, X[:2])
        assert not torch.is_grad_enabled()
    for a, b in zip(maps, expected):
        np.testing.assert_array_equal(a, b)
