"""export_onnx and OnnxClassifier: one ONNX file that predicts as the fitted model does."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skconv import ConvFeatureTransformer, FineTuneClassifier, export_onnx
from skconv.export import OnnxClassifier

TINY = dict(backbone="resnet18", weights=None, image_size=32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (12, 40, 48), dtype=np.uint8)
    return X, np.array(["benign", "malignant", "normal"] * 4)


@pytest.mark.parametrize(
    "steps, scores",
    [
        ([LogisticRegression(max_iter=500)], "probabilities"),
        ([StandardScaler(), PCA(4), LogisticRegression(max_iter=500)], "probabilities"),
        ([StandardScaler(), LinearSVC()], "scores"),
        ([RidgeClassifier()], "scores"),
    ],
    ids=["lr", "scaler-pca-lr", "scaler-linearsvc", "ridge"],
)
def test_exported_pipeline_predicts_as_the_pipeline(data, tmp_path, steps, scores):
    X, y = data
    clf = make_pipeline(ConvFeatureTransformer(**TINY), *steps).fit(X, y)
    path = export_onnx(clf, tmp_path / "model.onnx")
    # three threads, each decoding and running its own chunk of at most 4 of the 12 images
    model = OnnxClassifier(path, n_threads=3, batch_size=4)
    assert model.scores_name_ == scores
    assert model.classes_.tolist() == clf.classes_.tolist()
    sizes = []
    session = model.session

    class Recording:
        def run(self, names, feeds):
            sizes.append(len(feeds["image"]))
            return session.run(names, feeds)

    model.session = Recording()
    np.testing.assert_array_equal(model.predict(X), clf.predict(X))
    assert sorted(sizes) == [4, 4, 4]
    want = clf.predict_proba(X) if scores == "probabilities" else clf.decision_function(X)
    np.testing.assert_allclose(model.decision_function(X), want, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta["skconv_classes"]) == ["benign", "malignant", "normal"]
    prep = json.loads(meta["skconv_preprocessing"])
    assert (prep["image_size"], prep["resize"], prep["interpolation"]) == (32, 36, "bilinear")


def test_exported_fine_tuned_model_predicts_as_the_model(data, tmp_path):
    X, y = data
    y = np.where(y == "malignant", 1, 0)  # integer labels come back as integers
    net = FineTuneClassifier(**TINY, max_epochs=1, train_split=None, tta=True, random_state=0)
    net.fit(X, y)
    model = OnnxClassifier(export_onnx(net, tmp_path / "net.onnx"))
    assert model.predict(X).dtype.kind == "i"
    np.testing.assert_array_equal(model.predict(X), net.predict(X))
    np.testing.assert_allclose(model.predict_proba(X), net.predict_proba(X), atol=1e-4)


class _Handmade(ClassifierMixin, BaseEstimator):
    """A classifier skl2onnx has no converter for."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return self.classes_[np.zeros(len(X), dtype=int)]


def test_what_cannot_be_exported_is_refused_by_name_and_nothing_is_written(data, tmp_path):
    X, y = data
    path = tmp_path / "model.onnx"
    clf = make_pipeline(ConvFeatureTransformer(**TINY), _Handmade()).fit(X, y)
    with pytest.raises(ValueError, match=r"'_handmade' \(_Handmade\)"):
        export_onnx(clf, path)
    features_only = ConvFeatureTransformer(**TINY).fit(X)
    with pytest.raises(ValueError, match="got a ConvFeatureTransformer"):
        export_onnx(features_only, path)
    no_features = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        X.reshape(len(X), -1), y
    )
    with pytest.raises(ValueError, match="StandardScaler, LogisticRegression"):
        export_onnx(no_features, path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_no_file_and_an_existing_one_is_kept(data, tmp_path, monkeypatch):
    import skconv.export._onnx

    X, y = data
    clf = make_pipeline(ConvFeatureTransformer(**TINY), LogisticRegression()).fit(X, y)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(clf, path)

    def differs(*args, **kwargs):
        raise ValueError("The exported graph does not reproduce the estimator")

    monkeypatch.setattr(skconv.export._onnx, "_verify", differs)
    with pytest.raises(ValueError, match="does not reproduce"):
        export_onnx(clf, path, overwrite=True)
    assert path.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_onnx_classifier_refuses_other_onnx_files(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="not one written by skconv.export_onnx"):
        OnnxClassifier(path)
