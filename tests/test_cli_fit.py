"""``skconv fit``: the command around skconv.experiment.fit_folder, run in-process."""

import json

import joblib
import numpy as np
import pytest
from cli_helpers import BACKBONE, FIT_FILES, assert_valid_png, run, tree
from sklearn.utils import Bunch

from skconv.cli import main


@pytest.fixture(scope="module")
def images(us_folder):
    return us_folder


@pytest.fixture(scope="module")
def fitted(images, tmp_path_factory):
    """One `skconv fit` in features mode, shared by the tests that read its output."""
    before = tree(images)
    out = tmp_path_factory.mktemp("fit") / "run"
    code, stdout, stderr = run("fit", images, "--backbone", BACKBONE, "--out", out)
    assert code == 0, stderr
    assert tree(images) == before  # the user's files are only read
    return out, stdout, stderr


def test_fit_writes_every_file(fitted, images):
    out, stdout, stderr = fitted
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
        # The scores must be those of the confusion matrix written beside them.
        cm = np.asarray(m["confusion_matrix"], dtype=float)
        assert cm.sum() == m["n_samples"]
        recall = np.diag(cm) / cm.sum(axis=1)
        precision = np.divide(np.diag(cm), cm.sum(axis=0), out=np.zeros(3), where=cm.sum(0) > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros(3), where=both > 0)
        assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
        assert m["balanced_accuracy"] == pytest.approx(recall.mean())
        assert m["f1_macro"] == pytest.approx(f1.mean())
        for i, name in enumerate(metrics["classes"]):
            assert m["per_class"][name]["recall"] == pytest.approx(recall[i])
            assert m["per_class"][name]["precision"] == pytest.approx(precision[i])
        assert 0.0 <= m["roc_auc_ovr_macro"] <= 1.0  # probabilities are not in metrics.json

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
    assert_valid_png(out / "confusion_matrix.png")


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
    assert_valid_png(out / "learning_curves.png")
    assert_valid_png(out / "confusion_matrix.png")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["mode"] == "finetune" and metrics["model"]["epochs_run"] == 1
    assert metrics["model"]["predicts_with"] in ("network", "probe", "blend")
    assert "![Learning curves](learning_curves.png)" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "<figcaption>Learning curves</figcaption>" in page
    assert "Activation maps left out" not in page  # Grad-CAM explains the fine-tuned net

    model = joblib.load(out / "model.joblib")
    assert main(["predict", str(out), str(images / "normal")]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    paths = sorted(str(p) for p in (images / "normal").iterdir())
    assert [line.split()[1] for line in lines] == model.predict(np.array(paths)).tolist()


def test_fit_groups_near_duplicates_unless_told_not_to(fitted, images, tmp_path, capsys):
    out, stdout, _ = fitted
    assert "Near-duplicates: 0 of 24 images are in 0 groups" in stdout  # the default
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["grouped"], metrics["duplicate_groups"]) == (True, 0)
    assert "near-duplicate groups kept" in metrics["split"]["method"]

    ungrouped = tmp_path / "g"
    argv = ["fit", images, "--backbone", BACKBONE, "--image-size", "32", "--out", ungrouped]
    code, stdout, stderr = run(*argv, "--no-group-duplicates")
    assert code == 0, stderr
    assert "Near-duplicates" not in stdout
    metrics = json.loads((ungrouped / "metrics.json").read_text())
    assert (metrics["grouped"], metrics["duplicate_groups"]) == (False, None)
    assert "near-duplicate" not in metrics["split"]["method"]
    # the old flag is still accepted
    assert run(*argv[:-1], tmp_path / "h", "--group-duplicates")[0] == 0


@pytest.mark.parametrize("grouping", ["--group-duplicates", "--no-group-duplicates"])
def test_a_failing_fit_leaves_nothing(images, tmp_path, capsys, grouping):
    # Grouped, the file fails while near-duplicates are searched; else while fitting.
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
                grouping,
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


def test_fit_compare(images, tmp_path, monkeypatch):
    import skconv.experiment._compare

    monkeypatch.setattr(skconv.experiment._compare, "offline_backbones", lambda: [BACKBONE])
    out = tmp_path / "cmp"
    code, stdout, stderr = run(
        "fit", images, "--compare", "--backbone", BACKBONE, "--image-size", "32",
        "--epochs", "1", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert {"leaderboard.csv", "model.joblib", "report.md"} <= {p.name for p in out.iterdir()}
    assert "[2/3] finetune squeezenet1_1_caffe: " in stdout
    assert "Leaderboard (test part; chosen by validation score):" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"].endswith(f"--out {out}")
    assert len(metrics["compare"]["leaderboard"]) == 3


def test_fit_compare_usage_errors(images, tmp_path):
    code, _, stderr = run(
        "fit", images, "--compare", "--mode", "finetune", "--out", tmp_path / "o"
    )
    assert code == 2
    assert "--compare fits both modes; leave out --mode." in stderr
    assert list(tmp_path.iterdir()) == []


def test_fit_precision_goes_to_the_feature_extractor(images, tmp_path, monkeypatch):
    import skconv.experiment
    from skconv.engine import int8_available

    calls = []

    def fake_fit_folder(data, out, **kwargs):  # the fit itself is tested elsewhere
        calls.append(kwargs)
        return Bunch(files=["model.joblib"])

    monkeypatch.setattr(skconv.experiment, "fit_folder", fake_fit_folder)
    code, _, stderr = run("fit", images, "--precision", "int8", "--out", tmp_path / "a")
    if int8_available():
        assert code == 0, stderr
        assert calls[-1]["precision"] == "int8" and calls[-1]["mode"] == "features"
    else:
        assert code == 2 and "pip install 'skconv[openvino]'" in stderr
    assert run("fit", images, "--out", tmp_path / "b")[0] == 0
    assert calls[-1]["precision"] == "fp32"  # the default
    for extra in (["--mode", "finetune"], ["--compare"]):
        out = tmp_path / "o"
        code, _, stderr = run("fit", images, "--precision", "int8", *extra, "--out", out)
        assert code == 2
        assert "--precision int8 applies to --mode features without --compare" in stderr
    assert not (tmp_path / "o").exists()


def test_fit_on_dicom_files_writes_nothing_of_their_metadata(tmp_path):
    """A folder of DICOM files, half without an extension, to a model and reports; the
    patient name and ID put in every file appear in no file written, nor in the output."""
    pytest.importorskip("pydicom")
    from skconv.datasets import make_ultrasound_folder

    data = make_ultrasound_folder(
        tmp_path / "scans", n_per_class=8, image_size=64, random_state=0, file_format="dicom"
    )
    for index, path in enumerate(sorted(data.rglob("*.dcm"))):
        if index % 2:
            path.rename(path.with_name(f"IM{index:04d}"))  # as scanners name them
    before = tree(data)
    out = tmp_path / "run"
    code, stdout, stderr = run("fit", data, "--backbone", BACKBONE, "--out", out)
    assert code == 0, stderr
    assert tree(data) == before
    assert sorted(p.name for p in out.iterdir()) == FIT_FILES
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["counts"]["benign"]["total"] == 8  # both kinds of file found
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in ("SYNTHETIC", "SKCONV-0001"):  # skconv._synthetic.write_dicom's
        assert secret.encode() not in written
        assert secret not in stdout + stderr
    report = (out / "report.html").read_text()
    assert "data:image/" in report and 'alt="IM00' in report  # pixels and names are shown
