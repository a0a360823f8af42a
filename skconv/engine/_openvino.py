"""OpenVINO on a CPU's cores: the exported feature graph, one stream per core.

The same ONNX graph ONNX Runtime runs (uint8 pixels in, pooled features out),
compiled by OpenVINO for this CPU with as many streams as the transformer has threads;
each thread runs its own chunks of images on its own infer request, as ONNX Runtime's
:class:`~skconv.engine.ParallelSession` does. On the 2-core benchmark machine (Ice Lake,
AVX-512 VNNI) it ran EfficientNet-Lite0 faster than ONNX Runtime end to end
(``benchmarks/results/engine_choice.md``). Inference precision is pinned to f32: on CPUs
with bfloat16 units OpenVINO would otherwise compute in bfloat16 and move the features.
Importing this module imports neither torch nor OpenVINO.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import sys
import threading

import numpy as np

from ._ort import ParallelRuns
from .cache import cached_files, engine_cache_key, in_memory

__all__ = ["OpenVinoEngine", "kept_signal_stack", "openvino_available", "read_model"]


def openvino_available() -> bool:
    """Whether the ``openvino`` package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def kept_signal_stack():
    """Give the calling thread back the alternate signal stack it had before OpenVINO.

    OpenVINO's CPU plugin (2026.4) gives the thread that compiles a model a signal stack
    of its own, and the model, when destroyed, sets back the one it found. Models
    destroyed out of order so leave a freed stack in place, and the next signal the
    thread handles (a child process's SIGCHLD, as at the end of a process that ran a
    Dask cluster) dies of a SIGSEGV. Put back after each compile, every model finds and
    restores the thread's own stack (Python's faulthandler's, or none).

    Examples
    --------
    >>> from skconv.engine._openvino import kept_signal_stack
    >>> with kept_signal_stack():
    ...     pass
    """
    sigaltstack = _sigaltstack()
    saved = ctypes.create_string_buffer(64)  # a stack_t, as the C library lays it out
    if sigaltstack is None or sigaltstack(None, saved) != 0:
        yield
        return
    try:
        yield
    finally:
        sigaltstack(saved, None)


@functools.cache
def _sigaltstack():
    if sys.platform == "win32":
        return None
    return getattr(ctypes.CDLL(None), "sigaltstack", None)


@functools.cache
def _core():
    """The process's one OpenVINO Core: compiling on a new Core each time took 3x longer."""
    import openvino as ov

    return ov.Core()


def _convert(model_bytes: bytes):
    # read_model, not convert_model: the same ONNX frontend, 0.1 s against 0.8 s for a
    # ResNet-18 (convert_model's extra passes; the probe checks the result either way).
    return _core().read_model(io.BytesIO(model_bytes))


def _cached_model(model_bytes: bytes, cache_key: str):
    import openvino as ov

    def build(folder):
        # fp32 weights: save_model would halve them to fp16 by default and move features.
        ov.save_model(_convert(model_bytes), folder / "model.xml", compress_to_fp16=False)

    def load(folder):
        return _core().read_model(folder / "model.xml")

    key = engine_cache_key(cache_key, ov.__version__)
    return cached_files(
        "openvino", key, ("model.xml", "model.bin"), build, load, lambda: _convert(model_bytes)
    )


def read_model(xml: bytes, weights: bytes):
    """An OpenVINO model from its IR bytes (``xml`` and ``weights``), as saved by
    :func:`skconv.engine.quantize.quantize_features`."""
    import openvino as ov

    buffer = np.frombuffer(weights, dtype=np.uint8)
    return _core().read_model(model=xml.decode(), weights=ov.Tensor(buffer))


def _compile(model, n_threads: int):
    config = {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": str(n_threads),
        "INFERENCE_NUM_THREADS": str(n_threads),
        "INFERENCE_PRECISION_HINT": "f32",
    }
    with kept_signal_stack():
        return _core().compile_model(model, "CPU", config)


class OpenVinoEngine(ParallelRuns):
    """Run an exported pooled-feature graph (uint8 pixels in) with OpenVINO on the CPU.

    Parameters
    ----------
    model_bytes : bytes
        The ONNX model: input ``"image"`` ``(n, s, s, 3)`` uint8, output
        ``"features"`` ``(n, d)`` float32.
    preprocessing : Preprocessing
        The resize and crop of the pixels the graph takes.
    n_threads : int
        Runs at once, and OpenVINO streams (one core each).
    cache_key : str or None, default=None
        The network's key in the engine cache: the converted model is kept on disk and
        the compiled one in this process. None converts and compiles afresh.
    model : callable or None, default=None
        Returns an ``openvino.Model`` to run instead of ``model_bytes`` converted (the
        int8 graph of :func:`skconv.engine.quantize.quantize_features`); with a
        ``cache_key``, called only when this process has not compiled that key.
    """

    kind = "openvino"
    pixels = "uint8"

    def __init__(
        self, model_bytes: bytes, preprocessing, n_threads: int, cache_key=None, model=None
    ):
        super().__init__(n_threads)
        self.model_bytes = model_bytes
        self.preprocessing = preprocessing
        if model is not None:
            build = lambda: _compile(model(), self.n_threads)  # noqa: E731
        elif cache_key is None:
            build = lambda: _compile(_convert(model_bytes), self.n_threads)  # noqa: E731
        else:
            build = lambda: _compile(_cached_model(model_bytes, cache_key), self.n_threads)  # noqa: E731
        key = ("openvino", cache_key, self.n_threads)
        self.compiled = build() if cache_key is None else in_memory(key, build)
        self._requests = threading.local()

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """One run on the calling thread's infer request: features of a uint8 batch."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        import openvino as ov

        # The pixels as the request's input tensor, shared, not copied: infer(dict)
        # copies them into the request's own tensor after resizing it, and two threads
        # doing that at once were seen to deadlock inside OpenVINO (2026.4).
        request.set_input_tensor(ov.Tensor(np.ascontiguousarray(pixels), shared_memory=True))
        request.infer()
        return request.get_output_tensor(0).data.copy()

    __call__ = ParallelRuns.run_in_chunks
