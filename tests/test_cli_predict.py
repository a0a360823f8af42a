"""``skconv predict``: classes and probabilities of image files, printed and as CSV."""

import csv

import joblib
import numpy as np
import pytest
from cli_helpers import tiny_model

from skconv.cli import main


@pytest.fixture(scope="module")
def images(us_folder):
    return us_folder


@pytest.fixture(scope="module")
def fitted(images, tmp_path_factory):
    """A folder holding model.joblib, as 'skconv fit' leaves one."""
    out = tmp_path_factory.mktemp("fit") / "run"
    tiny_model(images, out / "model.joblib")
    return out


def test_predict_reproduces_the_model(fitted, images, tmp_path, capsys):
    out = fitted
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
