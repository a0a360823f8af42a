"""Feature graphs: what a fitted feature network computes, as a module and as ONNX bytes."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..images import Preprocessing
from .devices import mean_of_views, mirror_views
from .pooling import pool_features

__all__ = [
    "OPSET",
    "FeatureSpec",
    "FromPixels",
    "PooledFeatures",
    "export_features",
    "export_onnx_bytes",
]

#: ONNX opset of exported graphs: onnxruntime 1.16 (2023) and later run it.
OPSET = 17


@dataclass(frozen=True)
class FeatureSpec:
    """What a fitted feature network computes, whichever engine runs it.

    Parameters
    ----------
    stages : tuple of str
        Stages whose pooled maps are concatenated.
    pooling : str
        As :func:`skconv.engine.pool_features` takes it.
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


def export_features(module: nn.Module, spec: FeatureSpec) -> bytes:
    """The pooled-feature computation as ONNX: uint8 pixels ``"image"`` in, ``"features"`` out."""
    size = spec.preprocessing.image_size
    model = FromPixels(PooledFeatures(module, spec), spec.preprocessing).eval()
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    return export_onnx_bytes(model, example, "image", ["features"])
