"""How a fitted feature network runs: devices, folding, chunks, compile, ONNX Runtime.

:class:`~skconv.ConvFeatureTransformer` keeps the network as loaded (``module_``: what is
pickled and what :mod:`skconv.explain` differentiates through) and runs it through an
*engine* built from it once, on first use:

* :class:`TorchEngine`: an inference copy with every batch norm folded into the
  convolution before it (:func:`fold_batch_norms`), channels-last, run under
  :func:`torch.inference_mode` in chunks of a few images on a CPU (small batches keep
  activations in the caches), optionally compiled with :func:`torch.compile`;
* :class:`OnnxEngine`: the same computation exported to ONNX (uint8 RGB pixels in,
  normalisation, every requested stage, pooling and test-time mirroring inside the
  graph) and run by ONNX Runtime, about twice as fast as torch on a CPU
  (``benchmarks/results/throughput.md``).

:func:`build_engine` chooses: ``"auto"`` takes ONNX Runtime on a CPU when the network
exports and the exported graph matches torch on a probe batch, else torch with a
warning that says why. :class:`LazyEngine` builds it once per fitted transformer,
thread-safely, and is never pickled. :func:`extract` runs an engine over ``X``, decoding
batch by batch, so memory stays flat whatever the number of images.
"""

from __future__ import annotations

import copy
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ._ort import ParallelSession, ordered_map
from .images import Preprocessing, crop_batch, load_batch
from .pooling import pool_features

__all__ = [
    "ENGINES",
    "FeatureSpec",
    "LazyEngine",
    "OnnxEngine",
    "TorchEngine",
    "build_engine",
    "extract",
    "fold_batch_norms",
    "mean_of_views",
    "mirror_views",
    "resolve_device",
]

#: Values of ``ConvFeatureTransformer(engine=...)``.
ENGINES = ("auto", "torch", "onnxruntime")

#: ONNX opset of exported graphs: onnxruntime 1.16 (2023) and later run it.
OPSET = 17


