"""``skconv split``: copies into train/val/test that ``skconv fit`` then uses as given."""

import json

import pytest
from cli_helpers import BACKBONE, tree

from skconv.cli import main


@pytest.fixture(scope="module")
def images(us_folder):
    return us_folder


def test_split_then_fit_on_the_split_folders(images, tmp_path, capsys):
    before = tree(images)
    dst = tmp_path / "split"
    assert main(["split", str(images), str(dst), "--seed", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "seed 1, near-duplicates kept together):" in stdout  # the default
    assert (
        "Class: normal\nTotal files: 8\nTraining files: 5\nValidation files: 1\n"
        "Test files: 2" in stdout
    )
    assert sorted(p.name for p in dst.iterdir()) == ["manifest.csv", "test", "train", "val"]
    assert len(list((dst / "test" / "benign").iterdir())) == 2
    assert tree(images) == before

    out = tmp_path / "run"
    assert (
        main(["fit", str(dst), "--backbone", BACKBONE, "--image-size", "64", "--out", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["method"].startswith("as given in")
    assert metrics["test"]["n_samples"] == 6 and metrics["model"]["image_size"] == 64
