"""Tests of skconv.report (metrics, Markdown, figures) and skconv._io (atomic writes)."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from skconv.report import (
    bootstrap_intervals,
    classification_metrics,
    evaluate,
    format_metrics,
    markdown_report,
    plot_confusion_matrix,
    plot_learning_curves,
    predict_with_proba,
    text_table,
)


@pytest.fixture
def three_class():
    rng = np.random.default_rng(0)
    labels = np.array(["benign", "malignant", "normal"])
    y_true = labels[rng.integers(0, 3, 60)]
    proba = rng.dirichlet([1, 1, 1], size=60)
    proba[np.arange(60), np.searchsorted(labels, y_true)] += 0.5  # informative
    proba /= proba.sum(axis=1, keepdims=True)
    return y_true, labels[proba.argmax(axis=1)], proba, labels


# -- classification_metrics --------------------------------------------------------------


def test_metrics_match_scikit_learn(three_class):
    y_true, y_pred, proba, labels = three_class
    m = classification_metrics(y_true, y_pred, proba, labels=labels)
    assert m["n_samples"] == 60
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert m["roc_auc_ovr_macro"] == pytest.approx(
        skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
    )
    recall = skm.recall_score(y_true, y_pred, average=None, labels=labels)
    assert [m["per_class"][c]["recall"] for c in labels] == pytest.approx(recall)
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert m["labels"] == list(labels)
    json.dumps(m)  # plain Python types only


def test_metrics_match_scikit_learn_with_tied_scores_and_classes_outside_labels(three_class):
    y_true, y_pred, proba, labels = three_class
    tied = np.round(proba, 1)  # many ties: the AUC counts each tie as half
    m = classification_metrics(y_true, y_pred, tied, labels=labels)
    for k, c in enumerate(labels):
        expected = skm.roc_auc_score(y_true == c, tied[:, k])
        assert m["per_class"][c]["roc_auc"] == pytest.approx(expected, abs=1e-12)
    # A predicted class outside labels: wrong, counted in the accuracy, in no column.
    y_pred = y_pred.copy()
    y_pred[:5] = "cyst"
    m = classification_metrics(y_true, y_pred, labels=labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    assert [m["per_class"][c]["precision"] for c in labels] == pytest.approx(precision)
    assert [m["per_class"][c]["recall"] for c in labels] == pytest.approx(recall)
    assert m["f1_macro"] == pytest.approx(f1.mean())
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_metrics_follow_the_given_label_order(three_class):
    y_true, y_pred, proba, labels = three_class
    order = [2, 0, 1]
    m = classification_metrics(y_true, y_pred, proba[:, order], labels=labels[order])
    ref = classification_metrics(y_true, y_pred, proba, labels=labels)
    assert m["labels"] == ["normal", "benign", "malignant"]
    assert m["roc_auc_ovr_macro"] == pytest.approx(ref["roc_auc_ovr_macro"])
    assert m["confusion_matrix"][0][0] == ref["confusion_matrix"][2][2]


def test_metrics_without_proba_and_with_a_missing_class():
    m = classification_metrics(["a", "a", "b"], ["a", "c", "b"], labels=["a", "b", "c"])
    assert m["roc_auc_ovr_macro"] is None
    assert m["per_class"]["c"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
        "roc_auc": None,
    }
    # balanced accuracy averages recall over the classes present in y_true
    assert m["balanced_accuracy"] == pytest.approx(0.75)

    proba = [[0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]]
    m = classification_metrics(["a", "a", "b"], ["a", "c", "b"], proba, labels=["a", "b", "c"])
    assert m["per_class"]["c"]["roc_auc"] is None  # no positive: undefined, left out
    assert m["roc_auc_ovr_macro"] == pytest.approx(1.0)


def test_metrics_errors_name_the_problem():
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        classification_metrics(["a", "b"], ["a", "b", "b"])
    with pytest.raises(ValueError, match=r"y_proba must have shape .*\(2, 2\).*got \(2, 3\)"):
        classification_metrics(["a", "b"], ["a", "b"], np.ones((2, 3)) / 3)


# -- predict_with_proba / evaluate -------------------------------------------------------


class _CountingScaler(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.calls_ = 0
        return self

    def transform(self, X):
        self.calls_ += 1
        return np.asarray(X, dtype=float) * 2


def test_predict_with_proba_transforms_once_and_matches_predict():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = np.where(X[:, 0] > 0, "pos", "neg")
    pipe = Pipeline([("scale", _CountingScaler()), ("head", LogisticRegression())]).fit(X, y)
    calls = pipe.named_steps["scale"].calls_
    y_pred, proba = predict_with_proba(pipe, X)
    assert pipe.named_steps["scale"].calls_ == calls + 1
    np.testing.assert_array_equal(y_pred, pipe.predict(X))
    np.testing.assert_allclose(proba, pipe.predict_proba(X))

    m = evaluate(pipe, X, y)
    assert m["labels"] == ["neg", "pos"] and m["accuracy"] > 0.9


def test_predict_with_proba_runs_a_fine_tuned_network_once():
    from skconv import FineTuneClassifier
    from skconv.datasets import make_ultrasound

    X, y = make_ultrasound(n_per_class=4, image_size=32, random_state=0)
    clf = FineTuneClassifier(
        backbone="resnet18",
        weights=None,
        image_size=32,
        max_epochs=1,
        train_split=None,
        random_state=0,
    ).fit(X, y)
    seen = []
    hook = clf.module_.register_forward_hook(lambda _m, inputs, _out: seen.append(len(inputs[0])))
    try:
        y_pred, proba = predict_with_proba(clf, X)
    finally:
        hook.remove()
    assert sum(seen) == 2 * len(X)  # each image and its mirror (tta), once
    np.testing.assert_array_equal(y_pred, clf.predict(X))
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-6)


def test_predict_with_proba_without_predict_proba():
    from sklearn.svm import LinearSVC

    X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    y_pred, proba = predict_with_proba(LinearSVC().fit(X, y), X)
    assert proba is None and y_pred.tolist() == [0, 0, 1, 1]


# -- text and Markdown -------------------------------------------------------------------


def test_format_metrics(three_class):
    y_true, y_pred, proba, labels = three_class
    m = classification_metrics(y_true, y_pred, proba, labels=labels)
    text = format_metrics(m, title="Test")
    assert text.splitlines()[0] == "Test (60 images)"
    assert f"accuracy                     {m['accuracy']:.3f}" in text
    assert "macro ROC AUC (one-vs-rest)" in text
    assert all(cls in text for cls in labels)


def test_text_table_aligns_columns():
    lines = text_table(["a", "bb"], [["xxx", 1], ["y", 22]])
    assert lines == ["a    bb", "xxx  1", "y    22"]


def test_markdown_report(three_class):
    y_true, y_pred, proba, labels = three_class
    m = classification_metrics(y_true, y_pred, proba, labels=labels)
    table = "Class: benign\nTotal files: 3\n"
    md = markdown_report(
        {"Validation": m, "Test": m},
        title="Run",
        details={"seed": 0},
        split_table=table,
        figures={"Confusion matrix": "cm.png"},
    )
    assert md.startswith("# Run\n\n- seed: 0\n")
    assert "## Split\n\n```\nClass: benign\nTotal files: 3\n```" in md
    assert md.count("## Validation (60 images)") == 1 and "## Test (60 images)" in md
    assert f"| balanced accuracy | {m['balanced_accuracy']:.3f} |" in md
    assert "| true \\ predicted | benign | malignant | normal |" in md
    row = m["confusion_matrix"][0]
    assert f"| benign | {row[0]} | {row[1]} | {row[2]} |" in md
    assert md.endswith("![Confusion matrix](cm.png)\n")


def test_markdown_escapes_pipes_in_class_names():
    m = classification_metrics(["a|b", "c"], ["a|b", "c"])
    md = markdown_report({"Test": m})
    assert "| a\\|b | 1 | 0 |" in md


# -- plot_confusion_matrix ---------------------------------------------------------------


def test_plot_confusion_matrix_writes_a_png_and_leaves_no_open_figure(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = tmp_path / "cm.png"
    fig = plot_confusion_matrix(
        [[3, 1, 0], [0, 4, 0], [1, 0, 5]], ["benign", "malignant", "normal"], path, title="Test"
    )
    assert plt.get_fignums() == before
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(path) as image:
        assert min(image.size) > 200
    assert fig.axes[0].get_title() == "Test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]

    with pytest.raises(FileExistsError, match="cm.png"):
        plot_confusion_matrix([[1]], ["a"], path)
    plot_confusion_matrix([[1]], ["a"], path, overwrite=True)


def test_plot_confusion_matrix_checks_the_shape():
    with pytest.raises(ValueError, match=r"one row per label \(3\), got shape \(2, 2\)"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"])


# -- plot_learning_curves ----------------------------------------------------------------


def history_of(rows):
    from skorch.history import History

    history = History()
    for epoch, row in enumerate(rows, start=1):
        history.new_epoch()
        history.record("epoch", epoch)
        for key, value in row.items():
            history.record(key, value)
    return history


@pytest.mark.parametrize(
    "rows",
    [
        [{"train_loss": 1.0, "valid_loss": 1.1, "valid_acc": 0.4}] * 2
        + [{"train_loss": 0.5, "valid_loss": 0.9, "valid_acc": 0.7}],
        [{"train_loss": 1.0}, {"train_loss": 0.6}],  # train_split=None: no validation
    ],
    ids=["with_validation", "train_only"],
)
def test_plot_learning_curves_writes_a_png_from_the_history(tmp_path, rows):
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = plot_learning_curves(SimpleNamespace(history=history_of(rows)), tmp_path / "c.png")
    assert path == str(tmp_path / "c.png") and plt.get_fignums() == before
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


# -- bootstrap_intervals -----------------------------------------------------------------


def _noisy(n, seed=0, right=0.8):
    """``n`` samples of three classes, about ``right`` of them predicted right."""
    rng = np.random.default_rng(seed)
    labels = np.array(["benign", "malignant", "normal"])
    y_true = labels[rng.integers(0, 3, n)]
    y_pred = np.where(rng.random(n) < right, y_true, labels[rng.integers(0, 3, n)])
    proba = rng.dirichlet([1, 1, 1], size=n)
    proba[np.arange(n), np.searchsorted(labels, y_pred)] += 1.0
    return y_true, y_pred, proba / proba.sum(axis=1, keepdims=True), labels


def _width(interval):
    return interval[1] - interval[0]


def test_bootstrap_intervals_contain_the_point_estimates():
    y_true, y_pred, proba, labels = _noisy(200)
    point = classification_metrics(y_true, y_pred, proba, labels=labels)
    ci = bootstrap_intervals(y_true, y_pred, proba, labels, n_resamples=500, random_state=0)
    assert ci["confidence"] == 0.95 and ci["n_resamples"] == 500
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr_macro"):
        low, high = ci[key]
        assert low < point[key] < high, key
    for cls in labels:
        for key in ("precision", "recall", "f1", "roc_auc"):
            low, high = ci["per_class"][cls][key]
            assert low <= point["per_class"][cls][key] <= high, (cls, key)
            assert 0.0 <= low < high <= 1.0


def test_bootstrap_intervals_match_the_metrics_definition():
    # Every sample right: every resample scores 1, so the interval is the point itself.
    y = np.array(["a", "b", "c"] * 10)
    proba = np.eye(3)[np.tile([0, 1, 2], 10)]
    ci = bootstrap_intervals(y, y, proba, ["a", "b", "c"], n_resamples=50)
    assert ci["accuracy"] == [1.0, 1.0] and ci["roc_auc_ovr_macro"] == [1.0, 1.0]
    assert ci["per_class"]["b"]["recall"] == [1.0, 1.0]


def test_bootstrap_intervals_narrow_with_more_data():
    small = bootstrap_intervals(*_noisy(40)[:3], n_resamples=400)
    large = bootstrap_intervals(*_noisy(1000)[:3], n_resamples=400)
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr_macro"):
        assert _width(large[key]) < _width(small[key]) / 2, key


def test_bootstrap_intervals_are_deterministic_with_a_seed():
    y_true, y_pred, proba, labels = _noisy(60)
    first = bootstrap_intervals(y_true, y_pred, proba, labels, n_resamples=200, random_state=3)
    again = bootstrap_intervals(y_true, y_pred, proba, labels, n_resamples=200, random_state=3)
    other = bootstrap_intervals(y_true, y_pred, proba, labels, n_resamples=200, random_state=4)
    assert first == again
    assert first != other


def test_bootstrap_intervals_without_proba_and_with_a_rare_class():
    y_true = np.array(["a"] * 30 + ["b"] * 29 + ["c"])  # "c" missing from most resamples
    y_pred = y_true.copy()
    y_pred[:5] = "b"
    ci = bootstrap_intervals(y_true, y_pred, n_resamples=200, random_state=0)
    assert ci["roc_auc_ovr_macro"] is None and ci["per_class"]["a"]["roc_auc"] is None
    assert ci["per_class"]["c"]["recall"] == [1.0, 1.0]  # from the resamples that hold it
    low, high = ci["accuracy"]
    assert low < 55 / 60 < high


def test_bootstrap_intervals_errors():
    with pytest.raises(ValueError, match="same, non-zero length"):
        bootstrap_intervals(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="y_true holds 'z', which is not one of the labels"):
        bootstrap_intervals(["a", "z"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(ValueError, match=r"y_proba must have shape \(n_samples, n_classes\)"):
        bootstrap_intervals(["a", "b"], ["a", "b"], [[1.0], [0.0]], ["a", "b"])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_intervals(["a", "b"], ["a", "b"], n_resamples=0)


def test_markdown_report_shows_intervals_and_duplicates(three_class):
    from skconv.model_selection import duplicate_summary

    y_true, y_pred, proba, labels = three_class
    m = classification_metrics(y_true, y_pred, proba, labels=labels)
    m["intervals"] = bootstrap_intervals(y_true, y_pred, proba, labels, n_resamples=100)
    dups = duplicate_summary(
        ["b/1.png", "m/1.png", "b/2.png", "b/3.png", "n/1.png"],
        ["benign", "malignant", "benign", "benign", "normal"],
        [0, 0, 1, 1, 2],
    )
    md = markdown_report({"Test": m}, duplicates=dups)
    low, high = m["intervals"]["accuracy"]
    assert f"| accuracy | {m['accuracy']:.3f} | {low:.3f} to {high:.3f} |" in md
    assert "| metric | value | 95 % interval |" in md
    p = m["intervals"]["per_class"]["normal"]["recall"]
    assert f"{m['per_class']['normal']['recall']:.3f} [{p[0]:.3f} to {p[1]:.3f}]" in md
    assert "2 groups of two or more near-duplicate images (4 images) found" in md
    assert "**Warning:** 1 group holds more than one label" in md
    assert "- b/1.png (benign), m/1.png (malignant)" in md
    not_searched = markdown_report({"Test": m}, duplicates=duplicate_summary([], [], None))
    assert "Near-duplicates were not searched for" in not_searched
