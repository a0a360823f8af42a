"""``skconv export`` and ``skconv predict MODEL.onnx``: a deployed model without torch."""

import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from cli_helpers import run, tiny_model

from skconv.datasets import make_ultrasound_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_ultrasound_folder(
        tmp_path_factory.mktemp("data") / "us", n_per_class=4, image_size=48, random_state=0
    )


@pytest.fixture(scope="module")
def exported(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    model = tiny_model(images, folder / "model.joblib")
    code, out, err = run("export", model, folder / "model.onnx")
    assert code == 0, err
    assert "outputs label and probabilities" in out
    return folder


def test_predict_with_the_onnx_file_equals_the_joblib_model(exported, images, tmp_path):
    paths = sorted(str(p) for p in images.rglob("*.png"))
    model = joblib.load(exported / "model.joblib")
    csv_path = tmp_path / "onnx.csv"
    code, out, err = run("predict", exported / "model.onnx", *paths, "--csv", csv_path)
    assert code == 0, err
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == model.predict(np.asarray(paths)).tolist()
    got = np.array([[float(v) for v in r[2:]] for r in rows])
    np.testing.assert_allclose(got, model.predict_proba(np.asarray(paths)), atol=1e-4)


def test_onnx_prediction_imports_neither_torch_nor_skorch(exported, images):
    image = next(images.rglob("*.png"))
    code = textwrap.dedent(
        f"""
        import sys
        from skconv.cli import main
        status = main(["predict", {str(exported / "model.onnx")!r}, {str(image)!r}])
        loaded = sorted(m for m in ("torch", "torchvision", "timm", "skorch") if m in sys.modules)
        print("LOADED", loaded)
        sys.exit(status)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_export_refuses_bad_paths_and_existing_files(exported, tmp_path):
    model = exported / "model.joblib"
    code, _, err = run("export", model, tmp_path / "model.txt")
    assert code == 2 and "must end in .onnx" in err
    code, _, err = run("export", model, exported / "model.onnx")
    assert code == 2 and "--overwrite" in err
    code, _, err = run("export", model, tmp_path / "missing" / "m.onnx")
    assert code == 2 and "does not exist" in err
    code, _, err = run("export", tmp_path / "nothing.joblib", tmp_path / "m.onnx")
    assert code == 2 and "does not exist" in err
