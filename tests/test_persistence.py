"""A model file is code: weights load with torch.load(weights_only=True), estimators
round-trip through skops (which refuses unknown types) and joblib (only when trusted),
and every write is atomic, so an interrupted save never costs the previous file."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from skops.io.exceptions import UntrustedTypesFoundException

from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv._io import write_json, write_text
from skconv.datasets import make_ultrasound, make_ultrasound_folder, split_folders
from skconv.persistence import UnsafeFileError, load, save, untrusted_types
from skconv.zoo import load_backbone

BACKBONE = dict(backbone="mobilenet_v3_small", weights=None, image_size=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def data():
    X, y = make_ultrasound(n_per_class=3, image_size=32, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return Pipeline(
        [("features", ConvFeatureTransformer(**BACKBONE)), ("head", LogisticRegression())]
    ).fit(X, y)


# ---------------------------------------------------------------------------- weights files


def test_weights_file_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    armed = tmp_path / "armed.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload(marker)}, armed)
    torch.load(armed, weights_only=False)  # the file is armed: a plain load runs the code
    assert marker.is_dir()
    marker.rmdir()
    for payload in ({"state_dict": {"x": Payload(marker)}}, Payload(marker)):
        torch.save(payload, armed)
        with pytest.raises(ValueError, match=r"armed\.pth.*weights_only=True"):
            load_backbone("resnet18", weights=armed)
        assert not marker.exists()


def test_safetensors_weights_load_and_corrupt_ones_name_the_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    good = tmp_path / "resnet18.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), good)
    assert load_backbone("resnet18", weights=good).sha256 is not None
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"corrupt\.safetensors"):
        load_backbone("resnet18", weights=corrupt)


def test_finetune_load_params_refuses_pickled_code(tmp_path, data):
    X, y = data
    clf = FineTuneClassifier(**BACKBONE, max_epochs=1, train_split=None, patience=None)
    clf.fit(X, y).save_params(f_params=tmp_path / "weights.pt")  # the way to share weights
    clf.load_params(f_params=tmp_path / "weights.pt")
    marker = tmp_path / "code_ran"
    torch.save({"head.weight": Payload(marker)}, tmp_path / "armed.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        clf.load_params(f_params=tmp_path / "armed.pt")
    assert not marker.exists()


# ---------------------------------------------------------------------------- round trips


def test_transformer_and_pipeline_round_trip_through_skops_and_joblib(tmp_path, data, fitted):
    X, _ = data
    transformer = fitted.named_steps["features"]
    for name, model, check in [
        ("pipeline", fitted, lambda m: m.predict_proba(X)),
        ("transformer", transformer, lambda m: m.transform(X)),
    ]:
        skops_file = save(model, tmp_path / f"{name}.skops", format="skops")
        joblib_file = save(model, tmp_path / f"{name}.joblib")
        assert untrusted_types(skops_file) == []  # nothing for the user to vouch for
        for loaded in (load(skops_file), load(joblib_file, trusted=True)):
            assert type(loaded) is type(model)
            np.testing.assert_array_equal(check(loaded), check(model))
    assert zipfile.is_zipfile(tmp_path / "pipeline.skops")


def test_joblib_files_load_only_when_trusted(tmp_path):
    marker = tmp_path / "code_ran"
    armed = tmp_path / "model.skops"  # the name does not decide the format; the content does
    joblib.dump(Payload(marker), armed)
    for trusted in (None, ["sklearn.pipeline.Pipeline"]):
        with pytest.raises(UnsafeFileError, match=r"model\.skops' is a pickle \(joblib\)"):
            load(armed, trusted=trusted)
    assert not marker.exists()
    load(armed, trusted=True)  # the caller vouched for it: the pickle runs
    assert marker.is_dir()


def tamper(path: Path, edit) -> Path:
    """Copy a skops file with its schema.json rewritten by ``edit(schema)``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["schema.json"] = json.dumps(edit(json.loads(members["schema.json"]))).encode()
    tampered = path.with_name("tampered.skops")
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return tampered


def nodes(node):
    """Every node of a skops schema, depth first."""
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            yield from nodes(child)


def test_tampered_skops_file_is_refused_before_anything_is_built(tmp_path, fitted, monkeypatch):
    path = save(fitted, tmp_path / "model.skops", format="skops")
    built = []
    monkeypatch.setattr("subprocess.Popen.__init__", lambda *a, **k: built.append(a))
    monkeypatch.setattr("os.system", lambda *a: built.append(a))

    def swap_class(schema):  # the preprocessing object becomes a process launcher
        node = next(n for n in nodes(schema) if n.get("__class__") == "Preprocessing")
        node.update({"__class__": "Popen", "__module__": "subprocess"})
        return schema

    def inject_function(schema):  # a parameter becomes a function to call
        node = next(n for n in nodes(schema) if n.get("__class__") == "LogisticRegression")
        node["content"]["content"]["solver"] = {
            "__class__": "system",
            "__module__": "os",
            "__loader__": "FunctionNode",
            "__id__": 1,
        }
        return schema

    for edit, name in [(swap_class, "subprocess.Popen"), (inject_function, "os.system")]:
        tampered = tamper(path, edit)
        assert name in untrusted_types(tampered)
        with pytest.raises(UntrustedTypesFoundException, match=name.replace(".", r"\.")):
            load(tampered)
    assert built == []


