"""int8: post-training static quantization of a feature graph, with NNCF for OpenVINO.

The recipe, and why (``benchmarks/results/int8.md``, EfficientNet-Lite0 on BUSI, 2-core
Ice Lake with AVX-512 VNNI):

- Per-channel symmetric int8 weights, asymmetric per-tensor int8 activations (NNCF's
  ``MIXED`` preset), ranges from the calibration images.
- Every layer's weights kept to 7 bits (NNCF's overflow fix on all layers). With the
  full 8 bits, OpenVINO's CPU kernels that sum pairs of uint8 x int8 products in 16 bits
  saturate, and the features moved by a mean cosine of 0.82; on every layer but the
  first, as NNCF's default does, 0.85; on all, 0.98.
- The stem convolution kept in fp32: its three input channels gain little from int8
  and its error reaches every later layer.
- Full bias correction (not the fast one): each layer's mean output shift is corrected
  on the calibration images, which lifted the mean cosine from 0.982 to 0.993.

:func:`calibrate_int8` is what ``ConvFeatureTransformer(precision="int8").fit`` calls:
it crops the calibration images, quantizes (once per network, calibration set and
OpenVINO version, in this process and on disk: :func:`int8_graph`) and refuses a graph
whose features moved too far. Importing this module imports neither torch, OpenVINO
nor NNCF.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "CALIBRATION_IMAGES",
    "MIN_COSINE",
    "calibrate_int8",
    "calibration_indices",
    "int8_available",
    "int8_graph",
    "quantize_features",
]

#: The most images of ``fit`` that calibrate the quantized graph.
CALIBRATION_IMAGES = 300
#: The least mean cosine similarity of int8 to fp32 features on the calibration images
#: for a quantized graph to be used; below it ``fit`` refuses the backbone.
MIN_COSINE = 0.98


def int8_available() -> bool:
    """Whether OpenVINO and NNCF import (the ``skconv[openvino]`` extra)."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def calibration_indices(n_images: int, limit: int | None = None) -> np.ndarray:
    """Up to ``limit`` indices spread evenly over ``n_images`` (no randomness).

    ``limit`` None is :data:`CALIBRATION_IMAGES`.

    Examples
    --------
    >>> from skconv.engine.quantize import calibration_indices
    >>> calibration_indices(10, limit=4).tolist()
    [0, 3, 6, 9]
    """
    limit = CALIBRATION_IMAGES if limit is None else limit
    count = min(int(n_images), int(limit))
    return np.unique(np.linspace(0, n_images - 1, count).round().astype(int))


