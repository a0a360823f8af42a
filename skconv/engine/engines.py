"""The engines: torch, ONNX Runtime and OpenVINO, the choice (with a probe), built lazily."""

from __future__ import annotations

import hashlib
import threading
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..images import Preprocessing
from ._openvino import OpenVinoEngine, openvino_available, read_model
from ._ort import ParallelRuns, ParallelSession
from .cache import cached_files, in_memory
from .devices import cpu_chunk_size
from .folding import fold_batch_norms, folding_example
from .graphs import FeatureSpec, PooledFeatures, export_features

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "LazyEngine",
    "OnnxEngine",
    "OpenVinoEngine",
    "TorchEngine",
    "build_engine",
]

#: Values of ``ConvFeatureTransformer(engine=...)``.
ENGINES = ("auto", "torch", "onnxruntime", "openvino")
#: The exported-graph engines, and those ``"auto"`` tries on a CPU, fastest first:
#: OpenVINO ran 1.2x (Ice Lake) to 1.5x (Zen 5) ONNX Runtime's steady state and 1.65x
#: its first call (benchmarks/results/engine_choice.md, throughput_engines.md). It
#: became auto's first choice once ``_openvino.kept_signal_stack``
#: mended the SIGSEGV that its compiled models left behind.
_EXPORTED = ("openvino", "onnxruntime")
_AUTO = ("openvino", "onnxruntime")
_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
#: Values of ``ConvFeatureTransformer(precision=...)``; int8 runs on OpenVINO only.
PRECISIONS = ("fp32", "int8")


class TorchEngine:
    """Run the pooled-feature computation in torch.

    Batches are normalised float tensors, channels-last (:func:`skconv.images.load_batch`).

    Parameters
    ----------
    module : torch.nn.Module
        The feature network as loaded, on its device, in eval mode.
    spec : FeatureSpec
        What to compute.
    device : torch.device
        Where ``module`` lives.
    compile : bool, default=False
        Compile the computation with :func:`torch.compile` on first use.
    """

    kind = "torch"
    pixels = "normalized"

    def __init__(
        self, module: nn.Module, spec: FeatureSpec, device: torch.device, compile: bool = False
    ):
        self.device = device
        self.preprocessing = spec.preprocessing
        example = folding_example(spec.preprocessing.image_size, device)
        folded, _ = fold_batch_norms(module, example, spec.stages)
        self.model = PooledFeatures(folded, spec).eval()
        self.compiled = torch.compile(self.model, dynamic=False) if compile else None
        self._compile_lock = threading.Lock()

    def chunk_size(self, batch_size: int) -> int:
        """Images per forward pass: ``batch_size``, or fewer on a CPU (:func:`cpu_chunk_size`)."""
        return cpu_chunk_size(batch_size, self.device)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """Pooled features ``(n, d)`` of a normalised batch."""
        batch = batch.to(self.device, non_blocking=True)
        if self.device.type not in ("cpu", "cuda"):
            batch = batch.contiguous()
        chunk = self.chunk_size(len(batch))
        with torch.inference_mode():
            parts = [self._forward(part, chunk) for part in batch.split(chunk)]
        return torch.cat(parts).float().cpu().numpy()

    def _forward(self, batch: torch.Tensor, chunk: int) -> torch.Tensor:
        if self.compiled is None:
            return self.model(batch)
        # A fixed batch shape compiles once: pad the last, shorter chunk.
        n = len(batch)
        if n < chunk:
            pad = batch.new_zeros((chunk - n, *batch.shape[1:]))
            batch = torch.cat([batch, pad]).contiguous(memory_format=torch.channels_last)
        with self._compile_lock:  # compiling is not thread-safe; running compiled code is
            return self.compiled(batch)[:n]


