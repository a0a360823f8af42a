"""Building a backbone: architecture, weights and preprocessing into one :class:`Backbone`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..images import Preprocessing
from . import _hub
from ._features import FeatureNet, timm_feature_net, torchvision_feature_net
from ._registry import IMAGENET, PACKAGED, check_backbone_name, is_timm_name

__all__ = ["Backbone", "load_backbone"]


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
    imagenet_head : torch.nn.Module or None, default=None
        The original classifier, pooling included, mapping the final feature map to
        ImageNet logits; kept only when asked for (``load_backbone(...,
        imagenet_head=True)``), to check weights against ImageNet classes.

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
    imagenet_head: nn.Module | None = None

    @property
    def identity(self) -> dict:
        """Name, weights id and sha256: enough to tell two backbones' features apart."""
        return {"name": self.name, "weights": self.weights, "sha256": self.sha256}

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of a normalised batch (needs ``imagenet_head=True``)."""
        if self.imagenet_head is None:
            raise ValueError(
                "This backbone was loaded without its ImageNet classifier; pass "
                "load_backbone(..., imagenet_head=True)."
            )
        (final,) = self.module(x)
        return self.imagenet_head(final)


def _is_file_weights(weights: Any) -> bool:
    return isinstance(weights, (str, os.PathLike)) and (
        os.fspath(weights).endswith((".pth", ".pt", ".bin", ".safetensors"))
        or os.sep in os.fspath(weights)
    )


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


def _torchvision_model(arch: str, state_dict: dict | None) -> nn.Module:
    import torchvision.models as tvm

    model = tvm.get_model(arch, weights=None)
    if state_dict is not None:
        _load_strict(model, state_dict, arch)
    return model.eval()


def timm_preprocessing(pretrained_cfg: dict) -> Preprocessing:
    """The evaluation preprocessing of a timm pretrained config (``model.pretrained_cfg``)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, pretrained_cfg=dict(pretrained_cfg))
    interpolation = cfg.get("interpolation", "bilinear")
    return Preprocessing(
        image_size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg.get("crop_pct") or 0.875),
        mean=tuple(float(m) for m in cfg["mean"]),
        std=tuple(float(s) for s in cfg["std"]),
        interpolation=interpolation
        if interpolation in ("bilinear", "bicubic", "nearest", "lanczos")
        else "bilinear",
        crop_mode=cfg.get("crop_mode") or "center",
    )


def torchvision_preprocessing(weights_enum) -> Preprocessing:
    """The evaluation preprocessing of a torchvision weights enum (``weights.transforms()``)."""
    if weights_enum is None:
        return IMAGENET
    transform = weights_enum.transforms()
    crop = int(transform.crop_size[0])
    resize = int(transform.resize_size[0])
    interpolation = getattr(transform.interpolation, "value", "bilinear")
    return Preprocessing(
        image_size=crop,
        crop_pct=crop / resize,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=interpolation
        if interpolation in ("bilinear", "bicubic", "nearest")
        else "bilinear",
        resize=resize,
    )


def load_backbone(
    backbone: str = "efficientnet_lite0", weights: Any = "DEFAULT", *, imagenet_head: bool = False
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
    imagenet_head : bool, default=False
        Also keep the original ImageNet classifier (``Backbone.imagenet_head``), to
        check the weights on ImageNet classes. A feature extractor does not need it.

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
    name = check_backbone_name(backbone)
    # Random initialisation (weights=None) is seeded so that fitting twice gives the
    # same network, as scikit-learn's idempotent-fit contract asks; the global RNG is
    # left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loaded = _load_backbone(name, weights)
    if not imagenet_head:
        loaded.imagenet_head = None
    return loaded


def _load_backbone(name: str, weights: Any) -> Backbone:
    weights_id: str | None = None if weights is None else str(weights)
    sha = None
    state_dict = None
    file_weights = weights is not None and _is_file_weights(weights)
    if file_weights:
        path = os.fspath(weights)
        state_dict = _hub.load_local_state_dict(path)
        weights_id, sha = os.path.abspath(path), _hub.sha256(path)

    if name in PACKAGED:
        entry = PACKAGED[name]
        if weights not in (None, "DEFAULT") and not file_weights:
            raise ValueError(
                f"Packaged backbone {name!r} has one set of weights: use weights='DEFAULT', "
                f"None, or a local file; got {weights!r}."
            )
        if weights == "DEFAULT":
            path = entry.weights_file()
            state_dict = entry.converter(path, entry.arch)
            weights_id, sha = f"{entry.package}:{os.path.basename(path)}", _hub.sha256(path)
        if entry.family == "timm":
            module, head = timm_feature_net(_timm_model(entry.arch, state_dict))
        else:
            module, head = torchvision_feature_net(
                _torchvision_model(entry.arch, state_dict), entry.arch
            )
        preprocessing = entry.preprocessing
    elif is_timm_name(name):
        arch = name[len("timm/") :]
        if weights == "DEFAULT":
            model = _hub.timm_pretrained(arch, name)
            weights_id = f"timm:{model.pretrained_cfg.get('hf_hub_id') or arch}"
        elif weights is not None and not file_weights:
            raise ValueError(
                f"timm backbones take weights='DEFAULT', None or a local file; got {weights!r}. "
                "Pick a pretrained tag in the name instead, e.g. 'timm/resnet50.a1_in1k'."
            )
        else:
            model = _timm_model(arch, state_dict)
        preprocessing = timm_preprocessing(model.pretrained_cfg)
        module, head = timm_feature_net(model)
    else:
        import torchvision.models as tvm

        enum = None
        if file_weights:
            enum = tvm.get_model_weights(name).DEFAULT  # the preprocessing of its family
        elif weights is not None:
            enum = _hub.torchvision_weights(name, str(weights))
            state_dict = _hub.torchvision_download(enum, name)
            weights_id = f"{type(enum).__name__}.{enum.name}"
        module, head = torchvision_feature_net(_torchvision_model(name, state_dict), name)
        preprocessing = torchvision_preprocessing(enum)
    module.eval()
    return Backbone(
        module=module,
        preprocessing=preprocessing,
        name=name,
        weights=weights_id,
        sha256=sha,
        spec={"backbone": name, "weights": weights},
        imagenet_head=None if head is None else head.eval(),
    )
