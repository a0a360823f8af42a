"""The batched run loop: an engine over ``X``, decoding batch by batch, memory flat."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import numpy as np
import torch

from ..images import Preprocessing, crop_batch, load_batch
from ._ort import ParallelRuns, ordered_map

__all__ = ["extract"]


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

    With the ONNX Runtime and OpenVINO engines each of their threads decodes a chunk
    of images, then runs the graph on it, one thread per core. With torch on a CPU each step
    decodes
    its batch with all cores into one reused buffer, then computes (decoding alongside
    the network's threads was measured slower); worker processes decode in parallel
    with one thread each; on an accelerator a thread decodes the next batch while the
    current one computes.
    """
    from tqdm.auto import tqdm

    rows = np.empty((len(images), n_features), dtype=np.float32)
    if isinstance(engine, ParallelRuns) and not num_workers:
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