def test_feature_cache_folder_in_a_skops_file_needs_trust(tmp_path, data):
    X, y = data
    cached = Pipeline(
        [
            ("features", ConvFeatureTransformer(**BACKBONE, memory=str(tmp_path / "cache"))),
            ("head", LogisticRegression()),
        ]
    ).fit(X, y)
    path = save(cached, tmp_path / "cached.skops", format="skops")
    # The cache holds pickles that transform would unpickle: a file from others must not
    # choose where they come from.
    with pytest.raises(UnsafeFileError, match=r"ConvFeatureTransformer\(memory='.*cache'\)"):
        load(path)
    assert load(path, trusted=True).predict(X).shape == y.shape


def test_finetune_classifier_is_refused_by_skops_and_round_trips_with_joblib(tmp_path, data):
    X, y = data
    clf = FineTuneClassifier(**BACKBONE, max_epochs=1, train_split=None, patience=None)
    clf.fit(X, y)
    with pytest.raises(TypeError, match="format='joblib'.*save_params"):
        save(clf, tmp_path / "ft.skops", format="skops")
    assert not (tmp_path / "ft.skops").exists() and list(tmp_path.iterdir()) == []
    loaded = load(save(clf, tmp_path / "ft.joblib"), trusted=True)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_save_and_load_reject_bad_arguments(tmp_path, fitted):
    with pytest.raises(ValueError, match="format must be one of 'joblib', 'skops'"):
        save(fitted, tmp_path / "m.onnx", format="onnx")
    path = save(LogisticRegression(), tmp_path / "m.skops", format="skops")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save(fitted, path, format="skops")
    assert load(path).get_params() == LogisticRegression().get_params()
    with pytest.raises(FileNotFoundError, match="missing.skops"):
        load(tmp_path / "missing.skops")
    with pytest.raises(ValueError, match="trusted must be None, True or a list"):
        load(path, trusted="sklearn.linear_model.LogisticRegression")


# ---------------------------------------------------------------------------- atomic writes


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("interrupt", [RuntimeError("disk failed"), KeyboardInterrupt()])
def test_interrupted_joblib_save_keeps_the_previous_file(tmp_path, fitted, monkeypatch, interrupt):
    path = save(LogisticRegression(C=3.0), tmp_path / "model.joblib")
    before = digest(path)

    def half_then_fail(obj, target, **kwargs):
        buffer = io.BytesIO()
        joblib.numpy_pickle.dump(obj, buffer)  # the real dump, then half of it written
        target.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise interrupt

    monkeypatch.setattr(joblib, "dump", half_then_fail)
    with pytest.raises(type(interrupt)):
        save(fitted, path, overwrite=True)
    assert digest(path) == before and load(path, trusted=True).C == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.joblib"]  # no temp file


def test_disk_full_during_skops_save_and_report_writes_keeps_previous_files(tmp_path, monkeypatch):
    model = save(LogisticRegression(C=3.0), tmp_path / "model.skops", format="skops")
    report = write_text(tmp_path / "report.md", "# Report v1\n")
    metrics = write_json(tmp_path / "metrics.json", {"accuracy": 0.5})
    before = {p: digest(p) for p in (model, report, metrics)}

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # all data written, then the flush fails
    for write in (
        lambda: save(LogisticRegression(C=5.0), model, format="skops", overwrite=True),
        lambda: write_text(report, "# Report v2\n" * 1000, overwrite=True),
        lambda: write_json(metrics, {"accuracy": 0.9}, overwrite=True),
    ):
        with pytest.raises(OSError, match="No space left"):
            write()
    assert {p: digest(p) for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in before)


def tree_state(root: Path) -> dict:
    """Content and modification time of every file under ``root``."""
    return {
        os.fspath(p.relative_to(root)): (digest(p), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_split_folders_interrupted_leaves_nothing_and_never_touches_the_source(
    tmp_path, monkeypatch
):
    src = make_ultrasound_folder(tmp_path / "scans", n_per_class=4, image_size=16, random_state=0)
    original = tree_state(src)
    copies = []

    def copy_then_fail(source, target):
        if len(copies) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the copy
        copies.append(source)
        return shutil_copy2(source, target)

    import shutil

    shutil_copy2 = shutil.copy2
    monkeypatch.setattr(shutil, "copy2", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        split_folders(src, tmp_path / "split", random_state=0, verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scans"]  # no half-made split
    assert tree_state(src) == original
    monkeypatch.setattr(shutil, "copy2", shutil_copy2)
    split_folders(src, tmp_path / "split", random_state=0, verbose=False)
    assert tree_state(src) == original  # copied, never moved or modified
