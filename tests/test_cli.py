"""Tests of the ``skconv`` command, run in-process through ``main`` (one subprocess: demo)."""

import contextlib
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

from skconv.cli import main
from skconv.datasets import make_ultrasound_folder

# Packaged, offline and the fastest on a CPU; the tests check the command, not accuracy.
BACKBONE = "squeezenet1_1_caffe"
FIT_FILES = ["confusion_matrix.png", "metrics.json", "model.joblib", "report.md"]


def _tree(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(*argv) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _assert_valid_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(path) as image:
        assert min(image.size) >= 100


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """8 synthetic images per class, 64 px, one folder per class."""
    return make_ultrasound_folder(
        tmp_path_factory.mktemp("data") / "us", n_per_class=8, image_size=64, random_state=0
    )


@pytest.fixture(scope="module")
def fitted(images, tmp_path_factory):
    """One `skconv fit` in features mode, shared by the tests that read its output."""
    before = _tree(images)
    out = tmp_path_factory.mktemp("fit") / "run"
    code, stdout, stderr = _run("fit", images, "--backbone", BACKBONE, "--out", out)
    assert code == 0, stderr
    assert _tree(images) == before  # the user's files are only read
    split = tmp_path_factory.mktemp("split") / "split"  # a pre-split folder for error tests
    assert _run("split", images, split)[0] == 0
    return out, split, stdout, stderr


# -- fit ---------------------------------------------------------------------------------


def test_fit_writes_every_file(fitted, images):
    out, _, stdout, stderr = fitted
    assert sorted(p.name for p in out.iterdir()) == FIT_FILES
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left

    # the reference split table, the reports and the progress bar
    assert (
        "Class: benign\nTotal files: 8\nTraining files: 5\nValidation files: 1\n"
        "Test files: 2" in stdout
    )
    assert "Validation (3 images)" in stdout and "Test (6 images)" in stdout
    assert "features (squeezenet1_1_caffe)" in stderr and "img/s" in stderr

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["benign", "malignant", "normal"]
    assert metrics["model"]["mode"] == "features"
    assert metrics["model"]["backbone"]["name"] == BACKBONE
    assert metrics["split"]["counts"]["normal"] == {"total": 8, "train": 5, "val": 1, "test": 2}
    for part in ("val", "test"):
        m = metrics[part]
        for key in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr_macro"):
            assert 0.0 <= m[key] <= 1.0
        assert sum(map(sum, m["confusion_matrix"])) == m["n_samples"]
        assert set(m["per_class"]["benign"]) >= {"precision", "recall"}

    report = (out / "report.md").read_text()
    assert "Class: malignant\nTotal files: 8\nTraining files: 5" in report
    for text in (
        "| accuracy |",
        "| balanced accuracy |",
        "| macro-F1 |",
        "| macro ROC AUC (one-vs-rest) |",
        "| class | precision | recall |",
        "| true \\ predicted | benign | malignant | normal |",
        "![Confusion matrix, test part](confusion_matrix.png)",
    ):
        assert text in report
    _assert_valid_png(out / "confusion_matrix.png")


def test_predict_reproduces_the_model(fitted, images, tmp_path, capsys):
    out, _, _, _ = fitted
    model = joblib.load(out / "model.joblib")
    single = str(images / "normal" / "normal_003.png")
    paths = np.array([single] + sorted(str(p) for p in (images / "malignant").iterdir()))
    expected, proba = model.predict(paths), model.predict_proba(paths)

    csv_path = tmp_path / "pred.csv"
    # a file and a folder (expanded, sorted); the output folder in place of model.joblib
    assert (
        main(["predict", str(out), single, str(images / "malignant"), "--csv", str(csv_path)]) == 0
    )
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0].split() == ["file", "class", "benign", "malignant", "normal"]
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == paths.tolist()
    assert [r["class"] for r in rows] == expected.tolist()
    got = np.array([[float(r[f"proba_{c}"]) for c in model.classes_] for r in rows])
    np.testing.assert_allclose(got, proba, rtol=1e-6)
    first = stdout.splitlines()[1].split()
    assert first[:2] == [paths[0], expected[0]]

    # files keep the order given; an existing CSV is replaced only when asked
    assert (
        main(
            [
                "predict",
                str(out / "model.joblib"),
                paths[5],
                paths[0],
                "--csv",
                str(csv_path),
                "--overwrite",
            ]
        )
        == 0
    )
    with open(csv_path, newline="") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [paths[5], paths[0]]
    assert main(["predict", str(out), paths[0], "--csv", str(csv_path)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_split_then_fit_on_the_split_folders(images, tmp_path, capsys):
    before = _tree(images)
    dst = tmp_path / "split"
    assert main(["split", str(images), str(dst), "--seed", "1"]) == 0
    stdout = capsys.readouterr().out
    assert (
        "Class: normal\nTotal files: 8\nTraining files: 5\nValidation files: 1\n"
        "Test files: 2" in stdout
    )
    assert sorted(p.name for p in dst.iterdir()) == ["manifest.csv", "test", "train", "val"]
    assert len(list((dst / "test" / "benign").iterdir())) == 2
    assert _tree(images) == before

    out = tmp_path / "run"
    assert (
        main(["fit", str(dst), "--backbone", BACKBONE, "--image-size", "64", "--out", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["method"].startswith("as given in")
    assert metrics["test"]["n_samples"] == 6 and metrics["model"]["image_size"] == 64


def test_fit_finetune(images, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(
        [
            "fit",
            str(images),
            "--mode",
            "finetune",
            "--epochs",
            "1",
            "--backbone",
            BACKBONE,
            "--image-size",
            "64",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(FIT_FILES + ["learning_curves.png"])
    assert "train_loss" in captured.out and "valid_loss" in captured.out  # epoch table
    assert "it/s" in captured.err or "s/it" in captured.err  # training progress bar
    _assert_valid_png(out / "learning_curves.png")
    _assert_valid_png(out / "confusion_matrix.png")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["mode"] == "finetune" and metrics["model"]["epochs_run"] == 1
    assert "![Learning curves](learning_curves.png)" in (out / "report.md").read_text()

    model = joblib.load(out / "model.joblib")
    assert main(["predict", str(out), str(images / "normal")]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    paths = sorted(str(p) for p in (images / "normal").iterdir())
    assert [line.split()[1] for line in lines] == model.predict(np.array(paths)).tolist()


def test_fit_with_near_duplicate_groups(images, tmp_path, capsys):
    out = tmp_path / "g"
    assert (
        main(
            [
                "fit",
                str(images),
                "--backbone",
                BACKBONE,
                "--image-size",
                "32",
                "--group-duplicates",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "Near-duplicates:" in capsys.readouterr().out
    assert (
        "near-duplicate groups kept"
        in json.loads((out / "metrics.json").read_text())["split"]["method"]
    )


# -- errors ------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current folder, so that a default --out would show up in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _error_cases(images, fitted, root):
    (root / "empty").mkdir()
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("mine")
    (root / "loose").mkdir()
    Image.new("L", (16, 16)).save(root / "loose" / "a.png")
    (root / "partsplit" / "train" / "a").mkdir(parents=True)
    model = str(fitted[0] / "model.joblib")
    image = str(next(images.glob("benign/*.png")))
    return {
        "missing data": (["fit", str(root / "nope")], 2, "DATA '.*nope' does not exist"),
        "data is a file": (["fit", image], 2, "is not a folder"),
        "empty folder": (["fit", str(root / "empty")], 1, "empty.*is empty"),
        "no class folders": (["fit", str(root / "loose")], 1, "no images in class folders"),
        "train without val": (["fit", str(root / "partsplit")], 1, "has train but no val"),
        "unknown backbone": (
            ["fit", str(images), "--backbone", "resnet5O"],
            2,
            "--backbone: Unknown backbone 'resnet5O'. Did you mean resnet50",
        ),
        "out not empty": (
            ["fit", str(images), "--out", str(root / "full")],
            2,
            "--out '.*full' exists and is not empty",
        ),
        "out inside data": (
            ["fit", str(images), "--out", str(images / "run")],
            2,
            "--out '.*run' lies inside DATA",
        ),
        "bad fraction": (
            ["fit", str(images), "--val", "1.5"],
            2,
            "argument --val: must be a fraction in \\(0, 1\\)",
        ),
        "fractions sum": (
            ["split", str(images), str(root / "s"), "--val", "0.5", "--test", "0.5"],
            2,
            "sum to 1",
        ),
        "epochs in features mode": (
            ["fit", str(images), "--epochs", "2"],
            2,
            "--epochs applies to --mode finetune only",
        ),
        "split options on split data": (
            ["fit", str(fitted[1]), "--test", "0.2"],
            2,
            "--test apply when DATA is split here",
        ),
        "unknown option": (
            ["fit", str(images), "--bogus"],
            2,
            "unrecognized arguments: --bogus \\(see 'skconv fit --help'\\)",
        ),
        "no verb": ([], 2, "choose a verb"),
        "unknown verb": (["train"], 2, "invalid choice: 'train'"),
        "split missing src": (
            ["split", str(root / "nope"), str(root / "s")],
            2,
            "SRC '.*nope' does not exist",
        ),
        "split dst not empty": (
            ["split", str(images), str(root / "full")],
            2,
            "DST '.*full' exists and is not empty",
        ),
        "split dst in src": (["split", str(images), str(images / "split")], 2, "lies inside SRC"),
        "predict missing model": (
            ["predict", str(root / "m.joblib"), image],
            2,
            "MODEL '.*m.joblib' does not exist",
        ),
        "predict missing image": (
            ["predict", model, str(root / "x.png")],
            2,
            "IMAGES '.*x.png' does not exist",
        ),
        "predict empty folder": (
            ["predict", model, str(root / "empty")],
            1,
            "IMAGES folder '.*empty' holds no image files",
        ),
        "predict not a model": (["predict", image, image], 1, "Cannot load MODEL '.*png'"),
        "backbones no match": (["backbones", "nothing*"], 2, "no backbone matches PATTERN"),
    }


CASES = [
    "missing data",
    "data is a file",
    "empty folder",
    "no class folders",
    "train without val",
    "unknown backbone",
    "out not empty",
    "out inside data",
    "bad fraction",
    "fractions sum",
    "epochs in features mode",
    "split options on split data",
    "unknown option",
    "no verb",
    "unknown verb",
    "split missing src",
    "split dst not empty",
    "split dst in src",
    "predict missing model",
    "predict missing image",
    "predict empty folder",
    "predict not a model",
    "backbones no match",
]


@pytest.mark.parametrize("case", CASES)
def test_errors_are_one_line_with_a_status_and_write_nothing(
    case, images, fitted, workdir, tmp_path, capsys
):
    import re

    root = tmp_path / "inputs"
    root.mkdir()
    argv, status, pattern = _error_cases(images, fitted, root)[case]
    trees = {p: _tree(p) for p in (root, images, fitted[0], fitted[1])}
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("skconv: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert list(workdir.iterdir()) == []  # no default skconv-out/
    assert {p: _tree(p) for p in trees} == trees  # nothing written, nothing changed
    assert sorted(p.name for p in root.iterdir()) == ["empty", "full", "loose", "partsplit"]


def test_a_failing_fit_leaves_nothing(images, tmp_path, capsys):
    data = tmp_path / "data"
    for cls in ("benign", "malignant", "normal"):
        (data / cls).mkdir(parents=True)
        for src in sorted((images / cls).iterdir()):
            (data / cls / src.name).write_bytes(src.read_bytes())
    (data / "normal" / "normal_000.png").write_bytes(b"not a png")  # fails at decoding
    out = tmp_path / "deep" / "out"
    assert (
        main(
            [
                "fit",
                str(data),
                "--backbone",
                BACKBONE,
                "--image-size",
                "32",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("skconv: error: ")
    assert "normal_000.png" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_traceback_option_shows_the_exception(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        main(["fit", str(tmp_path / "empty"), "--traceback"])


@pytest.mark.parametrize("verb", ["split", "fit", "predict", "backbones", "demo"])
def test_every_verb_has_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: skconv {verb}")
    assert "--traceback" in out


def test_main_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("split", "fit", "predict", "backbones", "demo"):
        assert verb in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("skconv 0.")


# -- backbones ---------------------------------------------------------------------------


def test_backbones_lists_packaged_ones_with_feature_sizes(capsys):
    assert main(["backbones", "*_lite0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "source", "features", "input", "offline"]
    assert out[1].split() == ["efficientnet_lite0", "packaged", "1280", "224", "yes"]
    assert main(["backbones", "squeezenet*"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_1_caffe  packaged     512       224    yes" in out
    assert "squeezenet1_0        torchvision  -" in out


# -- demo --------------------------------------------------------------------------------

_NO_NETWORK = textwrap.dedent("""
    # Imported at start-up through PYTHONPATH: any Internet connection fails at once.
    import socket

    def _refuse(*args, **kwargs):
        raise OSError("network disabled by skconv's tests")

    _connect = socket.socket.connect

    def _connect_local_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse()
        return _connect(self, address)

    socket.socket.connect = _connect_local_only
    socket.socket.connect_ex = _connect_local_only
    socket.getaddrinfo = _refuse
""")


def test_demo_console_script_runs_offline(tmp_path):
    script = Path(sys.executable).with_name("skconv")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_NO_NETWORK)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('pypi.org', 443))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "network disabled" in probe.stderr  # the guard is in force

    result = subprocess.run(
        [str(script), "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "Class: benign\nTotal files: 30\nTraining files: 21\nValidation files: 4\n"
        "Test files: 5" in out
    )
    assert "Test (15 images)" in out
    accuracy = [line for line in out.splitlines() if line.strip().startswith("accuracy")]
    assert len(accuracy) == 2 and 0.0 <= float(accuracy[-1].split()[-1]) <= 1.0
    assert "predictions for three test images" in out
    assert "Demo done in" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing left behind
