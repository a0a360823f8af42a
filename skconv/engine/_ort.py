"""ONNX Runtime on a CPU's cores side by side: one thread per run, a few images per run.

On the 2-core benchmark machine, running chunks of 8 images on one thread each, as many at
once as there are cores, was faster than running them one after the other on every core:
no core waits for the other inside a layer, and each decodes its next images while the
other computes (``benchmarks/results/throughput.md``). Both ONNX Runtime paths run this
way: the feature engine of :class:`~skconv.ConvFeatureTransformer` and
:class:`skconv.export.OnnxClassifier`. Importing this module imports neither torch nor
skorch.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

__all__ = ["ONNX_CHUNK", "ParallelRuns", "ParallelSession", "available_cores", "ordered_map"]

#: Images per single-threaded run: 4 and 8 measured alike end to end on 2 cores
#: (EfficientNet-Lite0, SqueezeNet), 16 slower.
ONNX_CHUNK = 8


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


class ParallelRuns:
    """Runs of a few images each, ``n_threads`` at a time on a thread pool, in order.

    What :class:`ParallelSession` (ONNX Runtime) and the OpenVINO engine share: the
    chunking and the threads. A subclass says how one chunk runs.

    Parameters
    ----------
    n_threads : int
        Runs at once.
    """

    def __init__(self, n_threads: int):
        self.n_threads = max(1, int(n_threads))
        self._pool = None
        self._pool_pid = os.getpid()
        self._pool_lock = threading.Lock()

    @staticmethod
    def chunks_of(n: int, n_threads: int, most: int = 0) -> list:
        """``range(n)`` cut into slices of at most :data:`ONNX_CHUNK` (and ``most``) images.

        The slices are as even as can be, and their number is a multiple of
        ``n_threads`` where there are images enough: no thread is left idle by a short
        last slice.
        """
        size = min(ONNX_CHUNK, most or ONNX_CHUNK)
        count = -(-n // size)
        count = min(n, -(-count // n_threads) * n_threads)
        edges = [n * i // count for i in range(count + 1)] if count else [0]
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def chunks(self, n: int, most: int = 0) -> list:
        """:meth:`chunks_of` ``n`` images for this session's threads."""
        return self.chunks_of(n, self.n_threads, most)

    def map_chunks(self, work: Callable, n: int, most: int = 0, window: int = 0) -> Iterator:
        """Yield ``(rows, work(rows))`` for the slices of :meth:`chunks`, in order.

        ``work`` runs on ``n_threads`` threads, at most ``window`` slices ahead of the
        caller (all of them by default). A caller that may stop early (an error of its
        own) closes the generator, e.g. with :func:`contextlib.closing`: closing waits
        for the slices in flight and submits no more.
        """
        chunks = self.chunks(n, most)
        if self.n_threads == 1 or len(chunks) <= 1:
            yield from zip(chunks, map(work, chunks))
            return
        results = ordered_map(self._threads(), work, chunks, window or len(chunks))
        try:
            yield from zip(chunks, results)
        finally:
            results.close()  # a caller that stops early waits for the chunks in flight

    def run_in_chunks(self, batch):
        """``self.run`` over the chunks of ``batch``, on the threads, joined in order.

        The exported feature engines' ``__call__``: a subclass defines ``run(rows)``,
        one chunk on the calling thread.
        """
        import numpy as np

        batch = np.ascontiguousarray(batch)
        chunks = self.map_chunks(lambda rows: self.run(batch[rows]), len(batch))
        parts = [out for _, out in chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _threads(self) -> ThreadPoolExecutor:
        """The thread pool, made again in a forked child (which inherits no threads)."""
        if self._pool_pid != os.getpid():
            # A forked child: its copy of the lock may have been held by a thread that
            # does not exist here, and its pool has no threads. It starts single-threaded.
            self._pool_lock = threading.Lock()
            self._pool = None
            self._pool_pid = os.getpid()
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="skconv-onnx")
            return self._pool

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=False)


class ParallelSession(ParallelRuns):
    """An ONNX Runtime CPU session whose runs go ``n_threads`` at a time, one thread each.

    Parameters
    ----------
    model : bytes, str or path-like
        The ONNX model, or the path of its file.
    n_threads : int
        Runs at once, each on its own thread (ONNX Runtime's ``intra_op_num_threads`` is 1).

    Attributes
    ----------
    session : onnxruntime.InferenceSession
        The session; its ``run`` is thread-safe.

    Examples
    --------
    >>> from skconv.engine import ParallelSession
    >>> ParallelSession.chunks_of(19, n_threads=2)
    [slice(0, 4, None), slice(4, 9, None), slice(9, 14, None), slice(14, 19, None)]
    """

    def __init__(self, model, n_threads: int):
        import onnxruntime as ort

        ParallelRuns.__init__(self, n_threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the parallelism is across runs
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not isinstance(model, bytes):
            model = os.fspath(model)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def ordered_map(pool, work: Callable, items: Sequence, window: int) -> Iterator:
    """Yield ``work(item)`` for each item in order, at most ``window`` submitted ahead.

    On an error no further item is submitted; those in flight finish before it is
    raised, so no thread is left working for a call that has failed.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from skconv.engine import ordered_map
    >>> with ThreadPoolExecutor(2) as pool:
    ...     list(ordered_map(pool, lambda i: i * i, range(5), window=2))
    [0, 1, 4, 9, 16]
    """
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # wait for it; its error is not the one raised
