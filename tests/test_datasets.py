import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import BUSI, needs_busi
from PIL import Image

from skconv.datasets import (
    image_files,
    load_image_folder,
    make_ultrasound,
    make_ultrasound_folder,
    split_folders,
)


def _tree_hash(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def image_folder(tmp_path):
    """Synthetic class folders plus the clutter a loader must ignore."""
    root = make_ultrasound_folder(tmp_path / "us", n_per_class=10, random_state=0)
    Image.new("L", (8, 8)).save(root / "benign" / "benign_001_mask.png")
    Image.new("L", (8, 8)).save(root / "benign" / ".hidden.png")
    (root / "benign" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("top-level files are not classes")
    (root / ".cache").mkdir()
    Image.new("L", (8, 8)).save(root / ".cache" / "x.png")
    (root / "normal" / "extra").mkdir()
    Image.new("L", (16, 16)).save(root / "normal" / "extra" / "deep.JPG", format="JPEG")
    return root


# -- load_image_folder -----------------------------------------------------------------


def test_load_image_folder(image_folder):
    data = load_image_folder(image_folder)
    assert data.target_names == ["benign", "malignant", "normal"]
    assert len(data.paths) == 31 and data.skipped == []
    assert [np.sum(data.target == c) for c in data.target_names] == [10, 10, 11]
    names = [Path(p).name for p in data.paths]
    assert not any("_mask" in n or n.startswith(".") or n.endswith(".txt") for n in names)
    assert "deep.JPG" in names
    assert list(data.paths) == sorted(data.paths)
    assert all(Path(p).parent.name in (t, "extra") for p, t in zip(data.paths, data.target))
    again = load_image_folder(str(image_folder))
    assert np.array_equal(again.paths, data.paths)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Image folder '.*nowhere' does not exist"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"Image folder '.*empty' is empty"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "cats").mkdir(parents=True)
    (tmp_path / "noimg" / "cats" / "a.txt").write_text("x")
    with (
        pytest.warns(UserWarning, match="holds no images"),
        pytest.raises(ValueError, match=r"'.*noimg' holds no images in class folders"),
    ):
        load_image_folder(tmp_path / "noimg")
    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="one folder per class"):
        load_image_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        load_image_folder(tmp_path / "flat", on_error="ignore")


def test_load_image_folder_undecodable(image_folder):
    bad = image_folder / "malignant" / "malignant_999.png"
    bad.write_bytes(b"\x89PNG broken")
    lazy = load_image_folder(image_folder)  # on_error="raise" decodes nothing
    assert str(bad) in lazy.paths.tolist()
    with pytest.warns(UserWarning, match=r"Skipped 1 file\(s\).*malignant_999\.png"):
        data = load_image_folder(image_folder, on_error="skip")
    assert data.skipped == [str(bad)]
    assert str(bad) not in data.paths.tolist() and len(data.paths) == 31


def test_one_walker_for_image_folders(tmp_path, monkeypatch):
    for name in ("b/x.png", "b-c.png", "a.PNG", "a_mask.png", ".h.png", ".cache/y.png", "n.txt"):
        (tmp_path / "c" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / "c" / name, format="PNG")
    monkeypatch.chdir(tmp_path)
    # the form given is kept; sorted as strings, the order a listing shows
    assert image_files("./c") == ["./c/a.PNG", "./c/b-c.png", "./c/b/x.png"]
    # load_image_folder sorts by path components, as it always has: splits stay the same
    assert [Path(p).name for p in load_image_folder(tmp_path).paths] == [
        "a.PNG",
        "x.png",
        "b-c.png",
    ]


# -- split_folders ---------------------------------------------------------------------


def test_split_folders_copies_and_leaves_source_untouched(image_folder, tmp_path, capsys):
    before = _tree_hash(image_folder)
    dst = split_folders(image_folder, tmp_path / "out" / "split", random_state=0)
    assert _tree_hash(image_folder) == before
    assert dst == tmp_path / "out" / "split"
    assert sorted(p.name for p in dst.iterdir()) == ["manifest.csv", "test", "train", "val"]
    assert "Class: normal\nTotal files: 11\n" in capsys.readouterr().out

    with open(dst / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["part", "class", "source", "destination"]
    data = load_image_folder(image_folder)
    assert sorted(r["source"] for r in rows) == sorted(str(Path(p).resolve()) for p in data.paths)
    for r in rows:
        copy = dst / r["destination"]
        assert copy.parts[-len(Path(r["destination"]).parts) :][:2] == (r["part"], r["class"])
        assert copy.read_bytes() == Path(r["source"]).read_bytes()
    # Sub-folders of a class folder are kept under the class.
    assert any(r["destination"].endswith("/normal/extra/deep.JPG") for r in rows)
    # Per class as train_test_split rounds: 10 -> 7/1/2 and 11 -> 7/2/2.
    assert [sum(r["part"] == p for r in rows) for p in ("train", "val", "test")] == [21, 4, 6]
    # Nothing but dst in its parent: the temporary sibling was renamed away.
    assert [p.name for p in dst.parent.iterdir()] == ["split"]


def test_split_folders_refuses_non_empty_dst(image_folder, tmp_path):
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"dst '.*taken' exists and is not an empty"):
        split_folders(image_folder, dst, verbose=False)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="lies inside src"):
        split_folders(image_folder, image_folder / "split", verbose=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert split_folders(image_folder, empty, random_state=0, verbose=False) == empty
    assert (empty / "manifest.csv").exists()


def test_split_folders_interrupted_leaves_nothing(image_folder, tmp_path, monkeypatch):
    calls = []

    def flaky_copy(src, dst):
        calls.append(src)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(shutil, "copy2", flaky_copy)
    with pytest.raises(KeyboardInterrupt):
        split_folders(image_folder, tmp_path / "out", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["us"]
    # the parent folders made for a deep dst go too
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        split_folders(image_folder, tmp_path / "new" / "deeper" / "out", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["us"]


def test_split_folders_groups(image_folder, tmp_path):
    dst = split_folders(
        image_folder, tmp_path / "dup", groups="duplicates", random_state=0, verbose=False
    )
    assert (dst / "manifest.csv").exists()
    with pytest.raises(ValueError, match=r"groups must be None, 'duplicates'"):
        split_folders(image_folder, tmp_path / "x", groups="dups", verbose=False)
    with pytest.raises(ValueError, match=r"groups must have one label per image \(31"):
        split_folders(image_folder, tmp_path / "y", groups=[0, 1, 2], verbose=False)


# -- synthetic ultrasound ----------------------------------------------------------------


def test_make_ultrasound_deterministic_and_shaped():
    X, y = make_ultrasound(n_per_class=20, image_size=64, random_state=0)
    assert X.shape == (60, 64, 64) and X.dtype == np.uint8
    assert sorted(set(y.tolist())) == ["benign", "malignant", "normal"]
    assert np.array_equal(X, make_ultrasound(20, 64, random_state=0)[0])
    assert not np.array_equal(X, make_ultrasound(20, 64, random_state=1)[0])
    assert X.std() > 10  # speckle, not flat images
    with pytest.raises(ValueError, match=r"'image_size' parameter.*\[16, inf\). Got 8"):
        make_ultrasound(image_size=8)
    with pytest.raises(ValueError, match=r"'n_per_class' parameter.*\[1, inf\). Got 0"):
        make_ultrasound(n_per_class=0)


def test_make_ultrasound_not_separable_by_mean_intensity():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = make_ultrasound(n_per_class=100, image_size=48, random_state=0)
    means = X.reshape(len(X), -1).mean(axis=1, keepdims=True)
    assert cross_val_score(LogisticRegression(), means, y, cv=5).mean() < 0.5
    # ...while the lesion is there to be found: the darkest 8x8 patch differs.
    darkest = np.array([np.min(x.reshape(6, 8, 6, 8).mean(axis=(1, 3))) for x in X])
    assert darkest[y == "normal"].mean() > darkest[y != "normal"].mean() + 10


def test_make_ultrasound_folder(tmp_path):
    root = make_ultrasound_folder(tmp_path / "us", n_per_class=3, image_size=32, random_state=0)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert files[:3] == ["benign/benign_001.png", "benign/benign_002.png", "benign/benign_003.png"]
    assert len(files) == 9
    X, _ = make_ultrasound(3, 32, random_state=0)
    assert np.array_equal(np.asarray(Image.open(root / "benign" / "benign_001.png")), X[0])
    with pytest.raises(FileExistsError, match=r"path '.*us' exists and is not an empty"):
        make_ultrasound_folder(root)


# -- BUSI --------------------------------------------------------------------------------


@pytest.mark.real_data
@needs_busi
def test_busi_load_image_folder():
    data = load_image_folder(BUSI)
    assert len(data.paths) == 780
    assert data.target_names == ["benign", "malignant", "normal"]
    assert [int(np.sum(data.target == c)) for c in data.target_names] == [437, 210, 133]
    assert not any("_mask" in Path(p).name for p in data.paths)
