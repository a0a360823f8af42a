"""skconv._io: atomic writes that never clobber or half-write a user's files."""

import json
import os
import stat

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from skconv._io import (
    atomic_dir,
    atomic_write,
    check_new_dir,
    dump_joblib,
    write_json,
    write_text,
)

# -- skconv._io --------------------------------------------------------------------------


def test_atomic_write_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "a.txt"
    with atomic_write(path) as f:
        f.write("one")
    with pytest.raises(FileExistsError, match=r"a\.txt' exists; refusing to overwrite"):
        with atomic_write(path) as f:
            f.write("two")
    assert path.read_text() == "one"
    with atomic_write(path, overwrite=True) as f:
        f.write("two")
    assert path.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "a.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(path, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []

    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "wb", overwrite=True) as f:
            f.write(b"partial")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_atomic_write_does_not_clobber_a_file_that_appears_meanwhile(tmp_path):
    path = tmp_path / "a.txt"
    with pytest.raises(FileExistsError):
        with atomic_write(path) as f:
            f.write("mine")
            path.write_text("someone else's")
    assert path.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    path = write_text(tmp_path / "r.md", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_atomic_write_errors(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of 'w', 'wt', 'wb', got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(FileNotFoundError, match="the folder .*missing' does not exist"):
        with atomic_write(tmp_path / "missing" / "x"):
            pass
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        with atomic_write(tmp_path, overwrite=True):
            pass


def test_write_json_and_dump_joblib(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}
    with pytest.raises(TypeError, match="Cannot write object"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()

    model = LogisticRegression(C=3.0)
    path = dump_joblib(model, tmp_path / "m.joblib")
    assert joblib.load(path).C == 3.0
    with pytest.raises(FileExistsError):
        dump_joblib(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib", "m.json"]


def test_check_new_dir(tmp_path):
    assert check_new_dir(tmp_path / "new") == tmp_path / "new"
    assert check_new_dir(tmp_path) == tmp_path  # empty
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="--out '.*' exists and is not empty"):
        check_new_dir(tmp_path, what="--out")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        check_new_dir(tmp_path / "f")


def test_atomic_dir_renames_into_place(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".empty.partial-")
        (staging / "a").write_text("a")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "x" / "y" / "out") as staging:
            (staging / "model.joblib").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_dir(tmp_path / "out", what="--out"):
            pass
    # ... also when it fills up while the staging folder is being written
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "late") as staging:
            (staging / "a").write_text("a")
            (tmp_path / "late").mkdir()
            (tmp_path / "late" / "b").write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late", "out"]
    assert [p.name for p in (tmp_path / "late").iterdir()] == ["b"]
