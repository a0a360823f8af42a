"""``skconv.experiment.compare_ways``: the three ways side by side; fit_folder(compare=True)."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json

import joblib
import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

import skconv.experiment._compare
from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv.datasets import make_ultrasound, make_ultrasound_folder
from skconv.experiment import compare_ways, fit_folder
from skconv.experiment._compare import _folds
from skconv.model_selection import train_val_test_split
from skconv.report import classification_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Packaged, offline and the fastest on a CPU, at 32 px: the comparison is under test.
BACKBONE = "squeezenet1_1_caffe"
FAST = dict(
    backbones=[BACKBONE],
    # The feature contender is under test: no second probe inside the fine-tuned one.
    finetune_params={"backbone": BACKBONE, "max_epochs": 1, "blend_probe": False},
    image_size=32,
    cv=2,
)


@pytest.fixture(scope="module")
def split():
    """8 synthetic 48-px images per class split 70:15:15, with made-up pair groups."""
    X, y = make_ultrasound(n_per_class=8, image_size=48, random_state=0)
    groups = np.arange(len(y)) // 2  # images 2k and 2k + 1 form a group (same class)
    parts = train_val_test_split(X, y, groups, stratify=y, groups=groups, random_state=0)
    names = ("X", "y", "groups")
    return {
        f"{n}_{p}": parts[3 * k + j]
        for k, n in enumerate(names)
        for j, p in enumerate(("train", "val", "test"))
    }


@pytest.fixture(scope="module")
def compared(split):
    """One compare_ways with groups, verbose=0, counting the feature extractions."""
    calls = []
    transform = ConvFeatureTransformer.transform

    def counted(self, X):
        calls.append(len(X))
        return transform(self, X)

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(ConvFeatureTransformer, "transform", counted)
        with contextlib.redirect_stderr(err):
            result = compare_ways(
                split["X_train"],
                split["y_train"],
                split["X_val"],
                split["y_val"],
                split["X_test"],
                split["y_test"],
                groups_train=split["groups_train"],
                groups_val=split["groups_val"],
                **FAST,
            )
    return result, calls, out.getvalue() + err.getvalue()


def test_compare_ways_ranks_the_three_ways(compared, split):
    result, calls, printed = compared
    assert printed == ""
    rows = result.leaderboard
    assert sorted(r["way"] for r in rows) == ["ensemble", "features", "finetune"]
    assert (
        sorted(r["model"] for r in rows)
        == sorted(result.models)
        == [
            "ensemble",
            f"features {BACKBONE}",
            f"finetune {BACKBONE}",
        ]
    )
    scores = [r["val_score"] for r in rows]
    assert scores == sorted(scores, reverse=True)  # by validation score, not test score
    assert result.best == rows[0]["model"]
    assert "validation part" in result.selection and "not the test score" in result.selection
    for row in rows:
        assert list(row) == [
            "model", "way", "backbone", "chosen", "val_score", "cv_score", "accuracy",
            "balanced_accuracy", "roc_auc_ovr_macro", "recall_benign", "recall_malignant",
            "recall_normal", "fit_s", "predict_images_per_s", "model_bytes",
        ]  # fmt: skip
        assert row["fit_s"] > 0 and row["predict_images_per_s"] > 0
        buffer = io.BytesIO()
        joblib.dump(result.models[row["model"]], buffer)
        assert row["model_bytes"] == buffer.tell()
    features = next(r for r in rows if r["way"] == "features")
    assert features["chosen"] in {"C=0.001", "C=0.01", "C=0.1", "C=1", "C=10"}
    # The cross-validated score is the grid search's, recomputed here on the same folds.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X_fit = np.concatenate([split["X_train"], split["X_val"]])
    y_fit = np.concatenate([split["y_train"], split["y_val"]])
    groups_fit = np.concatenate([split["groups_train"], split["groups_val"]])
    F_fit = result.models[features["model"]].named_steps["features"].transform(X_fit)
    search = GridSearchCV(
        LogisticRegression(max_iter=2000),
        {"C": [0.001, 0.01, 0.1, 1.0, 10.0]},
        scoring="balanced_accuracy",
        cv=_folds(y_fit, groups_fit, FAST["cv"], 0),
    ).fit(F_fit, y_fit, groups=groups_fit)
    assert features["cv_score"] == pytest.approx(search.best_score_)
    assert features["chosen"] == f"C={search.best_params_['C']:g}"
    assert next(r for r in rows if r["way"] == "finetune")["chosen"] == (
        "epoch 1 of 1, refitted on all images for 1"
    )


def test_compare_ways_scores_the_models_it_returns(compared, split):
    result, _, _ = compared
    X_test, y_test = split["X_test"], split["y_test"]
    probas = {}
    for row in result.leaderboard:
        model = result.models[row["model"]]
        probas[row["way"]] = model.predict_proba(X_test)
        expected = classification_metrics(
            y_test, model.predict(X_test), probas[row["way"]], labels=model.classes_
        )
        got = result.metrics[row["model"]]["test"]
        assert got["confusion_matrix"] == expected["confusion_matrix"]
        for key in ("accuracy", "balanced_accuracy", "roc_auc_ovr_macro"):
            assert got[key] == pytest.approx(expected[key])
        assert row["accuracy"] == expected["accuracy"]
        assert row["recall_normal"] == expected["per_class"]["normal"]["recall"]
    # the ensemble is the mean of its members' probabilities
    np.testing.assert_allclose(
        probas["ensemble"], (probas["features"] + probas["finetune"]) / 2, atol=1e-6
    )


def test_compare_ways_extracts_features_once_per_part(compared, split):
    _, calls, _ = compared
    # train and validation together once (the head's search reuses them), the test
    # part once: never once per fold
    assert calls == [len(split["y_train"]) + len(split["y_val"]), len(split["y_test"])]


def test_folds_keep_groups_and_fit_the_data():
    y = np.array(["a"] * 6 + ["b"] * 3)
    assert isinstance(_folds(y, None, 5, 0), StratifiedKFold)
    assert _folds(y, None, 5, 0).get_n_splits() == 3  # the smallest class has 3
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    folds = _folds(y, groups, 5, 0)
    assert isinstance(folds, StratifiedGroupKFold) and folds.get_n_splits() == 3
    for train, test in folds.split(np.zeros(len(y)), y, groups):
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match="needs two folds"):
        _folds(np.array(["a", "a", "b"]), None, 5, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groups_train=[0] * 12), "give both or neither"),
        (dict(backbones=["resnet5O"]), "Unknown backbone 'resnet5O'"),
        (dict(backbones=[], finetune_params={"backbone": None}), "Nothing to compare"),
        (dict(scoring="f1"), "The 'scoring' parameter"),
        (dict(cv=1), "The 'cv' parameter"),
    ],
)
def test_compare_ways_checks_its_parameters_before_any_work(split, monkeypatch, kwargs, match):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the parameters were checked")

    monkeypatch.setattr(ConvFeatureTransformer, "fit", no_work)
    monkeypatch.setattr(FineTuneClassifier, "fit", no_work)
    parts = [split[f"{n}_{p}"] for p in ("train", "val", "test") for n in ("X", "y")]
    with pytest.raises(ValueError, match=match):
        compare_ways(*parts, **{**FAST, **kwargs})


def test_compare_ways_refuses_classes_train_lacks(split):
    y_test = split["y_test"].copy()
    y_test[0] = "cyst"
    with pytest.raises(ValueError, match=r"classes that y_train lacks: \['cyst'\]"):
        compare_ways(
            split["X_train"], split["y_train"], split["X_val"], split["y_val"],
            split["X_test"], y_test, **FAST,
        )  # fmt: skip


# --------------------------------------------------------------------------- a folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """6 synthetic 48-px images per class, one folder per class."""
    return make_ultrasound_folder(
        tmp_path_factory.mktemp("data") / "us", n_per_class=6, image_size=48, random_state=0
    )


@pytest.fixture(scope="module")
def folder_run(images, tmp_path_factory):
    """fit_folder(compare=True), grouped by near-duplicates, one offline backbone."""
    received = {}

    def spy(*args, **kwargs):
        received.update(kwargs)
        return compare_ways(*args, **kwargs)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(skconv.experiment._compare, "offline_backbones", lambda: [BACKBONE])
        mp.setattr(skconv.experiment._compare, "compare_ways", spy)
        with contextlib.redirect_stderr(io.StringIO()):
            result = fit_folder(
                images,
                tmp_path_factory.mktemp("fit") / "run",
                compare=True,
                backbone=BACKBONE,
                image_size=32,
                epochs=1,
                group_duplicates=True,
                command="skconv fit us --compare",
            )
    return result, received, out.getvalue()


def test_fit_folder_compare_writes_the_best_model_and_the_leaderboard(folder_run):
    result, received, printed = folder_run
    files = ["confusion_matrix.png", "leaderboard.csv", "metrics.json", "model.joblib"]
    files += ["report.html", "report.md"]
    best = result.leaderboard[0]
    if best["way"] != "features":
        files = sorted(files + ["learning_curves.png"])
    assert result.files == files == sorted(p.name for p in result.out.iterdir())

    # the near-duplicate groups of the split reach the comparison, part by part
    for part in ("train", "val"):
        assert len(received[f"groups_{part}"]) == len(result.paths[part])
    assert received["finetune_params"] == {"backbone": BACKBONE, "max_epochs": 1}

    with open(result.out / "leaderboard.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == [r["model"] for r in result.leaderboard]
    assert [float(r["accuracy"]) for r in table] == [r["accuracy"] for r in result.leaderboard]

    metrics = json.loads((result.out / "metrics.json").read_text())
    assert metrics["compare"]["leaderboard"] == result.leaderboard
    assert metrics["model"]["mode"] == best["way"]
    assert metrics["command"] == "skconv fit us --compare"
    assert metrics["test"]["accuracy"] == best["accuracy"]
    # the validation figures are those that chose the model (out of fold for a head)
    assert metrics["val"]["balanced_accuracy"] == pytest.approx(best["val_score"])
    # the chosen model's record is that of any fit: grouping, intervals
    assert metrics["grouped"] is True
    low, high = metrics["test"]["intervals"]["accuracy"][:2]
    assert low <= best["accuracy"] <= high
    page = (result.out / "report.html").read_text()
    assert "Leaderboard" in page and html.escape(best["model"]) in page
    model = joblib.load(result.out / "model.joblib")
    assert model.predict(result.paths["test"]).tolist() == (
        result.model.predict(result.paths["test"]).tolist()
    )

    report = (result.out / "report.md").read_text()
    assert report.startswith(f"# skconv comparison: {best['model']}\n")
    assert report.index("## Leaderboard") < report.index("## Split")
    assert "chosen by the best balanced accuracy on the validation part" in report
    assert f"| {best['model']} | {best['chosen']} |" in report

    # one line as each contender starts and ends, then the leaderboard
    assert "[1/3] features squeezenet1_1_caffe: " in printed
    assert "[3/3] ensemble: members fitted in " in printed
    assert "Leaderboard (test part; chosen by validation score):" in printed


def test_fit_folder_compare_interrupted_leaves_nothing(images, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skconv.experiment._compare, "offline_backbones", lambda: [BACKBONE])
    monkeypatch.setattr(FineTuneClassifier, "fit", interrupted)  # after the features
    with pytest.raises(KeyboardInterrupt):
        fit_folder(
            images, tmp_path / "deep" / "run", compare=True, image_size=32, epochs=1, verbose=0
        )
    assert list(tmp_path.iterdir()) == []


def test_fit_folder_compare_fits_both_modes(images, tmp_path):
    with pytest.raises(ValueError, match="compare=True fits both modes"):
        fit_folder(images, tmp_path / "run", compare=True, mode="finetune", verbose=0)
    assert list(tmp_path.iterdir()) == []