def pixels_digest(pixels: np.ndarray) -> str:
    """The sha256 of a calibration batch: part of the quantized graph's cache key."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def calibrate_int8(
    module,
    spec,
    X,
    *,
    device,
    engine: str,
    jpeg_draft: bool,
    backbone: str,
    cache_key=None,
    verbose: bool = False,
) -> tuple[tuple[bytes, bytes], float]:
    """Quantize a feature network to int8, calibrated on images of ``X``.

    Parameters
    ----------
    module : torch.nn.Module
        The feature network as loaded (eval mode).
    spec : skconv.engine.FeatureSpec
        What to compute: stages, pooling, mirroring, preprocessing.
    X : sequence of paths or PIL images, or ndarray
        The images of ``fit``; up to :data:`CALIBRATION_IMAGES` of them, spread
        evenly (:func:`calibration_indices`), calibrate.
    device : torch.device
        Where the transformer runs: the CPU only.
    engine : str
        The transformer's ``engine``: ``"auto"`` or ``"openvino"`` only.
    jpeg_draft : bool
        Decode JPEGs as the transformer does.
    backbone : str
        The backbone's name, for the error messages.
    cache_key : str or None, default=None
        The network's key in the engine cache (:func:`int8_graph`).
    verbose : bool, default=False
        Show NNCF's progress bars while quantizing.

    Returns
    -------
    graph : tuple of bytes
        The quantized model's ``(xml, weights)``, for ``build_engine(int8=...)``.
    cosine : float
        Mean cosine similarity of its features to fp32's on the calibration images.

    Raises
    ------
    ValueError
        With another engine or device, without OpenVINO and NNCF, or when the mean
        cosine is below :data:`MIN_COSINE` (the message names the backbone).
    """
    from ..images import check_images, crop_batch

    if engine not in ("auto", "openvino") or device.type != "cpu":
        raise ValueError(
            f"precision='int8' runs on OpenVINO on the CPU; engine={engine!r} on "
            f"device={str(device)!r} cannot run it: use engine='auto' or 'openvino' "
            f"with device='cpu', or precision='fp32'."
        )
    images = check_images(X)
    indices = calibration_indices(len(images))
    pixels = crop_batch(images, indices, spec.preprocessing, jpeg_draft=jpeg_draft)
    xml, weights, cosine = int8_graph(module, spec, pixels, cache_key=cache_key, verbose=verbose)
    if cosine < MIN_COSINE:
        raise ValueError(
            f"precision='int8' cannot quantize backbone {backbone!r}: its int8 features' "
            f"mean cosine similarity to fp32 on {len(indices)} calibration images is "
            f"{cosine:.3f}, below {MIN_COSINE}. Use precision='fp32'."
        )
    return (xml, weights), cosine


def int8_graph(module, spec, pixels: np.ndarray, cache_key=None, verbose: bool = False):
    """The feature graph quantized to int8, calibrated on ``pixels``, made once per key.

    Parameters
    ----------
    module : torch.nn.Module
        The feature network as loaded (on the CPU, eval mode).
    spec : FeatureSpec
        What to compute.
    pixels : ndarray of uint8, shape (n, s, s, 3)
        The calibration images, cropped as ``spec.preprocessing`` crops them.
    cache_key : str or None, default=None
        The network's key in the engine cache; with the calibration pixels' sha256 it
        keys the quantized graph, in this process and on disk. None quantizes afresh.
    verbose : bool, default=False
        Show NNCF's progress bars while quantizing.

    Returns
    -------
    xml, weights : bytes
        The quantized OpenVINO model, for ``build_engine(int8=(xml, weights))``.
    cosine : float
        Mean cosine similarity of its features to fp32's on the calibration images.

    Raises
    ------
    ValueError
        When OpenVINO or NNCF is not installed.
    """
    import torch

    from .cache import cached_files, engine_cache_key, in_memory
    from .engines import TorchEngine, _exported_graph

    if not int8_available():
        raise ValueError(
            "precision='int8' needs the openvino and nncf packages, which are not "
            "installed (pip install 'skconv[openvino]'); available precisions: 'fp32'."
        )

    def quantize():
        # Exported only when quantizing: a cached graph needs no torch engine built.
        engine = TorchEngine(module, spec, torch.device("cpu"))
        return quantize_features(_exported_graph(engine, spec, cache_key), pixels, verbose)

    if cache_key is None:
        return quantize()
    import openvino

    key = (cache_key, pixels_digest(pixels), openvino.__version__)
    names = ("model.xml", "model.bin", "cosine.txt")

    def build(folder):
        xml, weights, cosine = quantize()
        (folder / "model.xml").write_bytes(xml)
        (folder / "model.bin").write_bytes(weights)
        (folder / "cosine.txt").write_text(repr(cosine))

    def load(folder):
        return (
            (folder / "model.xml").read_bytes(),
            (folder / "model.bin").read_bytes(),
            float((folder / "cosine.txt").read_text()),
        )

    return in_memory(
        ("int8", *key),
        lambda: cached_files("int8", engine_cache_key(*key), names, build, load, quantize),
    )


def quantize_features(
    graph: bytes, pixels: np.ndarray, verbose: bool = False
) -> tuple[bytes, bytes, float]:
    """Quantize an exported feature graph to int8, calibrated on ``pixels``.

    Parameters
    ----------
    graph : bytes
        The ONNX feature graph (uint8 pixels ``(n, s, s, 3)`` in, features out).
    pixels : ndarray of uint8, shape (n, s, s, 3)
        The calibration images, as the graph takes them.
    verbose : bool, default=False
        Show NNCF's progress bars (drawn by rich on its global console).

    Returns
    -------
    xml, weights : bytes
        The quantized OpenVINO model (IR), as
        :func:`skconv.engine._openvino.read_model` takes it.
    cosine : float
        Mean cosine similarity of its features to the fp32 graph's on ``pixels``.
    """
    import gc
    import io
    import logging
    import tempfile
    from pathlib import Path

    import nncf
    import openvino as ov
    import rich
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    from ._openvino import kept_signal_stack

    model = ov.convert_model(io.BytesIO(graph))
    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    stem = [convolutions[0].get_friendly_name()] if convolutions else []
    dataset = nncf.Dataset([pixels[i : i + 1] for i in range(len(pixels))])
    # NNCF logs and draws its progress on rich's global console: hushed unless
    # verbose, and put back as they were.
    logger, console = logging.getLogger("nncf"), rich.get_console()
    level, quiet = logger.level, console.quiet
    if not verbose:
        logger.setLevel(logging.ERROR)
        console.quiet = True
    with kept_signal_stack():  # NNCF and _features compile models
        try:
            quantized = nncf.quantize(
                model,
                dataset,
                subset_size=len(pixels),
                fast_bias_correction=False,
                ignored_scope=nncf.IgnoredScope(names=stem),
                advanced_parameters=AdvancedQuantizationParameters(
                    overflow_fix=OverflowFix.ENABLE
                ),
            )
        finally:
            logger.setLevel(level)
            console.quiet = quiet
        cosine = _mean_cosine(_features(model, pixels), _features(quantized, pixels))
        gc.collect()  # NNCF's compiled models go while the stack is still put back
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(quantized, xml, compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes(), cosine


def _features(model, pixels: np.ndarray) -> np.ndarray:
    from ._openvino import _core

    compiled = _core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return np.vstack(
        [request.infer({0: pixels[i : i + 16]})[0].copy() for i in range(0, len(pixels), 16)]
    )


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))
