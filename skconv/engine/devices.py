"""Devices and chunks: where a network runs and how many images it takes at once; mirroring."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = [
    "cpu_chunk_size",
    "forward_in_chunks",
    "mean_of_views",
    "mirror_views",
    "prepare_module",
    "resolve_device",
]


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
    >>> from skconv.engine import forward_in_chunks
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
    >>> from skconv.engine import mean_of_views, mirror_views
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
