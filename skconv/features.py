"""ConvFeatureTransformer: a pretrained ConvNet as a fixed feature extractor."""

from __future__ import annotations

import os
import re
from numbers import Integral
from typing import Any, Sequence

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.exceptions import NotFittedError
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import zoo
from ._cache import FeatureCache
from .engine import (
    ENGINES,
    OPSET,
    POOLINGS,
    PRECISIONS,
    FeatureSpec,
    LazyEngine,
    build_engine,
    calibrate_int8,
    engine_cache_key,
    extract,
    prepare_module,
    resolve_device,
)
from .images import check_images

__all__ = ["ConvFeatureTransformer"]

# Parameters the features depend on: fixed at fit, so that transform computes what was
# fitted (the others say how to run: batch size, workers, cache, progress).
_FITTED_PARAMS = (
    "backbone",
    "weights",
    "pooling",
    "layers",
    "image_size",
    "tta",
    "device",
    "compile",
    "jpeg_draft",
    "engine",
    "precision",
)


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
        last stage (``["final"]``); ``stage_names_`` lists the others.
    image_size : int or None, default=None
        Side of the square crop fed to the network. None uses the size the
        weights were trained at.
    tta : bool, default=False
        Average the features of each image and of its horizontal mirror.
    batch_size : int, default=32
        Images decoded and computed per step. The torch engine on a CPU takes them
        in chunks of ``max(8, 4 * torch.get_num_threads())``: small batches keep
        activations in the CPU caches (``benchmarks/results/throughput.md``).
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
    num_workers : int, default=0
        DataLoader worker processes decoding images; 0 decodes in this process.
    compile : bool, default=False
        Run the torch engine compiled with :func:`torch.compile`: a one-off cost of
        tens of seconds, then faster batches. Features match the default path to
        within float32 rounding (tested to 1e-4). Implies the torch engine.
    jpeg_draft : bool, default=True
        Decode JPEG files at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or
        1/8) that keeps both sides at least twice the resize's shorter side, before
        the usual resize, as Pillow's ``thumbnail`` does. On 10-megapixel JPEGs this
        made decoding 7 times and ``transform`` 3 times faster, and changed the
        features less than a change of resize filter does (about as much as re-saving
        the JPEGs at another quality; ``benchmarks/results/jpeg_draft.md``). Other
        formats, and JPEGs too small to reduce, are unaffected. False decodes every
        file at full size, as timm and torchvision do.
    engine : {"auto", "torch", "onnxruntime", "openvino"}, default="auto"
        What runs the network. ``"onnxruntime"``: the network exported to ONNX, with
        the normalisation, stages, pooling and mirroring inside the graph, run by
        ONNX Runtime on the CPU, about twice as fast as torch there
        (``benchmarks/results/throughput.md``). ``"openvino"``: the same graph
        compiled by OpenVINO (``benchmarks/results/engine_choice.md``). ``"torch"``: the
        network in torch, with its batch norms folded into the convolutions.
        ``"auto"`` on a CPU takes OpenVINO where ``pip install 'skconv[openvino]'``
        put it (1.5x ONNX Runtime's steady state on Lite0,
        ``benchmarks/results/throughput_engines.md``), else ONNX Runtime: the first
        whose graph matches torch on a probe batch; an engine passed over, or torch
        when none matches, comes with a warning that says why. Torch on a GPU or
        with ``compile``. An engine that is not installed raises a ValueError naming
        those that are. The engine is built once, on the first transform.
    precision : {"fp32", "int8"}, default="fp32"
        ``"int8"``: the network quantized to 8-bit integers after training (NNCF,
        per-channel weights), calibrated in ``fit`` on up to 300 of its images spread
        evenly over ``X``, and run by OpenVINO on the CPU. On BUSI (Lite0, 2 cores) the
        first transform ran 2.27x the fp32 default's, features at a mean cosine of
        0.993 to fp32's; mean test accuracy over 5 splits was fp32's (+0.2 points) but
        single splits moved by up to 4.3 points (``benchmarks/results/int8.md``).
        Needs ``pip install 'skconv[openvino]'``, a CPU device and ``engine`` "auto"
        or "openvino". ``fit`` decodes the calibration images and refuses, with a
        ValueError naming the backbone, a network whose int8 features' mean cosine
        similarity to fp32 on them is below 0.98.
    memory : str, path-like, joblib.Memory or None, default=None
        A per-image feature cache (a folder, or a ``joblib.Memory``'s folder) keyed
        by backbone, weights, preprocessing, pooling, layers, mirroring, decoding and
        each image's content: a second transform of the same images runs no network.
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
    module_ : torch.nn.Module
        The feature network as loaded, without the ImageNet classifier.
    device_ : torch.device
        Where the network runs.
    n_features_in_ : int
        Always 1: each sample is one image.
    n_features_out_ : int
        Length of the feature vector of one image.
    int8_cosine_ : float or None
        With ``precision="int8"``, the mean cosine similarity of the int8 features to
        fp32's on the calibration images; None with fp32.

    See Also
    --------
    FineTuneClassifier : Trains every layer instead of keeping them fixed.

    Notes
    -----
    ``transform`` computes the features of the configuration seen by ``fit``:
    changing a parameter such as ``pooling`` afterwards needs a new ``fit`` (transform
    says so). It leaves the estimator's attributes unchanged, and several threads may
    transform at once. Memory does not grow with the number of images: paths are
    decoded batch by batch. See the "Speed" page of the user guide for measurements.

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
        "engine": [StrOptions(set(ENGINES))],
        "precision": [StrOptions(set(PRECISIONS))],
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
        engine: str = "auto",
        precision: str = "fp32",
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
        self.engine = engine
        self.precision = precision
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
            validated here (no image is decoded), except with ``precision="int8"``,
            which calibrates on up to 300 of them.
        y : None
            Ignored.

        Returns
        -------
        self : ConvFeatureTransformer
            The fitted transformer.
        """
        check_images(X)
        stages = self._stages()
        loaded = zoo.load_backbone(self.backbone, self.weights)
        loaded.module.check_stages(stages)
        preprocessing = loaded.preprocessing
        if self.image_size is not None:
            preprocessing = preprocessing.replace(image_size=int(self.image_size))
        device = resolve_device(self.device)
        module = prepare_module(loaded.module, device)
        spec = FeatureSpec(tuple(stages), self.pooling, bool(self.tta), preprocessing)
        int8, cosine = None, None
        if self.precision == "int8":
            int8, cosine = calibrate_int8(
                module,
                spec,
                X,
                device=device,
                engine=self.engine,
                jpeg_draft=self.jpeg_draft,
                backbone=loaded.identity["name"],
                cache_key=_engine_key(loaded.identity, spec),
                verbose=bool(self.verbose),
            )
        self.device_ = device
        self.module_ = module
        self.preprocessing_ = preprocessing
        self.backbone_ = loaded.identity
        self.stage_names_ = loaded.module.stage_names
        self.n_features_in_ = 1
        self.stage_dims_ = zoo.stage_dims(self.module_, stages, preprocessing.image_size)
        factor = 2 if self.pooling == "avgmax" else 1
        self.n_features_out_ = factor * int(sum(self.stage_dims_))
        self.int8_cosine_ = cosine
        self._int8_model = int8
        self._fitted_params = {name: getattr(self, name) for name in _FITTED_PARAMS}
        self._engine = LazyEngine(self._build_engine)
        return self

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

    def _build_engine(self):
        params = self._fitted_params
        return build_engine(
            params["engine"],
            self.module_,
            self._spec(),
            device=self.device_,
            compile=params["compile"],
            backbone=self.backbone_["name"],
            cache_key=_engine_key(self.backbone_, self._spec()),
            int8=self._int8_model,
        )

    def _spec(self) -> FeatureSpec:
        """What the fitted transformer computes: stages, pooling, mirroring, input."""
        params = self._fitted_params
        layers = params["layers"]
        stages = (zoo.FINAL_STAGE,) if layers is None else tuple(layers)
        return FeatureSpec(stages, params["pooling"], bool(params["tta"]), self.preprocessing_)

    def _check_configuration(self) -> None:
        changed = [
            f"{name}={value!r} (fitted with {self._fitted_params[name]!r})"
            for name, value in ((name, getattr(self, name)) for name in _FITTED_PARAMS)
            if not _same(value, self._fitted_params[name])
        ]
        if changed:
            raise NotFittedError(
                f"This ConvFeatureTransformer computes the features it was fitted for, but "
                f"its parameters changed since fit: {', '.join(changed)}. Call fit again."
            )

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
        sklearn.exceptions.NotFittedError
            If the transformer is not fitted, or a parameter the features depend on
            changed since ``fit``.
        """
        check_is_fitted(self, "module_")
        self._check_configuration()
        images = check_images(X)
        out = np.empty((len(images), self.n_features_out_), dtype=np.float32)
        cache = FeatureCache.of(self.memory, self._cache_config())
        todo = np.arange(len(images))
        if cache is not None:
            keys, found = cache.lookup(images)
            for i, row in found.items():
                out[i] = row
            todo = np.setdiff1d(todo, list(found))
        if len(todo):
            subset = images if len(todo) == len(images) else _safe_indexing(images, todo)
            rows = extract(
                self._engine.get(),
                subset,
                self.n_features_out_,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                jpeg_draft=self._fitted_params["jpeg_draft"],
                verbose=self.verbose,
                desc=f"features ({self.backbone_['name']})",
            )
            out[todo] = rows
            if cache is not None:
                for i, row in zip(todo, rows):
                    cache.put(keys[i], row)
        return out

    def _cache_config(self) -> tuple:
        spec = self._spec()
        return (
            self.backbone_["name"],
            self.backbone_["weights"],
            self.backbone_["sha256"],
            repr(spec.preprocessing),
            spec.pooling,
            spec.stages,
            spec.tta,
            bool(self._fitted_params["jpeg_draft"]),
            # Appended for int8 only, so that fp32 caches of earlier versions still hit.
            *(("int8",) if self._fitted_params["precision"] == "int8" else ()),
        )

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
        spec = self._spec()
        names = []
        poolings = ["avg", "max"] if spec.pooling == "avgmax" else [spec.pooling]
        for stage, dim in zip(spec.stages, self.stage_dims_):
            tag = re.sub(r"[^0-9a-zA-Z]+", "_", stage)
            for kind in poolings:
                names.extend(f"{tag}_{kind}_{i}" for i in range(dim))
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X is images: paths (strings), or (n, h, w[, c]) pixel arrays. A numeric (n, d)
        # matrix is refused on purpose: reading it as pixels would hide a user's mistake.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # ------------------------------------------------------------------ pickling

    def __getstate__(self):
        # Carry the weights as a plain state dict: the receiving machine may have no
        # network, an empty cache, or no GPU. The engine is rebuilt there on first use.
        state = self.__dict__.copy()
        state.pop("_engine", None)
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
        # Files of earlier versions: decoding as the head was trained (jpeg_draft came
        # later), no lazily built networks, no pass counter.
        state.setdefault("jpeg_draft", False)
        state.setdefault("engine", "auto")
        state.setdefault("precision", "fp32")
        state.setdefault("int8_cosine_", None)
        state.setdefault("_int8_model", None)
        state.get("_fitted_params", {}).setdefault("precision", "fp32")
        for stale in ("_compiled", "_inference_net", "n_forward_passes_"):
            state.pop(stale, None)
        self.__dict__.update(state)
        if module_state is None:
            return
        # Rebuild the architecture with random weights (no download), then load ours.
        module = zoo.load_backbone(self.backbone, None).module
        wanted = module.state_dict()
        # Earlier versions also kept the ImageNet classifier: not needed, not loaded.
        module.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in module_state.items() if k in wanted}
        )
        self.device_ = resolve_device(self.device)
        if self.device_.type == "cuda" and not torch.cuda.is_available():
            self.device_ = torch.device("cpu")  # fitted on a GPU, used on a laptop
        self.module_ = prepare_module(module, self.device_)
        if "_fitted_params" not in self.__dict__:
            self._fitted_params = {name: getattr(self, name) for name in _FITTED_PARAMS}
        self._engine = LazyEngine(self._build_engine)


def _engine_key(identity: dict, spec: FeatureSpec) -> str | None:
    """The network's key in the engine cache; None (not cached) without a sha256."""
    if not identity.get("sha256"):  # a module passed in, random weights
        return None
    return engine_cache_key("features", identity, repr(spec), torch.__version__, OPSET)


def _same(a, b) -> bool:
    """Parameter equality that treats lists and tuples of stage names alike."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays: ambiguous truth value
        return a is b
