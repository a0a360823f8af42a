"""``skconv.experiment.fit_folder``: split, fit, evaluate and save, as a library call."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix

import skconv.experiment
from skconv.datasets import make_ultrasound_folder, split_folders
from skconv.experiment import fit_folder

# Packaged, offline and the fastest on a CPU, at 32 px: the experiment is under test.
FAST = dict(backbone="squeezenet1_1_caffe", image_size=32)
FILES = ["confusion_matrix.png", "metrics.json", "model.joblib", "report.md"]


def _tree(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """6 synthetic 48-px images per class, one folder per class."""
    return make_ultrasound_folder(
        tmp_path_factory.mktemp("data") / "us", n_per_class=6, image_size=48, random_state=0
    )


@pytest.fixture(scope="module")
def quiet_fit(images, tmp_path_factory):
    """One fit_folder with verbose=0, its output captured."""
    before = _tree(images)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = fit_folder(images, tmp_path_factory.mktemp("fit") / "run", verbose=0, **FAST)
    assert _tree(images) == before  # data is only read
    return result, out.getvalue() + err.getvalue()


def test_fit_folder_splits_fits_evaluates_and_saves(quiet_fit, images):
    result, printed = quiet_fit
    assert printed == ""
    assert result.files == FILES == sorted(p.name for p in result.out.iterdir())
    assert not [p for p in result.out.parent.iterdir() if p.name.startswith(".")]

    # the parts: disjoint, every image once, each labelled by its folder
    everything = sorted(str(p) for p in images.rglob("*.png"))
    assert sorted(np.concatenate([result.paths[p] for p in ("train", "val", "test")])) == (
        everything
    )
    for part in ("train", "val", "test"):
        assert [Path(p).parent.name for p in result.paths[part]] == result.target[part].tolist()
    assert [len(result.paths[p]) for p in ("train", "val", "test")] == [12, 3, 3]

    metrics = result.metrics
    assert json.loads((result.out / "metrics.json").read_text()) == metrics
    assert metrics["command"] is None
    assert metrics["split"] == {
        "method": "split here: stratified by class, val 0.15, test 0.15, seed 0",
        "seed": 0,
        "counts": {
            c: {"total": 6, "train": 4, "val": 1, "test": 1}
            for c in ("benign", "malignant", "normal")
        },
    }
    assert metrics["model"]["mode"] == "features" and metrics["model"]["image_size"] == 32
    assert metrics["model"]["backbone"]["name"] == "squeezenet1_1_caffe"
    # the model returned is the one evaluated and saved
    y_pred = result.model.predict(result.paths["test"])
    labels = result.model.classes_
    assert (
        confusion_matrix(result.target["test"], y_pred, labels=labels).tolist()
        == (metrics["test"]["confusion_matrix"])
    )
    assert joblib.load(result.out / "model.joblib").predict(result.paths["test"]).tolist() == (
        y_pred.tolist()
    )
    report = (result.out / "report.md").read_text()
    assert "Class: normal\nTotal files: 6\nTraining files: 4" in report
    assert "command" not in report  # none given


def test_fit_folder_uses_a_split_folder_as_given(images, tmp_path):
    split = split_folders(images, tmp_path / "split", random_state=1, verbose=False)
    result = fit_folder(split, tmp_path / "run", verbose=0, command="make run", **FAST)
    with open(split / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    for part in ("train", "val", "test"):
        assert sorted(Path(p).relative_to(split).as_posix() for p in result.paths[part]) == sorted(
            r["destination"] for r in manifest if r["part"] == part
        )
    assert result.metrics["split"]["method"] == f"as given in {split}/train, val and test"
    assert result.metrics["command"] == "make run"
    assert "- command: `make run`" in (result.out / "report.md").read_text()


def test_fit_folder_finetune(images, tmp_path):
    result = fit_folder(images, tmp_path / "ft", mode="finetune", epochs=1, verbose=0, **FAST)
    assert result.files == sorted(FILES + ["learning_curves.png"])
    assert result.metrics["model"]["mode"] == "finetune"
    assert result.metrics["model"]["epochs_run"] == 1
    with Image.open(result.out / "learning_curves.png") as image:
        assert image.format == "PNG"


def test_fit_folder_verbose_prints_the_split_the_progress_and_the_metrics(
    images, tmp_path, capsys
):
    result = fit_folder(images, tmp_path / "run", group_duplicates=True, random_state=2, **FAST)
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith("Near-duplicates: ")
    assert f"Data: {images} (split here: stratified by class, val 0.15, test 0.15, seed 2" in out
    assert "Class: benign\nTotal files: 6\n" in out
    assert "Fitting features model on 12 images, backbone squeezenet1_1_caffe:" in out
    assert "Validation (3 images)" in out and "Test (3 images)" in out
    assert "img/s" in captured.err  # the feature extractor's progress bar
    assert result.metrics["split"]["method"].endswith(", near-duplicate groups kept in one part")


@pytest.mark.parametrize(
    "out, kwargs, error, match",
    [
        ("new", dict(mode="svm"), ValueError, "mode must be 'features' or 'finetune', got 'svm'"),
        ("new", dict(epochs=2), ValueError, "epochs applies to mode='finetune' only"),
        ("new", dict(backbone="resnet5O"), ValueError, "Unknown backbone 'resnet5O'"),
        ("full", {}, FileExistsError, "out '.*full' exists and is not empty"),
        ("inside", {}, ValueError, "out '.*run' lies inside data '.*us'"),
    ],
)
def test_fit_folder_checks_its_parameters_before_any_work(
    images, tmp_path, monkeypatch, out, kwargs, error, match
):
    def no_work(*args, **kwargs):
        raise AssertionError("data read before the parameters were checked")

    monkeypatch.setattr(skconv.experiment, "load_image_folder", no_work)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    out = images / "run" if out == "inside" else tmp_path / out
    with pytest.raises(error, match=match):
        fit_folder(images, out, verbose=0, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert not (images / "run").exists()


def test_fit_folder_data_errors(images, tmp_path):
    (tmp_path / "partial" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="data '.*partial' has train but no val, test folder"):
        fit_folder(tmp_path / "partial", tmp_path / "o", verbose=0)
    split = split_folders(images, tmp_path / "split", random_state=0, verbose=False)
    (split / "test" / "cyst").mkdir()
    Image.new("L", (32, 32)).save(split / "test" / "cyst" / "c.png")
    with pytest.raises(ValueError, match=r"has classes \['cyst'\] that .*train' lacks"):
        fit_folder(split, tmp_path / "o", verbose=0)
    with pytest.raises(ValueError, match="does not exist"):
        fit_folder(tmp_path / "nothing", tmp_path / "o", verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial", "split"]


def test_fit_folder_interrupted_while_saving_leaves_nothing(images, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skconv.experiment, "plot_confusion_matrix", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_folder(images, tmp_path / "deep" / "run", verbose=0, **FAST)
    assert list(tmp_path.iterdir()) == []  # no staging folder, no parent made for it
