"""How a fitted network runs: batch-norm folding, the torch and ONNX Runtime engines."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from skconv import ConvFeatureTransformer
from skconv.engine import (
    FeatureSpec,
    LazyEngine,
    OnnxEngine,
    build_engine,
    fold_batch_norms,
    mean_of_views,
    mirror_views,
)
from skconv.engine._openvino import openvino_available
from skconv.engine.run import _Batches, _prefetched
from skconv.images import Preprocessing, crop_batch
from skconv.zoo import load_backbone


class _Net(nn.Module):
    """A feature net (``net(x, stages) -> list``) with a configurable wiring."""

    def __init__(self, wiring: str):
        super().__init__()
        self.wiring = wiring
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=wiring == "bias")
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        for bn in (self.bn, self.bn2):  # non-trivial statistics, as after training
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 2)
            bn.bias.data.uniform_(-1, 1)

    @property
    def stage_names(self):
        return ["final"]

    def forward(self, x, stages=("final",)):
        y = self.conv(x)
        if self.wiring == "skip":  # the conv output is read twice: must not be folded
            out = self.bn(y) + y
        elif self.wiring == "shared":  # one conv used twice
            out = self.bn2(self.conv2(self.conv2(y)))
        else:
            out = self.bn2(self.conv2(torch.relu(self.bn(y))))
        return [out]


def _max_rel_diff(a_maps, b_maps):
    return max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(a_maps, b_maps))


@pytest.mark.parametrize("wiring", ["plain", "bias"])
def test_folding_keeps_outputs_and_leaves_the_original_alone(wiring):
    torch.manual_seed(0)
    net = _Net(wiring).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    folded, n = fold_batch_norms(net, x)
    assert n == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert _max_rel_diff(net(x), folded(torch.clone(x))) < 1e-5
        assert _max_rel_diff(net(x + 1), folded(x + 1)) < 1e-5  # not only on the probe
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_a_conv_output_read_twice_is_detected_and_nothing_changes():
    torch.manual_seed(0)
    net = _Net("skip").eval()
    with pytest.warns(RuntimeWarning, match="unfolded network"):
        folded, n = fold_batch_norms(net, torch.randn(2, 3, 8, 8))
    assert folded is net and n == 0


def test_a_conv_run_twice_is_not_folded():
    torch.manual_seed(0)
    net = _Net("shared").eval()
    folded, n = fold_batch_norms(net, torch.randn(2, 3, 8, 8))
    assert n == 0 and folded is net


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(_Net("plain"), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(
    "backbone, expected",
    [
        ("efficientnet_lite0", 49),  # every batch norm, through timm's BatchNormAct2d
        ("resnet18", 19),  # torchvision FX body; conv1 is a stage and keeps its bn
        ("mobilenet_v3_small", 34),
    ],
)
def test_zoo_backbones_fold_with_all_stages_unchanged(backbone, expected):
    weights = "DEFAULT" if backbone == "efficientnet_lite0" else None
    net = load_backbone(backbone, weights).module.eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    folded, n = fold_batch_norms(net, x, net.stage_names)
    assert n == expected
    probe = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _max_rel_diff(net(probe, net.stage_names), folded(probe, net.stage_names)) < 1e-4


def test_torch_engine_runs_a_folded_copy_and_keeps_module_as_loaded():
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 48), dtype=np.uint8)
    t = ConvFeatureTransformer(weights=None, image_size=64, engine="torch").fit(images)
    out = t.transform(images)
    engine = t._engine.get()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in engine.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in t.module_.modules())
    batch = torch.stack([t.preprocessing_(img) for img in _pil(images)])
    with torch.inference_mode():
        (fmap,) = t.module_(batch.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(out, fmap.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)


def _pil(images):
    from skconv.images import load_image

    return [load_image(img) for img in images]


# -- engines ----------------------------------------------------------------------------

CPU = torch.device("cpu")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
SPEC = FeatureSpec(("final",), "avg", False, Preprocessing(image_size=32))


@pytest.fixture(scope="module")
def resnet():
    return load_backbone("resnet18", weights=None).module.eval()


@pytest.mark.parametrize(
    "stages, pooling, tta",
    [(["final"], "avg", False), (["layer2", "final"], "avgmax", True), (["layer3"], "gem", False)],
)
def test_onnx_engine_matches_torch_for_every_stage_pooling_and_mirroring(
    resnet, stages, pooling, tta
):
    prep = Preprocessing(image_size=32)
    spec = FeatureSpec(tuple(stages), pooling, tta, prep)
    torch_engine = build_engine("torch", resnet, spec, device=CPU)
    onnx_engine = build_engine("onnxruntime", resnet, spec, device=CPU)
    assert (torch_engine.kind, onnx_engine.kind) == ("torch", "onnxruntime")
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    want = torch_engine(prep.normalize(floats))
    np.testing.assert_allclose(onnx_engine(pixels), want, rtol=1e-4, atol=1e-5)


class _RecordingSession:
    """An ONNX Runtime session that records the size and thread of each run.

    Its first two runs wait for each other (a barrier): they must run at the same time,
    on two threads, or the test fails with BrokenBarrierError.
    """

    def __init__(self, session):
        self.session, self.sizes, self.threads = session, [], set()
        self._lock = threading.Lock()
        self._together = threading.Barrier(2, timeout=30)

    def run(self, names, feeds):
        with self._lock:
            self.sizes.append(len(feeds["image"]))
            self.threads.add(threading.get_ident())
            first_two = len(self.sizes) <= 2
        if first_two:
            self._together.wait()
        return self.session.run(names, feeds)


def test_onnx_engine_runs_chunks_of_a_few_images_on_its_threads_at_once(resnet):
    built = build_engine("onnxruntime", resnet, SPEC, device=CPU)
    options = built.session.get_session_options()
    assert options.intra_op_num_threads == 1  # one core per run, runs side by side
    engine = OnnxEngine(built.model_bytes, SPEC.preprocessing, n_threads=3)
    pixels = np.random.default_rng(2).integers(0, 256, (19, 32, 32, 3), dtype=np.uint8)
    whole = engine.run(pixels)
    engine.session = recorder = _RecordingSession(engine.session)
    chunked = engine(pixels)
    assert sorted(recorder.sizes) == [6, 6, 7] and len(recorder.threads) >= 2  # at once
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    # a few images are shared among the threads rather than run by one
    recorder.sizes.clear()
    np.testing.assert_allclose(engine(pixels[:6]), whole[:6], rtol=1e-5, atol=1e-6)
    assert recorder.sizes == [2, 2, 2]


def test_extract_decodes_and_runs_each_chunk_on_the_onnx_engines_threads(resnet, tmp_path):
    from PIL import Image

    from skconv.engine import extract

    paths = []
    for i in range(11):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((40, 36, 3), 20 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    built = build_engine("onnxruntime", resnet, SPEC, device=CPU)
    engine = OnnxEngine(built.model_bytes, SPEC.preprocessing, n_threads=2)
    engine.session = recorder = _RecordingSession(engine.session)
    features = extract(engine, paths, 512, batch_size=4)
    assert sorted(recorder.sizes) == [2, 3, 3, 3] and len(recorder.threads) == 2
    want = engine.session.session.run(
        ["features"], {"image": crop_batch(paths, range(11), SPEC.preprocessing)}
    )[0]
    np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)


def test_extract_leaves_no_chunk_running_after_an_error_of_its_own(resnet, tmp_path):
    import time

    from skconv.engine import extract

    built = build_engine("onnxruntime", resnet, SPEC, device=CPU)
    engine = OnnxEngine(built.model_bytes, SPEC.preprocessing, n_threads=2)
    images = np.zeros((40, 32, 32, 3), dtype=np.uint8)
    started, finished = [], []

    def slow_run(pixels):
        started.append(1)
        time.sleep(0.0 if len(started) == 1 else 0.3)  # the first fails fast, others run on
        finished.append(1)
        return np.zeros((len(pixels), 7), dtype=np.float32)  # not the 512 columns promised

    engine.run = slow_run
    with pytest.raises(ValueError, match="broadcast"):
        extract(engine, images, 512, batch_size=4)
    assert 2 <= len(started) < 10  # the runs had begun, not all of them
    assert len(finished) == len(started)  # and none is still running


def test_auto_falls_back_to_torch_with_a_reason_and_onnxruntime_refuses(resnet, monkeypatch):
    import skconv.engine.engines as inference

    def broken(*args, **kwargs):
        raise RuntimeError("operator not supported")

    monkeypatch.setattr(inference, "export_features", broken)
    with pytest.warns(RuntimeWarning, match="'resnet18'.*operator not supported.*torch"):
        assert build_engine("auto", resnet, SPEC, device=CPU, backbone="resnet18").kind == "torch"
    with pytest.raises(ValueError, match="engine='onnxruntime' cannot run backbone 'resnet18'"):
        build_engine("onnxruntime", resnet, SPEC, device=CPU, backbone="resnet18")


@needs_openvino
def test_auto_passes_over_a_failing_openvino_to_onnxruntime_with_a_reason(resnet, monkeypatch):
    import skconv.engine.engines as inference

    def broken(*args, **kwargs):
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(inference.OpenVinoEngine, "__init__", broken)
    with pytest.warns(RuntimeWarning, match="OpenVINO cannot run.*no CPU plugin.*ONNX Runtime"):
        assert build_engine("auto", resnet, SPEC, device=CPU).kind == "onnxruntime"


def test_a_graph_that_differs_from_torch_is_not_used(resnet, monkeypatch):
    import skconv.engine.engines as inference

    for engine in (inference.OnnxEngine, inference.OpenVinoEngine):
        monkeypatch.setattr(engine, "__call__", lambda self, batch: np.zeros((2, 512)))
    with pytest.warns(RuntimeWarning, match="differs from torch"):
        assert build_engine("auto", resnet, SPEC, device=CPU).kind == "torch"


@needs_openvino
def test_openvino_engine_matches_torch(resnet):
    engine = build_engine("openvino", resnet, SPEC, device=CPU)
    assert engine.kind == "openvino" and engine.n_threads == torch.get_num_threads()
    reference = build_engine("torch", resnet, SPEC, device=CPU)
    pixels = np.random.default_rng(3).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    want = reference(SPEC.preprocessing.normalize(floats))
    got = engine(pixels)  # in chunks, on the engine's threads
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    np.testing.assert_allclose(got, engine.run(pixels), rtol=1e-5, atol=1e-6)


@needs_openvino
def test_a_failing_openvino_is_refused_with_its_reason(resnet, monkeypatch):
    import skconv.engine.engines as inference

    def broken(self, *args, **kwargs):
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(inference.OpenVinoEngine, "__init__", broken)
    with pytest.raises(ValueError, match="engine='openvino' cannot run.*no CPU plugin"):
        build_engine("openvino", resnet, SPEC, device=CPU)


@needs_openvino
def test_the_engine_cache_exports_once_and_rebuilds_a_corrupt_entry(resnet, monkeypatch, tmp_path):
    import skconv.engine.cache as cache
    import skconv.engine.engines as inference

    monkeypatch.setenv("SKCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_MEMORY", {})
    exports = []
    real_export = inference.export_features
    monkeypatch.setattr(
        inference, "export_features", lambda *a: exports.append(1) or real_export(*a)
    )
    pixels = np.random.default_rng(4).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)

    def features():
        return build_engine("openvino", resnet, SPEC, device=CPU, cache_key="k1")(pixels)

    want = features()
    assert len(exports) == 1
    np.testing.assert_array_equal(features(), want)  # a clone in this process
    cache._MEMORY.clear()  # a new process: from disk
    np.testing.assert_array_equal(features(), want)
    assert len(exports) == 1
    onnx = tmp_path / "onnx" / "k1" / "features.onnx"
    ir = next((tmp_path / "openvino").glob("*/model.bin"))
    for damaged in (onnx, ir):
        damaged.write_bytes(damaged.read_bytes()[:100])  # truncated on disk
    cache._MEMORY.clear()
    np.testing.assert_array_equal(features(), want)  # rebuilt, not trusted
    assert len(exports) == 2
    assert sorted(p.name for p in onnx.parent.iterdir()) == ["features.onnx", "manifest.json"]


_ENGINES_DESTROYED_OUT_OF_ORDER = """
import gc, os, signal
import torch
from skconv.engine import FeatureSpec, build_engine
from skconv.images import Preprocessing
from skconv.zoo import load_backbone

