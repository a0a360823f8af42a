"""Shared fixtures: offline hubs, small images, and the BUSI data when present."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Never wait on a network: timm/huggingface would otherwise retry for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The engine cache (exported graphs, OpenVINO models) in a folder of this run, not ~/.cache,
# removed when the run ends.
if "SKCONV_CACHE_DIR" not in os.environ:
    os.environ["SKCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="skconv-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SKCONV_CACHE_DIR"], ignore_errors=True)

# Under pytest-xdist (make test runs one worker per core), each worker computes with
# one thread: a worker's torch threads would otherwise compete with the other
# workers' for the same cores. Set before torch is imported, and inherited by the
# subprocesses that tests start.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

BUSI = Path(
    os.environ.get(
        "SKCONV_BUSI", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "busi"
    )
)


def busi_paths(n_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted BUSI paths and labels, the first ``n_per_class`` of each class."""
    paths, labels = [], []
    for cls in ("benign", "malignant", "normal"):
        files = sorted((BUSI / cls).glob(f"{cls}_*.png"))
        files = files[:n_per_class] if n_per_class else files
        paths += [str(f) for f in files]
        labels += [cls] * len(files)
    return np.asarray(paths), np.asarray(labels)


@pytest.fixture
def photo():
    """``photo(height, width, seed=0)``: a smooth RGB scene with some texture (uint8).

    Like a photo rather than noise, so that it compresses and scales as one does in
    JPEG tests; ``seed`` changes the texture and the pattern's frequency.
    """

    def make(height: int, width: int, seed: int = 0) -> np.ndarray:
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        texture = np.random.default_rng(seed).normal(0, 6, (height, width))
        pattern = [np.sin((6 + seed) * x + c) * np.cos(4 * y) for c in range(3)]
        return np.clip(120 + 100 * np.dstack(pattern) + texture[..., None], 0, 255).astype(
            np.uint8
        )

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (use with ``pytestmark``).

    Tiny networks gain nothing from threads, and on a busy machine a starved thread
    stalls every parallel op: one thread is faster and steadier there.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


needs_busi = pytest.mark.skipif(not (BUSI / "benign").is_dir(), reason=f"BUSI not found at {BUSI}")


@pytest.fixture(scope="session")
def busi_small():
    """60 BUSI images, 20 per class (skips when BUSI is absent)."""
    if not (BUSI / "benign").is_dir():
        pytest.skip(f"BUSI not found at {BUSI}")
    return busi_paths(20)


@pytest.fixture(scope="session")
def us_folder(tmp_path_factory):
    """8 synthetic ultrasound-like images per class, 64 px, one folder per class; read only."""
    from skconv.datasets import make_ultrasound_folder

    return make_ultrasound_folder(
        tmp_path_factory.mktemp("data") / "us", n_per_class=8, image_size=64, random_state=0
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)