class OnnxEngine(ParallelSession):
    """Run an exported pooled-feature graph (uint8 pixels in) with ONNX Runtime.

    Each run takes a few images (:data:`~skconv.engine.ONNX_CHUNK`) on one thread, and
    ``n_threads`` runs go at once, one per core (:class:`~skconv.engine.ParallelSession`).

    Parameters
    ----------
    model_bytes : bytes
        The ONNX model: input ``"image"`` ``(n, s, s, 3)`` uint8, output
        ``"features"`` ``(n, d)`` float32.
    preprocessing : Preprocessing
        The resize and crop of the pixels the graph takes.
    n_threads : int
        Runs at once (torch's thread count: the same cores).
    """

    kind = "onnxruntime"
    pixels = "uint8"
    device = torch.device("cpu")

    def __init__(self, model_bytes: bytes, preprocessing: Preprocessing, n_threads: int):
        super().__init__(model_bytes, n_threads)
        self.model_bytes = model_bytes
        self.preprocessing = preprocessing

    __call__ = ParallelRuns.run_in_chunks

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """One run of the graph on the calling thread: features of a uint8 batch."""
        return self.session.run(["features"], {"image": np.ascontiguousarray(pixels)})[0]


def build_engine(
    kind: str,
    module: nn.Module,
    spec: FeatureSpec,
    *,
    device: torch.device,
    compile: bool = False,
    backbone: str = "",
    cache_key: str | None = None,
    int8: tuple | None = None,
):
    """Build the engine that computes pooled features of the fitted network.

    Parameters
    ----------
    kind : {"auto", "torch", "onnxruntime", "openvino"}
        ``"auto"``: on a CPU, the network exported to ONNX and compiled by OpenVINO
        (where the ``skconv[openvino]`` extra is installed) or run by ONNX Runtime,
        the first whose output matches torch on a probe batch (every stage, the
        pooling and the mirroring); an engine passed over, or torch when neither
        matches, comes with a RuntimeWarning that says why. Torch on other devices and
        with ``compile``. ``"onnxruntime"`` and ``"openvino"`` name one engine and raise
        instead of falling back.
    module : torch.nn.Module
        The feature network as loaded (on ``device``, eval mode).
    spec : FeatureSpec
        What to compute.
    device : torch.device
        Where ``module`` lives.
    compile : bool, default=False
        Compile the torch engine (and so use it).
    backbone : str, default=""
        The backbone's name, for messages.
    cache_key : str or None, default=None
        The network's key in the engine cache (:mod:`skconv.engine.cache`): the
        exported graph and OpenVINO's model are made once per key, in this process
        and on disk. None exports afresh.
    int8 : tuple or None, default=None
        The ``(xml, weights)`` of :func:`int8_graph`: run that quantized graph with
        OpenVINO (``kind`` must be ``"auto"`` or ``"openvino"``), with no probe, since
        its features differ from torch's by design.

    Returns
    -------
    engine : TorchEngine, OnnxEngine or OpenVinoEngine

    Raises
    ------
    ValueError
        With ``kind="onnxruntime"`` or ``"openvino"``, if the device is not a CPU, the
        engine is not installed, the network does not export, or the exported graph
        does not match torch; the message names the backbone and the engines available.
    """
    if int8 is not None:
        if kind not in ("auto", "openvino") or device.type != "cpu":
            raise ValueError(
                f"precision='int8' runs on OpenVINO on the CPU, not engine={kind!r} on "
                f"device={str(device)!r}."
            )
        return _int8_engine(int8, spec.preprocessing)
    torch_engine = TorchEngine(module, spec, device, compile=compile)
    if kind == "torch" or (kind == "auto" and (device.type != "cpu" or compile)):
        return torch_engine
    what = f"backbone {backbone!r}" if backbone else "this backbone"
    if device.type != "cpu":
        raise ValueError(
            f"engine={kind!r} runs on the CPU, but device={str(device)!r}; use "
            "engine='torch' or 'auto' on an accelerator."
        )
    installed = [name for name in _EXPORTED if name != "openvino" or openvino_available()]
    if kind != "auto" and kind not in installed:
        raise ValueError(
            f"engine={kind!r} needs the {kind} package, which is not installed (pip "
            f"install {kind}); available engines: {', '.join(map(repr, ['torch', *installed]))}."
        )
    candidates = [name for name in _AUTO if name in installed] if kind == "auto" else [kind]
    reasons = []
    try:
        graph = _exported_graph(torch_engine, spec, cache_key)
    except Exception as exc:  # any exporter failure means "no exported engine"
        reasons.append(f"it does not export to ONNX ({type(exc).__name__}: {exc})")
        candidates = []
    for name in candidates:
        try:
            engine = _exported_engine(name, graph, spec.preprocessing, cache_key)
            mismatch = _probe_mismatch(torch_engine, engine, spec.preprocessing)
        except Exception as exc:  # any runtime failure means "not this engine"
            reason = f"{_NAMES[name]} cannot run it ({type(exc).__name__}: {exc})"
        else:
            if mismatch is None:
                if reasons:
                    warnings.warn(
                        f"{'; '.join(reasons)}; using {_NAMES[name]} for {what} instead "
                        f"(engine={name!r} silences this).",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                return engine
            reason = f"the graph {_NAMES[name]} runs differs from torch ({mismatch})"
        reasons.append(reason)
    if kind != "auto":
        raise ValueError(f"engine={kind!r} cannot run {what}: {'; '.join(reasons)}.")
    warnings.warn(
        f"No exported engine runs {what}: {'; '.join(reasons)}; using torch instead "
        "(engine='torch' silences this).",
        RuntimeWarning,
        stacklevel=3,
    )
    return torch_engine


def _exported_graph(torch_engine: TorchEngine, spec: FeatureSpec, cache_key: str | None):
    def export() -> bytes:
        return export_features(torch_engine.model.net, spec)

    if cache_key is None:
        return export()

    def build(folder):
        (folder / "features.onnx").write_bytes(export())

    def load(folder) -> bytes:
        return (folder / "features.onnx").read_bytes()

    return in_memory(
        ("onnx", cache_key),
        lambda: cached_files("onnx", cache_key, ("features.onnx",), build, load, export),
    )


def _int8_engine(int8: tuple, preprocessing: Preprocessing) -> OpenVinoEngine:
    if not openvino_available():  # a pickle of an int8 transformer, opened without it
        raise ValueError(
            "This transformer was fitted with precision='int8', which runs on OpenVINO, "
            "and openvino is not installed (pip install 'skconv[openvino]')."
        )
    # Compiled once per quantized graph in this process: clones share it.
    key = "int8-" + hashlib.sha256(int8[0] + int8[1]).hexdigest()
    threads = torch.get_num_threads()
    return OpenVinoEngine(b"", preprocessing, threads, key, model=lambda: read_model(*int8))


def _exported_engine(name: str, graph: bytes, preprocessing: Preprocessing, cache_key):
    threads = torch.get_num_threads()
    if name == "openvino":
        return OpenVinoEngine(graph, preprocessing, n_threads=threads, cache_key=cache_key)
    return OnnxEngine(graph, preprocessing, n_threads=threads)


def _probe_mismatch(torch_engine, onnx_engine, preprocessing, rtol: float = 1e-3):
    """None when both engines agree on a probe batch, else a description of the gap."""
    size = preprocessing.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    # The crop itself: the pixels each engine sees, with no resize in between.
    floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    normalized = preprocessing.normalize(floats).contiguous(memory_format=torch.channels_last)
    want = torch_engine(normalized)
    have = onnx_engine(pixels)
    if have.shape != want.shape:
        return f"shape {have.shape} instead of {want.shape}"
    gap = float(np.abs(have - want).max())
    scale = max(float(np.abs(want).max()), 1e-6)
    if gap > rtol * scale:
        return f"largest difference {gap:.3g} on features up to {scale:.3g}"
    return None


class LazyEngine:
    """An engine built on first use, once, thread-safely; never pickled.

    A fitted transformer holds one: transforms from several threads share the engine
    and none of them changes the estimator's attributes (the holder stays the same
    object). The transformer leaves it out of its pickles: the receiving process
    builds its own on first use.

    Parameters
    ----------
    build : callable
        Returns the engine; called at most once per process.
    """

    def __init__(self, build: Callable):
        self.build = build
        self._engine = None
        self._lock = threading.Lock()

    def get(self):
        """The engine, built by the first caller."""
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self.build()
                engine = self._engine
        return engine

    @property
    def built(self) -> bool:
        """Whether the engine exists in this process."""
        return self._engine is not None

    def __reduce__(self):
        # An engine holds compiled code, an ONNX Runtime session and a lock: none of
        # them travels. Its owner pickles what it was built from and makes a new one.
        raise TypeError("A LazyEngine is not pickled; pickle the estimator that owns it.")
