"""Random streams of fine-tuning: a seeded fit draws from its own copy of torch's."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["gpu_index", "seeded_rng"]


@contextlib.contextmanager
def seeded_rng(seed: int | None, device):
    """Draw from torch's generators seeded with ``seed``, and put them back afterwards.

    The CPU generator and that of the GPU trained on are forked: a seeded fit draws the
    same numbers whatever ran before it, and the caller's random stream is left as it
    was. Without a seed, the fit draws from the caller's stream, as skorch does.
    """
    if seed is None:
        yield
        return
    gpu = gpu_index(device)
    gpus = [] if gpu is None else [gpu]
    with torch.random.fork_rng(devices=gpus):
        torch.random.default_generator.manual_seed(seed)
        if gpu is not None:
            torch.cuda.default_generators[gpu].manual_seed(seed)
        yield


def gpu_index(device) -> int | None:
    """The index of the GPU that ``device`` names, None for a CPU."""
    if not str(device).startswith("cuda"):
        return None
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index
