"""ConvFeatureTransformer: a pretrained ConvNet as a fixed feature extractor."""

from __future__ import annotations

import hashlib
import os
import re
from numbers import Integral
from typing import Any, Sequence

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import zoo
from ._fold import fold_batch_norms
from .images import check_images, load_batch
from .pooling import POOLINGS, pool_features

__all__ = ["ConvFeatureTransformer"]


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; pass others to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ConvFeatureTransformer(TransformerMixin, BaseEstimator):
    """Turn images into the pooled features of a pretrained ConvNet.

    The first way of transfer learning: a network trained on ImageNet, without
    its last dense layer, maps each image to a feature vector; a linear model
    fitted on those features is the classifier. Put it first in a
    :class:`~sklearn.pipeline.Pipeline`.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        A name from :func:`skconv.zoo.list_backbones`: a packaged name (works
        offline), a torchvision model name, or ``"timm/<name>"``.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` for the backbone's pretrained weights, a torchvision weights
        enum name, a local ``.pth``/``.safetensors`` file, or None (random).
    pooling : {"avg", "max", "gem", "avgmax"}, default="avg"
        How each feature map is reduced to a vector: average, maximum,
        generalised mean (p=3), or average and maximum concatenated.
    layers : list of str or None, default=None
        Stages whose pooled features are concatenated, shallow to deep. None is the
        last stage (``["final"]``); ``backbone_.stage_names`` lists the others.
    image_size : int or None, default=None
        Side of the square crop fed to the network. None uses the size the
        weights were trained at.
    tta : bool, default=False
        Average the features of each image and of its horizontal mirror.
    batch_size : int, default=32
        Images decoded and computed per step. On a GPU that is the batch of the
        forward pass; on a CPU the network takes them in chunks of
        ``max(8, 4 * torch.get_num_threads())`` (at most ``batch_size``): small
        batches keep activations in the CPU caches, which on 2 cores made every
        backbone measured faster (EfficientNet-Lite0: 126 images/s at 8 against 92 at
        32, ``benchmarks/results/throughput.md``).
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
    num_workers : int, default=0
        DataLoader worker processes decoding images; 0 decodes in this process.
    compile : bool, default=False
        Compile the network with :func:`torch.compile` on the first transform, the
        opt-in fast path for big jobs: a one-off cost of tens of seconds for
        faster batches after it (see ``benchmarks/results/throughput.md``).
        Features match the default path to within float32 rounding (tested to 1e-4).
    jpeg_draft : bool, default=True
        Decode JPEG files at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or
        1/8) that keeps both sides at least twice the resize's shorter side, before
        the usual resize, as Pillow's ``thumbnail`` does. On 10-megapixel JPEGs this
        made decoding 7 times and ``transform`` 3 times faster, and changed the
        features less than a change of resize filter does (about as much as re-saving
        the JPEGs at another quality; ``benchmarks/results/jpeg_draft.md``). Other
        formats, and JPEGs too small to reduce, are unaffected. False decodes every
        file at full size, as timm and torchvision do.
    memory : str, path-like, joblib.Memory or None, default=None
        A per-image feature cache keyed by backbone, weights, preprocessing,
        pooling, layers and each image's content: a second transform of the same
        images does no forward pass.
    verbose : int, default=0
        Show a progress bar during transform when > 0.

    Attributes
    ----------
    backbone_ : dict
        ``name``, ``weights`` (resolved id) and ``sha256`` of the weights file.
    preprocessing_ : Preprocessing
        The resize, crop and normalisation used.
    stage_names_ : list of str
        Stages the backbone can return (values for ``layers``).
    n_features_in_ : int
        Always 1: each sample is one image.
    n_features_out_ : int
        Length of the feature vector of one image.
    n_forward_passes_ : int
        Forward passes run by ``transform`` since ``fit`` (cache hits run none).

    See Also
    --------
    FineTuneClassifier : Trains every layer instead of keeping them fixed.

    Notes
    -----
    ``transform`` runs at the pace of the hardware without settings: the network
    runs in eval mode under :func:`torch.inference_mode`, channels-last, with every
    batch norm folded into the convolution before it (a copy made on the first
    transform and checked against ``module_``; features change by float32 rounding
    only), in chunks of a few images on a CPU. Each step decodes its images with as
    many threads as torch uses, then computes; with a GPU the next batch is decoded
    while the current one computes. Gray images are resized on one channel, large
    JPEGs decode at a reduced scale (``jpeg_draft``). Memory does not grow with the
    number of images. See the "Speed" page of the user guide for measurements.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv import ConvFeatureTransformer
    >>> X = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    >>> t = ConvFeatureTransformer(backbone="resnet18", weights=None, image_size=32)
    >>> t.fit_transform(X).shape
    (4, 512)
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "pooling": [StrOptions(set(POOLINGS))],
        "layers": ["array-like", None],
        "image_size": [Interval(Integral, 16, None, closed="left"), None],
        "tta": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "compile": ["boolean"],
        "jpeg_draft": ["boolean"],
        "memory": [str, os.PathLike, joblib.Memory, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: Any = "DEFAULT",
        pooling: str = "avg",
        layers: Sequence[str] | None = None,
        image_size: int | None = None,
        tta: bool = False,
        batch_size: int = 32,
        device: str = "auto",
        num_workers: int = 0,
        compile: bool = False,
        jpeg_draft: bool = True,
        memory: Any = None,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.pooling = pooling
        self.layers = layers
        self.image_size = image_size
        self.tta = tta
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.compile = compile
        self.jpeg_draft = jpeg_draft
        self.memory = memory
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the backbone and its weights; nothing is learnt from ``X``.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images in any form :func:`skconv.images.check_images` accepts. Only
            validated here (no image is decoded).
        y : None
            Ignored.

        Returns
        -------
        self : ConvFeatureTransformer
            The fitted transformer.
        """
        check_images(X)
        loaded = zoo.load_backbone(self.backbone, self.weights)
        self._set_backbone(loaded)
        return self

    def _set_backbone(self, loaded: zoo.Backbone) -> None:
        stages = self._stages()
        loaded.module.check_stages(stages)
        preprocessing = loaded.preprocessing
        if self.image_size is not None:
            preprocessing = preprocessing.replace(image_size=int(self.image_size))
        self.device_ = resolve_device(self.device)
        self.module_ = _prepare_module(loaded.module, self.device_)
        self._compiled = None
        self._inference_net = None
        self.preprocessing_ = preprocessing
        self.backbone_ = loaded.identity
        self.stage_names_ = loaded.module.stage_names
        self.n_features_in_ = 1
        self.stage_dims_ = self._probe_stage_dims(stages)
        factor = 2 if self.pooling == "avgmax" else 1
        self.n_features_out_ = factor * int(sum(self.stage_dims_))
        self.n_forward_passes_ = 0

    def _stages(self) -> list[str]:
        if self.layers is None:
            return [zoo.FINAL_STAGE]
        if isinstance(self.layers, str):
            raise ValueError(
                f"layers must be a list of stage names, got the string {self.layers!r}; "
                f"write layers=[{self.layers!r}]."
            )
        stages = list(self.layers)
        if not stages:
            raise ValueError("layers must name at least one stage, got an empty list.")
        return stages

    def _probe_stage_dims(self, stages: list[str]) -> list[int]:
        size = self.preprocessing_.image_size
        probe = torch.zeros(1, 3, size, size, device=self.device_)
        with torch.inference_mode():
            maps = self.module_(probe, stages)
        # Token maps (n, tokens, c) of transformer-like backbones carry channels last.
        return [int(m.shape[-1] if m.ndim == 3 else m.shape[1]) for m in maps]

    # ------------------------------------------------------------------ transforming

    def transform(self, X):
        """Compute the pooled features of each image.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images in any form :func:`skconv.images.check_images` accepts. Paths
            are decoded batch by batch, so memory does not grow with ``len(X)``.

        Returns
        -------
        features : ndarray of float32, shape ``(n_images, n_features_out_)``
            One row per image.

        Raises
        ------
        skconv.images.ImageLoadError
            If an image cannot be decoded; the message names the file.
        """
        check_is_fitted(self, "module_")
        images = check_images(X)
        n = len(images)
        out = np.empty((n, self.n_features_out_), dtype=np.float32)
        cache = self._cache()
        todo = np.arange(n)
        keys: list = []
        if cache is not None:
            keys = [self._content_key(images, i) for i in range(n)]
            missing = []
            for i, key in enumerate(keys):
                if cache.check_call_in_cache(self._config_key(), key, None):
                    out[i] = cache(self._config_key(), key, None)
                else:
                    missing.append(i)
            todo = np.asarray(missing, dtype=int)
        if len(todo):
            subset = images if len(todo) == n else _Subset(images, todo)
            rows = self._forward_all(subset)
            out[todo] = rows
            if cache is not None:
                for i, row in zip(todo, rows):
                    cache(self._config_key(), keys[i], row)
        return out

    def _forward_all(self, images) -> np.ndarray:
        on_cpu = self.device_.type == "cpu"
        dataset = _Batches(
            images,
            self.preprocessing_,
            self.batch_size,
            # On a CPU the network's threads use every core: decoding alongside them
            # (measured) slows both, so each step decodes with all cores, then computes.
            # Worker processes already decode in parallel: one thread each.
            n_threads=torch.get_num_threads() if on_cpu and not self.num_workers else 1,
            reuse=on_cpu and not self.num_workers,
            jpeg_draft=self.jpeg_draft,
        )
        if self.num_workers:
            batches = iter(
                torch.utils.data.DataLoader(
                    dataset, batch_size=None, shuffle=False, num_workers=self.num_workers
                )
            )
        elif on_cpu:
            batches = (dataset[i] for i in range(len(dataset)))
        else:  # an accelerator computes while a thread decodes the next batch
            batches = _prefetched(dataset)
        stages = self._stages()
        channels_last = self.device_.type in ("cpu", "cuda")
        rows = np.empty((len(images), self.n_features_out_), dtype=np.float32)
        progress = _progress(len(images), self.verbose, f"features ({self.backbone_['name']})")
        start = 0
        try:
            with torch.inference_mode():
                for batch in batches:
                    # load_batch gives channels-last memory; other devices get plain NCHW.
                    batch = batch.to(self.device_, non_blocking=True)
                    if not channels_last:
                        batch = batch.contiguous()
                    feats = self._pooled(batch, stages)
                    if self.tta:
                        feats = 0.5 * (feats + self._pooled(torch.flip(batch, dims=[3]), stages))
                    rows[start : start + len(feats)] = feats.float().cpu().numpy()
                    start += len(feats)
                    self.n_forward_passes_ += 1 + int(self.tta)
                    progress.update(len(feats))
        finally:
            progress.close()  # a bar left open would redraw over the error message
        return rows

    def _inference_module(self) -> torch.nn.Module:
        """``module_`` with its batch norms folded into the convolutions, built once.

        ``module_`` itself stays as loaded: it is what is pickled and what
        :mod:`skconv.explain` differentiates through.
        """
        if getattr(self, "_inference_net", None) is None:
            size = self.preprocessing_.image_size
            example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(
                self.device_
            )
            if self.device_.type in ("cpu", "cuda"):
                example = example.contiguous(memory_format=torch.channels_last)
            self._inference_net, _ = fold_batch_norms(self.module_, example, self._stages())
        return self._inference_net

    def _chunk_size(self) -> int:
        """Images per forward pass: ``batch_size``, or fewer on a CPU (see ``batch_size``)."""
        if self.device_.type != "cpu":
            return self.batch_size
        return min(self.batch_size, max(8, 4 * torch.get_num_threads()))

    def _pooled(self, batch: torch.Tensor, stages: list[str]) -> torch.Tensor:
        chunk = self._chunk_size()
        if len(batch) > chunk:
            return torch.cat([self._pooled(part, stages) for part in batch.split(chunk)])
        net = self._inference_module()
        if not self.compile:
            return self._pool_maps(net(batch, stages))
        if getattr(self, "_compiled", None) is None:
            self._compiled = torch.compile(self._forward_pooled, dynamic=False)
        # A fixed batch shape compiles once: pad the last, shorter chunk.
        n = len(batch)
        if n < chunk:
            pad = batch.new_zeros((chunk - n, *batch.shape[1:]))
            batch = torch.cat([batch, pad]).contiguous(memory_format=torch.channels_last)
        return self._compiled(batch, tuple(stages))[:n]

    def _forward_pooled(self, batch: torch.Tensor, stages: tuple) -> torch.Tensor:
        return self._pool_maps(self._inference_net(batch, list(stages)))

    def _pool_maps(self, maps) -> torch.Tensor:
        return torch.cat([pool_features(m, self.pooling) for m in maps], dim=1)

    # ------------------------------------------------------------------ caching

    def _cache(self):
        if self.memory is None:
            return None
        memory = self.memory
        if not isinstance(memory, joblib.Memory):
            memory = joblib.Memory(os.fspath(memory), verbose=0)
        return memory.cache(_cached_row, ignore=["row"])

    def _config_key(self) -> str:
        config = (
            self.backbone_["name"],
            self.backbone_["weights"],
            self.backbone_["sha256"],
            repr(self.preprocessing_),
            self.pooling,
            tuple(self._stages()),
            bool(self.tta),
            bool(self.jpeg_draft),
        )
        return hashlib.sha256(repr(config).encode()).hexdigest()

    @staticmethod
    def _content_key(images, index: int) -> str:
        item = images[index]
        if isinstance(item, (str, os.PathLike)):
            try:
                return zoo._sha256(os.fspath(item))
            except OSError:
                return f"unreadable:{os.fspath(item)}"  # decoding will raise with the name
        digest = hashlib.sha256()
        array = np.asarray(item)
        digest.update(str((array.shape, array.dtype.str, getattr(item, "mode", ""))).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ sklearn API

    def get_feature_names_out(self, input_features=None):
        """Names of the output features: ``<stage>_<pooling>_<index>``.

        Parameters
        ----------
        input_features : None
            Ignored; images have no input feature names.

        Returns
        -------
        feature_names_out : ndarray of str
            ``n_features_out_`` names.
        """
        check_is_fitted(self, "module_")
        names = []
        poolings = ["avg", "max"] if self.pooling == "avgmax" else [self.pooling]
        for stage, dim in zip(self._stages(), self.stage_dims_):
            tag = re.sub(r"[^0-9a-zA-Z]+", "_", stage)
            for pooling in poolings:
                names.extend(f"{tag}_{pooling}_{i}" for i in range(dim))
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def __getstate__(self):
        # Carry the weights as a plain state dict: the receiving machine may have no
        # network, an empty cache, or no GPU.
        state = self.__dict__.copy()
        state.pop("_compiled", None)  # compiled code is per process; rebuilt on demand
        state.pop("_inference_net", None)  # derived from module_; rebuilt on demand
        module = state.pop("module_", None)
        if module is not None:
            # NumPy arrays, not tensors: skops.io can store arrays (and joblib maps them).
            state["_module_state"] = {
                k: v.detach().cpu().numpy() for k, v in module.state_dict().items()
            }
            state.pop("device_", None)
        return state

    def __setstate__(self, state):
        module_state = state.pop("_module_state", None)
        # Saved before jpeg_draft existed: keep decoding as the head was trained, at full size.
        state.setdefault("jpeg_draft", False)
        self.__dict__.update(state)
        if module_state is not None:
            # Rebuild the architecture with random weights (no download), then load ours.
            module = zoo.load_backbone(self.backbone, None).module
            # np.array copies (arrays may be read-only) and takes older files' tensors too.
            module.load_state_dict(
                {k: torch.from_numpy(np.array(v)) for k, v in module_state.items()}
            )
            self.device_ = resolve_device(self.device)
            if self.device_.type == "cuda" and not torch.cuda.is_available():
                self.device_ = torch.device("cpu")  # trained on a GPU, used on a laptop
            self.module_ = _prepare_module(module, self.device_)


def _prepare_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    module = module.to(device).eval()
    if device.type in ("cpu", "cuda"):
        # oneDNN and cuDNN run NHWC convolutions faster; input batches follow suit.
        module = module.to(memory_format=torch.channels_last)
    return module


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` of the images, decoded and normalised: one item per forward pass."""

    def __init__(
        self,
        images,
        preprocessing,
        batch_size: int,
        n_threads: int = 1,
        reuse: bool = False,
        jpeg_draft: bool = False,
    ):
        self.images = images
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.jpeg_draft = jpeg_draft
        # One buffer for every batch: only when each batch is used up before the next.
        self.buffer = None
        if reuse:
            side = preprocessing.image_size
            self.buffer = np.empty((batch_size, side, side, 3), dtype=np.float32)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, i: int) -> torch.Tensor:
        start = i * self.batch_size
        stop = min(start + self.batch_size, len(self.images))
        out = None if self.buffer is None else self.buffer[: stop - start]
        return load_batch(
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
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skconv-decode") as pool:
        pending = pool.submit(batches.__getitem__, 0)
        for i in range(1, len(batches)):
            batch = pending.result()
            pending = pool.submit(batches.__getitem__, i)
            yield batch
        yield pending.result()


def _cached_row(config_key: str, content_key: str, row):
    """Identity whose result joblib.Memory stores; ``row`` is ignored in the key."""
    if row is None:
        raise LookupError("feature row not in cache")
    return row


class _Subset:
    def __init__(self, images, indices):
        self.images = images
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.images[int(self.indices[i])]


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, verbose: int, desc: str):
    if not verbose:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img")
