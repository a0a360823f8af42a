"""``skconv.experiment.fit_folder``: split, fit, evaluate and save, as a library call."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from pathlib import Path

import joblib
import numpy as np
import pytest
from browser import needs_browser, render
from PIL import Image
from sklearn.metrics import confusion_matrix

import skconv.experiment._folder
import skconv.experiment._records
from skconv.datasets import make_ultrasound_folder, split_folders
from skconv.experiment import fit_folder

# Packaged, offline and the fastest on a CPU, at 32 px: the experiment is under test.
FAST = dict(backbone="squeezenet1_1_caffe", image_size=32)
FILES = ["confusion_matrix.png", "metrics.json", "model.joblib", "report.html", "report.md"]


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
        "method": "split here: stratified by class, val 0.15, test 0.15, seed 0, "
        "near-duplicate groups kept in one part",
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
    # grouped by default; the synthetic images have no near-duplicates
    assert (metrics["grouped"], metrics["duplicate_groups"]) == (True, 0)
    assert metrics["mixed_label_groups"] == []
    # intervals of the test part's metrics, seeded: they contain the point estimates
    ci = metrics["test"]["intervals"]
    assert ci["n_resamples"] == 1000 and ci["confidence"] == 0.95
    assert ci["accuracy"][0] <= metrics["test"]["accuracy"] <= ci["accuracy"][1]
    assert "intervals" not in metrics["val"]
    report = (result.out / "report.md").read_text()
    assert "Class: normal\nTotal files: 6\nTraining files: 4" in report
    assert "command" not in report  # none given
    assert "| metric | value | 95 % interval |" in report
    assert "## Near-duplicates\n\nNo near-duplicate images found." in report


def test_fit_folder_writes_report_html(quiet_fit):
    result, _ = quiet_fit
    page = (result.out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    for section in ("split", "duplicates", "metrics", "figures", "gallery", "card"):
        assert f'<h2 id="{section}">' in page
    assert '<h2 id="leaderboard">' not in page  # no leaderboard given
    assert "Class: normal\nTotal files: 6\nTraining files: 4" in page
    assert "ROC, precision-recall and reliability, test part" in page
    images = re.findall(r'<img src="(data:image/[a-z]+;base64,[^"]+)"', page)
    # confusion matrix, curves, and activation maps of the test images (3, all right or
    # wrong), each a data: URI; nothing else is referenced
    assert len(images) == 2 + 3
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "Activation maps left out" not in page
    assert "not a medical device" in page and "joblib.load" in page
    assert len(page) < 1_000_000


def _copy_folder(src: Path, dst: Path) -> Path:
    for path in src.rglob("*.png"):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return dst


def test_fit_folder_warns_of_near_duplicates_with_two_labels(images, tmp_path, capsys):
    data = _copy_folder(images, tmp_path / "data")
    # The same scan filed twice: as benign and, re-saved, as malignant.
    copy = data / "malignant" / "malignant_dup.png"
    Image.open(data / "benign" / "benign_001.png").save(copy)
    result = fit_folder(data, tmp_path / "run", **FAST)
    out = capsys.readouterr().out
    assert "Near-duplicates: 2 of 19 images are in 1 groups" in out
    assert (
        "Warning: near-duplicates with different labels: benign/benign_001.png (benign), "
        "malignant/malignant_dup.png (malignant)" in out
    )
    metrics = result.metrics
    assert (metrics["grouped"], metrics["duplicate_groups"]) == (True, 1)
    assert metrics["mixed_label_groups"] == [
        ["benign/benign_001.png", "malignant/malignant_dup.png"]
    ]
    both = [p for p in ("train", "val", "test") if str(copy) in result.paths[p].tolist()]
    original = str(data / "benign" / "benign_001.png")
    assert original in result.paths[both[0]].tolist()  # one part holds both
    report = (result.out / "report.md").read_text()
    assert "1 group of two or more near-duplicate images (2 images) found" in report
    assert "**Warning:** 1 group holds more than one label" in report
    page = (result.out / "report.html").read_text()
    assert "<strong>Warning:</strong> 1 group holds more than one label" in page
    assert page.count('alt="benign/benign_001.png (benign)"') == 1  # its thumbnail


def test_fit_folder_without_grouping_says_so(images, tmp_path):
    result = fit_folder(images, tmp_path / "run", group_duplicates=False, verbose=0, **FAST)
    metrics = result.metrics
    assert (metrics["grouped"], metrics["duplicate_groups"]) == (False, None)
    assert metrics["split"]["method"].endswith("seed 0")
    assert [len(result.paths[p]) for p in ("train", "val", "test")] == [12, 3, 3]
    assert "Near-duplicates were not searched for" in (result.out / "report.md").read_text()
    assert "Near-duplicates were not searched for" in (result.out / "report.html").read_text()


def test_fit_folder_leaves_the_gallery_out_when_maps_fail(images, tmp_path, monkeypatch):
    import skconv.explain

    def broken(*args, **kwargs):
        raise RuntimeError("no maps\ntoday")

    monkeypatch.setattr(skconv.explain, "heatmaps", broken)
    result = fit_folder(images, tmp_path / "run", verbose=0, **FAST)
    page = (result.out / "report.html").read_text()
    assert "Activation maps left out: RuntimeError: no maps today" in page
    assert result.files == FILES


def _bad_data(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A data folder that cannot be fitted, and what the error must name."""
    rng = np.random.default_rng(0)
    data = tmp_path / case
    sizes = {"small class": (8, 2), "one class": (8,), "corrupt image": (8, 8)}[case]
    for cls, n in zip(("a", "b"), sizes):
        (data / cls).mkdir(parents=True)
        for k in range(n):
            pixels = rng.integers(0, 256, (24, 24), dtype=np.uint8)
            Image.fromarray(pixels).save(data / cls / f"{cls}{k}.png")
    if case == "corrupt image":
        (data / "b" / "b3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        return data, f"Cannot decode image file '{data / 'b' / 'b3.png'}'"
    if case == "one class":
        return data, f"data '{data}' has one class folder only ('{data / 'a'}')"
    return data, f"class folder '{data / 'b'}' has 2 images, too few"


@pytest.mark.parametrize("case", ["small class", "one class", "corrupt image"])
@pytest.mark.parametrize("grouped", [True, False])
def test_fit_folder_bad_data_fails_naming_it_and_leaves_nothing(case, grouped, tmp_path):
    data, names = _bad_data(tmp_path / "in", case)
    before = _tree(data)
    with pytest.raises(ValueError) as info:
        fit_folder(data, tmp_path / "out" / "run", group_duplicates=grouped, verbose=0, **FAST)
    assert names in str(info.value)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no out, no staging
    assert _tree(data) == before


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
        ("new", dict(precision="int16"), ValueError, "precision must be 'fp32' or 'int8'"),
        (
            "new",
            dict(mode="finetune", precision="int8"),
            ValueError,
            "precision='int8' applies to mode='features' alone",
        ),
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

    monkeypatch.setattr(skconv.experiment._folder, "load_image_folder", no_work)
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

    monkeypatch.setattr(skconv.experiment._records, "plot_confusion_matrix", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_folder(images, tmp_path / "deep" / "run", verbose=0, **FAST)
    assert list(tmp_path.iterdir()) == []  # no staging folder, no parent made for it


@needs_browser
def test_fit_folder_report_html_opens_in_chromium(quiet_fit):
    result, _ = quiet_fit
    seen = render(result.out / "report.html")
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
    assert [m for m in seen["console"] if m[0] == "error"] == [] and seen["errors"] == []
    assert seen["screenshot"].std() > 20


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_features_recipe_takes_the_precision(precision):
    from skconv.experiment import build_model

    model = build_model(
        "features", "efficientnet_lite0", image_size=None, epochs=None, random_state=0,
        validation=None, verbose=0, precision=precision,
    )  # fmt: skip
    assert model.named_steps["features"].precision == precision
