"""How a fitted network runs: devices and chunks, folding, feature graphs, the engines.

:class:`~skconv.ConvFeatureTransformer` keeps the network as loaded (``module_``: what is
pickled and what :mod:`skconv.explain` differentiates through) and runs it through an
*engine* built from it once, on first use:

* :class:`~skconv.engine.engines.TorchEngine`: an inference copy with every batch norm
  folded into the convolution before it (:func:`fold_batch_norms`), channels-last, run
  under :func:`torch.inference_mode` in chunks of a few images on a CPU (small batches
  keep activations in the caches), optionally compiled with :func:`torch.compile`;
* :class:`~skconv.engine.engines.OnnxEngine`: the same computation exported to ONNX
  (uint8 RGB pixels in, normalisation, every requested stage, pooling and test-time
  mirroring inside the graph) and run by ONNX Runtime, about twice as fast as torch on
  a CPU (``benchmarks/results/throughput.md``);
* :class:`~skconv.engine.OpenVinoEngine`: the same ONNX graph compiled by OpenVINO,
  one stream per core (``benchmarks/results/engine_choice.md``), or that graph quantized
  to int8 by NNCF, calibrated on images of ``fit`` (``precision="int8"``:
  :mod:`skconv.engine.quantize`, ``benchmarks/results/int8.md``).

:func:`build_engine` chooses: ``"auto"`` takes ONNX Runtime on a CPU when the exported
graph matches torch on a probe batch, else torch with a warning that says why; OpenVINO
runs when named. :class:`LazyEngine` builds it once
per fitted transformer, thread-safely, and is never pickled. :func:`extract` runs an engine over
``X``, decoding
batch by batch, so memory stays flat whatever the number of images.

The parts, one job each: ``devices`` (devices, chunks, mirroring), ``folding``,
``graphs`` (what is computed, and its ONNX export), ``engines``, ``run`` (the batched
loop), ``pooling``, ``memory``, ``_ort`` (parallel runs, ONNX Runtime's sessions),
``_openvino`` and ``quantize`` (int8). Names
are imported on first use: ``import skconv.engine`` imports no torch, so that the
torch-free runtime (:class:`skconv.export.OnnxClassifier`) can use ``ParallelSession``.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

# Where each public name lives, imported on first use (as skconv/__init__.py does).
_LAZY = {
    "ONNX_CHUNK": "_ort",
    "ParallelSession": "_ort",
    "available_cores": "_ort",
    "ordered_map": "_ort",
    "cpu_chunk_size": "devices",
    "forward_in_chunks": "devices",
    "mean_of_views": "devices",
    "mirror_views": "devices",
    "prepare_module": "devices",
    "resolve_device": "devices",
    "fold_batch_norms": "folding",
    "folding_example": "folding",
    "OPSET": "graphs",
    "FeatureSpec": "graphs",
    "FromPixels": "graphs",
    "PooledFeatures": "graphs",
    "export_features": "graphs",
    "export_onnx_bytes": "graphs",
    "ENGINES": "engines",
    "LazyEngine": "engines",
    "PRECISIONS": "engines",
    "calibrate_int8": "quantize",
    "int8_available": "quantize",
    "int8_graph": "quantize",
    "OnnxEngine": "engines",
    "OpenVinoEngine": "_openvino",
    "TorchEngine": "engines",
    "build_engine": "engines",
    "extract": "run",
    "cache_dir": "cache",
    "engine_cache_key": "cache",
    "GEM_P": "pooling",
    "POOLINGS": "pooling",
    "pool_features": "pooling",
    "reuse_freed_memory": "memory",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