# --------------------------------------------------------------------------- devices


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; pass others to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def prepare_module(module: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode on ``device``; channels-last where oneDNN and cuDNN run NHWC faster."""
    module = module.to(device).eval()
    if device.type in ("cpu", "cuda"):
        module = module.to(memory_format=torch.channels_last)
    return module


# --------------------------------------------------------------------------- chunks


def cpu_chunk_size(batch_size: int, device) -> int:
    """Images per forward pass on ``device``: ``batch_size``, or fewer on a CPU.

    Small batches keep activations in the CPU caches: on 2 cores every backbone
    measured was faster at 8 than at 32 (EfficientNet-Lite0 126 against 92 images/s,
    ``benchmarks/results/throughput.md``), and the first stages of Lite0 ran 130
    images/s in chunks of 8 against 18 in one batch of 192.
    """
    if torch.device(device).type != "cpu":
        return batch_size
    return min(batch_size, max(8, 4 * torch.get_num_threads()))


def forward_in_chunks(forward, batch: torch.Tensor, device) -> torch.Tensor:
    """``forward(batch)``, computed a few images at a time on a CPU (:func:`cpu_chunk_size`).

    Examples
    --------
    >>> import torch
    >>> from skconv._inference import forward_in_chunks
    >>> forward_in_chunks(lambda x: x * 2, torch.ones(20, 3), "cpu").shape
    torch.Size([20, 3])
    """
    chunk = cpu_chunk_size(len(batch), device)
    return torch.cat([forward(part) for part in batch.split(chunk)])


# --------------------------------------------------------------------------- mirroring


def mirror_views(batch: torch.Tensor, tta: bool) -> list:
    """The batch, and with ``tta`` also its horizontal mirror (test-time augmentation)."""
    return [batch, torch.flip(batch, dims=[-1])] if tta else [batch]


def mean_of_views(outputs: Sequence[torch.Tensor], spatial: bool = False) -> torch.Tensor:
    """Average the outputs of :func:`mirror_views`' views.

    ``spatial`` outputs (maps whose last axis is the image's width) of the mirrored
    view are mirrored back first, so that both speak of the same pixels.

    Examples
    --------
    >>> import torch
    >>> from skconv._inference import mean_of_views, mirror_views
    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> mean_of_views([v * 2 for v in mirror_views(x, tta=True)], spatial=True).tolist()
    [[[[0.0, 2.0, 4.0, 6.0]]]]
    """
    if len(outputs) == 1:
        return outputs[0]
    first, mirrored = outputs
    if spatial:
        mirrored = torch.flip(mirrored, dims=[-1])
    return 0.5 * (first + mirrored)


# --------------------------------------------------------------------------- folding


def _conv_types() -> tuple[type, ...]:
    types: list[type] = [nn.Conv2d]
    try:  # TF-"same" padding pads, then calls conv2d with the module's weight and bias
        from timm.layers import Conv2dSame

        types.append(Conv2dSame)
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return tuple(types)


def _replacement(bn: nn.Module) -> nn.Module | None:
    """What stays of ``bn`` once its affine map is in the conv; None if unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:  # pragma: no cover
        return None
    if type(bn) is BatchNormAct2d:  # batch_norm, then drop, then act
        return nn.Sequential(bn.drop, bn.act)
    return None


def _foldable_pairs(module: nn.Module, example: torch.Tensor, stages: Sequence[str]):
    """``(conv_name, bn_name)`` for each conv whose output only a batch norm reads."""
    conv_types = _conv_types()
    names: dict[int, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        names.setdefault(id(sub), []).append(name)
    calls: dict[int, int] = {}
    conv_outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv, _inputs, output):
        calls[id(conv)] = calls.get(id(conv), 0) + 1
        conv_outputs[id(output)] = (conv, output)  # the tensor is kept alive: ids stay unique

    def before_bn(bn, inputs):
        calls[id(bn)] = calls.get(id(bn), 0) + 1
        seen = conv_outputs.get(id(inputs[0]))
        if seen is not None and seen[1] is inputs[0]:
            pairs.append((seen[0], bn))

    handles = []
    for sub in module.modules():
        if type(sub) in conv_types:
            handles.append(sub.register_forward_hook(after_conv))
        elif _replacement(sub) is not None:
            handles.append(sub.register_forward_pre_hook(before_bn))
    # Every stage the body can return: a conv whose output is itself returned (torchvision's
    # "conv1") must keep it, so it is not folded.
    all_stages = list(getattr(module, "stage_names", stages))
    try:
        with torch.no_grad():
            returned = {id(t) for t in module(example, all_stages)}
    finally:
        for handle in handles:
            handle.remove()
    # A conv output read by two batch norms, or a module that runs twice or sits at two
    # places in the tree, would be changed for every use: leave those alone.
    conv_uses: dict[int, int] = {}
    for conv, _ in pairs:
        conv_uses[id(conv)] = conv_uses.get(id(conv), 0) + 1
    outputs_of = {id(conv): id(out) for conv, out in conv_outputs.values()}
    return [
        (names[id(conv)][0], names[id(bn)][0])
        for conv, bn in pairs
        if calls[id(conv)] == 1
        and calls[id(bn)] == 1
        and conv_uses[id(conv)] == 1
        and len(names[id(conv)]) == 1
        and len(names[id(bn)]) == 1
        and outputs_of[id(conv)] not in returned
        and bn.running_mean is not None
        and bn.running_var is not None
    ]


def fold_batch_norms(
    module: nn.Module,
    example: torch.Tensor,
    stages: Sequence[str] = ("final",),
    *,
    rtol: float = 1e-3,
) -> tuple[nn.Module, int]:
    """Return an eval-mode copy of ``module`` with batch norms folded into convolutions.

    In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one
    convolution with rescaled weights and a bias (torch's ``fuse_conv_bn_weights``). On
    CPUs the separate normalisation is a full extra pass over every feature map.

    Only pairs seen in an actual forward pass are folded: the batch norm's input must
    be the very tensor the convolution returned, each module must run once, and both
    must be of a type whose forward is known. The folded copy is then checked against
    the original on ``example``; if any stage differs by more than rounding, the
    original is returned unchanged with a RuntimeWarning.

    Parameters
    ----------
    module : torch.nn.Module
        A feature network called as ``module(x, stages)`` that returns a list of
        tensors (a :class:`skconv.zoo.FeatureNet`). It is not modified.
    example : torch.Tensor
        A small input batch, used to find which convolution feeds which batch norm
        and to check the folded copy.
    stages : sequence of str, default=("final",)
        Stages compared between the original and the folded copy.
    rtol : float, default=1e-3
        Largest accepted difference of any stage, relative to that stage's largest
        absolute value. Folding changes float32 rounding only (about 1e-6).

    Returns
    -------
    folded : torch.nn.Module
        The folded copy, or ``module`` itself when nothing could be folded or the
        check failed.
    n_folded : int
        Number of batch norms folded away.

    Examples
    --------
    ResNet-18 has 20 batch norms; the first stays, because its convolution's output
    is itself a stage (``"conv1"``) that must keep its value:

    >>> import torch
    >>> from skconv._inference import fold_batch_norms
    >>> from skconv.zoo import load_backbone
    >>> net = load_backbone("resnet18", weights=None).module.eval()
    >>> folded, n = fold_batch_norms(net, torch.randn(2, 3, 64, 64))
    >>> n
    19
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    if module.training:
        raise ValueError("fold_batch_norms needs a module in eval mode; call .eval() first.")
    stages = list(stages)
    pairs = _foldable_pairs(module, example, stages)
    if not pairs:
        return module, 0
    # .eval() again: a deep-copied FX GraphModule comes back in train mode.
    folded = copy.deepcopy(module).eval()
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        with torch.no_grad():
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
            )
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent_name), attr, _replacement(bn))
    for param in folded.parameters():
        param.requires_grad_(False)
    with torch.no_grad():
        expected = module(example, stages)
        got = folded(example, stages)
    for stage, want, have in zip(stages, expected, got):
        tolerance = rtol * max(float(want.abs().max()), 1e-6)
        if have.shape != want.shape or float((have - want).abs().max()) > tolerance:
            warnings.warn(
                f"Folding batch norms changed stage {stage!r} by more than rounding; "
                "using the unfolded network.",
                RuntimeWarning,
                stacklevel=2,
            )
            return module, 0
    return folded, len(pairs)


# --------------------------------------------------------------------------- the computation


@dataclass(frozen=True)
class FeatureSpec:
    """What a fitted feature network computes, whichever engine runs it.

    Parameters
    ----------
    stages : tuple of str
        Stages whose pooled maps are concatenated.
    pooling : str
        As :func:`skconv.pooling.pool_features` takes it.
    tta : bool
        Average the features of the image and of its mirror.
    preprocessing : Preprocessing
        The input the network takes.
    """

    stages: tuple
    pooling: str
    tta: bool
    preprocessing: Preprocessing


class PooledFeatures(nn.Module):
    """Normalised batch -> pooled features: stages, pooling and mirroring in one module.

    Parameters
    ----------
    net : torch.nn.Module
        A feature network ``net(x, stages) -> list of maps``.
    spec : FeatureSpec
        The stages, pooling and mirroring.
    """

    def __init__(self, net: nn.Module, spec: FeatureSpec):
        super().__init__()
        self.net = net
        self.stages = list(spec.stages)
        self.pooling = spec.pooling
        self.tta = spec.tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_of_views([self._pooled(view) for view in mirror_views(x, self.tta)])

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.net(x, self.stages)
        return torch.cat([pool_features(m, self.pooling) for m in maps], dim=1)


class FromPixels(nn.Module):
    """uint8 RGB pixels ``(n, s, s, 3)`` -> the preprocessing's normalisation -> ``model``.

    What an exported ONNX graph computes: the caller only decodes, resizes and crops
    (:func:`skconv.images.crop_batch`), with no torch and no normalisation of its own.
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # The operations of Preprocessing.normalize, in its order: the same float32 pixels.
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        return self.model((x - self.mean) / self.std)


def export_onnx_bytes(
    model: nn.Module, example: torch.Tensor, input_name: str, output_names: Sequence[str]
) -> bytes:
    """Export ``model`` with a dynamic batch axis to ONNX, in memory.

    torch's TorchScript exporter (``dynamo=False``): it needs no extra package and
    traces the hooks and FX graphs of skconv's feature networks as they run.
    """
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    with warnings.catch_warnings():
        # Tracer and deprecation notices speak to exporter developers, not to users.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes=axes,
            )
    return buffer.getvalue()


# --------------------------------------------------------------------------- engines


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
        size = spec.preprocessing.image_size
        example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        example = example.to(device)
        if device.type in ("cpu", "cuda"):
            example = example.contiguous(memory_format=torch.channels_last)
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

    Each run takes a few images (:data:`~skconv._ort.ONNX_CHUNK`) on one thread, and
    ``n_threads`` runs go at once, one per core (:class:`~skconv._ort.ParallelSession`).

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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Pooled features ``(n, d)`` of a uint8 batch, computed chunk by chunk, in parallel."""
        batch = np.ascontiguousarray(batch)
        chunks = self.map_chunks(lambda rows: self.run(batch[rows]), len(batch))
        parts = [features for _, features in chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """One run of the graph on the calling thread: features of a uint8 batch."""
        return self.session.run(["features"], {"image": np.ascontiguousarray(pixels)})[0]


def export_features(module: nn.Module, spec: FeatureSpec) -> bytes:
    """The pooled-feature computation as ONNX: uint8 pixels ``"image"`` in, ``"features"`` out."""
    size = spec.preprocessing.image_size
    model = FromPixels(PooledFeatures(module, spec), spec.preprocessing).eval()
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    return export_onnx_bytes(model, example, "image", ["features"])


def build_engine(
    kind: str,
    module: nn.Module,
    spec: FeatureSpec,
    *,
    device: torch.device,
    compile: bool = False,
    backbone: str = "",
):
    """Build the engine that computes pooled features of the fitted network.

    Parameters
    ----------
    kind : {"auto", "torch", "onnxruntime"}
        ``"auto"``: ONNX Runtime on a CPU when the network exports and the exported
        graph matches torch on a probe batch (every stage, the pooling and the
        mirroring), else torch with a RuntimeWarning that says why; torch on other
        devices and with ``compile``. ``"onnxruntime"`` raises instead of falling back.
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

    Returns
    -------
    engine : TorchEngine or OnnxEngine

    Raises
    ------
    ValueError
        With ``kind="onnxruntime"``, if the device is not a CPU, the network does not
        export, or the exported graph does not match torch; the message names the
        backbone.
    """
    torch_engine = TorchEngine(module, spec, device, compile=compile)
    if kind == "torch" or (kind == "auto" and (device.type != "cpu" or compile)):
        return torch_engine
    what = f"backbone {backbone!r}" if backbone else "this backbone"
    if device.type != "cpu":
        raise ValueError(
            f"engine='onnxruntime' runs on the CPU, but device={str(device)!r}; use "
            "engine='torch' or 'auto' on an accelerator."
        )
    try:
        engine = OnnxEngine(
            export_features(torch_engine.model.net, spec),
            spec.preprocessing,
            n_threads=torch.get_num_threads(),
        )
        mismatch = _probe_mismatch(torch_engine, engine, spec.preprocessing)
    except Exception as exc:  # any exporter or runtime failure means "not this engine"
        reason = f"it does not export to ONNX ({type(exc).__name__}: {exc})"
    else:
        if mismatch is None:
            return engine
        reason = f"the exported graph differs from torch ({mismatch})"
    if kind == "onnxruntime":
        raise ValueError(f"engine='onnxruntime' cannot run {what}: {reason}.")
    warnings.warn(
        f"ONNX Runtime cannot run {what}: {reason}; using torch instead (engine='torch' "
        "silences this).",
        RuntimeWarning,
        stacklevel=3,
    )
    return torch_engine


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


# --------------------------------------------------------------------------- running


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` of the images, decoded as the engine takes them: one item per step."""

    def __init__(
        self,
        images,
        preprocessing: Preprocessing,
        batch_size: int,
        *,
        pixels: str = "normalized",
        n_threads: int = 1,
        reuse: bool = False,
        jpeg_draft: bool = False,
    ):
        self.images = images
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.pixels = pixels
        self.n_threads = n_threads
        self.jpeg_draft = jpeg_draft
        # One buffer for every batch: only when each batch is used up before the next.
        self.buffer = None
        if reuse:
            side = preprocessing.image_size
            dtype = np.uint8 if pixels == "uint8" else np.float32
            self.buffer = np.empty((batch_size, side, side, 3), dtype=dtype)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, i: int):
        start = i * self.batch_size
        stop = min(start + self.batch_size, len(self.images))
        out = None if self.buffer is None else self.buffer[: stop - start]
        decode = crop_batch if self.pixels == "uint8" else load_batch
        return decode(
            self.images,
            range(start, stop),
            self.preprocessing,
            n_threads=self.n_threads,
            out=out,
            jpeg_draft=self.jpeg_draft,
        )