net = load_backbone("resnet18", weights=None).module.eval()
spec = FeatureSpec(("final",), "avg", False, Preprocessing(image_size=32))
first = build_engine("openvino", net, spec, device=torch.device("cpu"))
second = build_engine("openvino", net, spec, device=torch.device("cpu"))
del first; gc.collect(); del second; gc.collect()
signal.signal(signal.SIGUSR1, lambda *args: print("handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


@needs_openvino
def test_a_signal_after_openvino_models_go_out_of_order_is_handled():
    # OpenVINO gives the compiling thread a signal stack of its own and each model puts
    # back the one it found: destroyed out of order, the thread is left with a freed
    # stack and dies at its next signal (first seen as a SIGSEGV at the end of a test
    # process that had run a Dask cluster). A child process, as the failure is a crash.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _ENGINES_DESTROYED_OUT_OF_ORDER],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (done.returncode, done.stdout) == (0, "handled\n"), done.stderr[-2000:]


def test_without_a_cache_folder_nothing_is_written(monkeypatch, tmp_path):
    from skconv.engine.cache import cached_files

    monkeypatch.setenv("SKCONV_CACHE_DIR", "off")
    monkeypatch.chdir(tmp_path)

    def build(folder):
        raise AssertionError("no file is built without a cache folder")

    assert cached_files("onnx", "k", ("a",), build, lambda folder: 1, lambda: 2) == 2
    assert list(tmp_path.iterdir()) == []


def test_an_engine_that_is_not_installed_is_refused_by_name(resnet, monkeypatch):
    import skconv.engine.engines as inference

    monkeypatch.setattr(inference, "openvino_available", lambda: False)
    with pytest.raises(ValueError, match="'openvino'.*not installed.*'torch', 'onnxruntime'"):
        build_engine("openvino", resnet, SPEC, device=CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not installed is no reason to warn
        assert build_engine("auto", resnet, SPEC, device=CPU).kind == "onnxruntime"


def test_auto_keeps_torch_for_compile(resnet):
    assert build_engine("auto", resnet, SPEC, device=CPU, compile=True).kind == "torch"


def test_lazy_engine_is_built_once_across_threads():
    calls = []

    def build():
        calls.append(1)
        return object()

    lazy = LazyEngine(build)
    got = []
    threads = [threading.Thread(target=lambda: got.append(lazy.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(g is got[0] for g in got)


def test_mirror_views_and_their_mean():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    views = mirror_views(x, tta=True)
    assert torch.equal(views[1][..., 0], x[..., 2])
    assert mean_of_views(mirror_views(x, tta=False)) is x
    assert torch.equal(mean_of_views(views, spatial=True), x)


def test_background_decoding_for_accelerators_yields_every_batch_in_order():
    # The path a GPU takes (decoding the next batch while the current one computes),
    # run here on the CPU.
    images = np.random.default_rng(0).integers(0, 256, (6, 40, 48), dtype=np.uint8)
    batches = _Batches(images, Preprocessing(image_size=16), batch_size=4)
    got = list(_prefetched(batches))
    assert [len(b) for b in got] == [4, 2]
    for i, batch in enumerate(got):
        assert torch.equal(batch, batches[i])
    pixels = _Batches(images, Preprocessing(image_size=16), batch_size=4, pixels="uint8")
    assert pixels[1].dtype == np.uint8 and pixels[1].shape == (2, 16, 16, 3)
