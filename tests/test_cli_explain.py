"""``skconv explain``: one heat-map PNG per image, atomic output, one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import joblib
import numpy as np
import pytest
from cli_helpers import TINY, run
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder, make_ultrasound_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 synthetic 48-px images per class, one folder per class."""
    return make_ultrasound_folder(
        tmp_path_factory.mktemp("data") / "us", n_per_class=4, image_size=48, random_state=0
    )


@pytest.fixture(scope="module")
def model(images, tmp_path_factory):
    data = load_image_folder(images)
    clf = make_pipeline(ConvFeatureTransformer(**TINY), LogisticRegression(max_iter=500))
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    joblib.dump(clf.fit(data.paths, data.target), path)
    return path


def test_explain_writes_one_overlay_per_image(images, model, tmp_path):
    landscape = tmp_path / "in" / "wide.png"
    landscape.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 90), dtype=np.uint8)).save(
        landscape
    )
    out = tmp_path / "maps"
    code, stdout, stderr = run("explain", model, images / "benign", landscape, "--out", out)
    assert code == 0, stderr

    benign = sorted((images / "benign").glob("*.png"))
    expected = [f"{p.stem}_heatmap.png" for p in benign] + ["wide_heatmap.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["explain.csv"])
    for source, name in zip([*benign, landscape], expected):
        with Image.open(source) as original, Image.open(out / name) as written:
            assert written.format == "PNG" and written.mode == "RGB"
            assert written.size == original.size
    with open(out / "explain.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in [*benign, landscape]]
    assert all(r["explained"] == r["predicted"] for r in rows)
    assert {r["predicted"] for r in rows} <= {"benign", "malignant", "normal"}
    assert "wide_heatmap.png" in stdout and f"Wrote {out}" in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_explain_target_and_options(images, model, tmp_path):
    out = tmp_path / "maps"
    code, _, stderr = run(
        "explain",
        model,
        images / "normal",
        "--out",
        out,
        "--target",
        "malignant",
        "--alpha",
        "1",
        "--colormap",
        "gray",
        "--shift",
        "2",
    )
    assert code == 0, stderr
    with open(out / "explain.csv", newline="") as handle:
        assert {r["explained"] for r in csv.DictReader(handle)} == {"malignant"}
    pixels = np.asarray(Image.open(next(out.glob("*_heatmap.png"))))
    # alpha 1 with a gray colormap: the map alone, equal channels
    assert np.array_equal(pixels[..., 0], pixels[..., 1])


def test_explain_names_same_stems_apart(model, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("L", (40, 30), 120).save(tmp_path / folder / "scan.png")
    out = tmp_path / "maps"
    code, _, stderr = run("explain", model, tmp_path / "a", tmp_path / "b", "--out", out)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "explain.csv",
        "scan_heatmap-2.png",
        "scan_heatmap.png",
    ]


@pytest.mark.parametrize(
    "extra, status, message",
    [
        (
            ["--target", "cyst"],
            2,
            "--target 'cyst' is not a class of MODEL; its classes are benign, malignant, normal.",
        ),
        (["--alpha", "1.5"], 2, "argument --alpha: must be a number in [0, 1], got '1.5'"),
        (["--colormap", "rainbowz"], 2, "--colormap 'rainbowz' is not a matplotlib colormap"),
        (["--shift", "-1"], 2, "argument --shift: must be an integer >= 0"),
    ],
)
def test_explain_bad_options_fail_in_one_line(images, model, tmp_path, extra, status, message):
    out = tmp_path / "maps"
    code, stdout, stderr = run("explain", model, images / "benign", "--out", out, *extra)
    assert code == status
    assert stderr.count("\n") == 1 and stderr.startswith("skconv: error: ")
    assert message in stderr
    assert not out.exists()


def test_explain_refuses_a_non_empty_out(images, model, tmp_path):
    out = tmp_path / "maps"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = run("explain", model, images / "benign", "--out", out)
    assert code == 2
    assert "exists and is not empty; refusing to write into it" in stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_explain_refuses_a_model_it_cannot_explain(images, tmp_path):
    data = load_image_folder(images)
    forest = make_pipeline(
        ConvFeatureTransformer(**TINY), RandomForestClassifier(n_estimators=3, random_state=0)
    ).fit(data.paths, data.target)
    path = tmp_path / "forest.joblib"
    joblib.dump(forest, path)
    out = tmp_path / "maps"
    code, _, stderr = run("explain", path, images / "benign", "--out", out)
    assert code == 2 and stderr.count("\n") == 1
    assert "needs a linear classifier" in stderr and "RandomForestClassifier" in stderr
    assert not out.exists()


def test_explain_missing_inputs(model, images, tmp_path):
    code, _, stderr = run("explain", tmp_path / "none.joblib", images, "--out", tmp_path / "o")
    assert code == 2 and "does not exist" in stderr
    code, _, stderr = run("explain", model, tmp_path / "nothing.png", "--out", tmp_path / "o")
    assert code == 2 and "IMAGES" in stderr and "does not exist" in stderr
    code, _, stderr = run("explain", model, images)
    assert code == 2 and "--out" in stderr


def test_explain_leaves_nothing_when_an_image_fails(model, tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    Image.new("L", (40, 30), 90).save(bad / "a.png")
    (bad / "b.png").write_bytes(b"not a png")
    out = tmp_path / "maps"
    code, _, stderr = run("explain", model, bad, "--out", out)
    assert code == 1 and "b.png" in stderr and stderr.count("\n") == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