def _prefetched(batches: _Batches):
    """Yield the batches, decoding the next one in a thread while this one computes.

    Pillow and NumPy release the GIL while they decode, resize and convert, so one
    thread hides most of the decoding behind the forward pass without the start-up
    cost of worker processes.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skconv-decode") as pool:
        # A window of 2: batch i is handed over while batch i + 1 decodes.
        yield from ordered_map(pool, batches.__getitem__, range(len(batches)), window=2)


def extract(
    engine,
    images,
    n_features: int,
    *,
    batch_size: int,
    num_workers: int = 0,
    jpeg_draft: bool = False,
    verbose: int = 0,
    desc: str = "features",
) -> np.ndarray:
    """Run ``engine`` over ``images``, decoding batch by batch; ``(n, n_features)`` float32.

    With the ONNX Runtime engine each of its threads decodes a chunk of images, then
    runs the graph on it, one thread per core. With torch on a CPU each step decodes
    its batch with all cores into one reused buffer, then computes (decoding alongside
    the network's threads was measured slower); worker processes decode in parallel
    with one thread each; on an accelerator a thread decodes the next batch while the
    current one computes.
    """
    from tqdm.auto import tqdm

    rows = np.empty((len(images), n_features), dtype=np.float32)
    if engine.kind == "onnxruntime" and not num_workers:
        # Each thread decodes its own chunk, then runs it: the cores never wait for
        # one another between decoding and computing.
        def features_of(chunk: slice) -> np.ndarray:
            indices = range(chunk.start, chunk.stop)
            pixels = crop_batch(images, indices, engine.preprocessing, jpeg_draft=jpeg_draft)
            return engine.run(pixels)

        chunks = engine.map_chunks(
            features_of, len(images), most=batch_size, window=2 * engine.n_threads
        )
        # Closing waits for the chunks in flight if this loop fails (Python 3.9 has no
        # parenthesised with-statements, hence two).
        with closing(chunks):
            with tqdm(total=len(images), desc=desc, unit="img", disable=not verbose) as progress:
                for chunk, features in chunks:
                    rows[chunk] = features
                    progress.update(len(features))
        return rows

    on_cpu = getattr(engine, "device", torch.device("cpu")).type == "cpu"
    serial = on_cpu and not num_workers
    dataset = _Batches(
        images,
        engine.preprocessing,
        batch_size,
        pixels=engine.pixels,
        n_threads=torch.get_num_threads() if serial else 1,
        reuse=serial,
        jpeg_draft=jpeg_draft,
    )
    if num_workers:
        batches = iter(
            torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=num_workers
            )
        )
    elif serial:
        batches = (dataset[i] for i in range(len(dataset)))
    else:
        batches = _prefetched(dataset)
    start = 0
    # A bar left open would redraw over an error message: the context closes it.
    with tqdm(total=len(images), desc=desc, unit="img", disable=not verbose) as progress:
        for batch in batches:
            if isinstance(batch, torch.Tensor) and engine.pixels == "uint8":
                batch = batch.numpy()  # a DataLoader worker hands tensors back
            features = engine(batch)
            rows[start : start + len(features)] = features
            start += len(features)
            progress.update(len(features))
    return rows
