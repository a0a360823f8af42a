"""Run skconv on a Dask cluster: blockwise feature extraction and torch threads per worker.

Two recipes scale skconv past one machine, both on Dask rather than on any
skconv-specific server (the guide is ``docs/scaling.rst``):

* :func:`transform_blockwise` turns a Dask collection of image paths into a Dask
  array of features (or predictions), block by block on the workers. The fitted
  estimator is shipped to each worker once and its backbone built once there;
  each worker reads its own files.
* ``GridSearchCV`` over backbones and heads needs nothing from this module:
  ``with joblib.parallel_backend("dask"): search.fit(paths, y)`` ships the
  unfitted estimator and the paths, and every fit reads its images on a worker.

:class:`TorchThreads` (or :func:`configure_workers`) sets how many threads torch
uses in each worker, so that workers sharing a machine do not oversubscribe it.

This module needs the ``dask`` extra: ``pip install 'skconv[dask]'``.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import threading
import uuid
from collections import OrderedDict
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils.validation import check_is_fitted


def _import_optional(module: str):
    """Import ``module`` of the ``dask`` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{module} is needed here: pip install 'skconv[dask]'") from exc


_dask = _import_optional("dask")
_distributed = _import_optional("distributed")

import cloudpickle  # noqa: E402  (a dependency of dask)
import dask.array as da  # noqa: E402
from dask.base import tokenize  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

__all__ = ["TorchThreads", "configure_workers", "transform_blockwise"]

_METHODS = ("transform", "predict", "predict_proba")


# --------------------------------------------------------------------------- torch threads


class TorchThreads(WorkerPlugin):
    """A worker plugin that sets torch's intra-op thread count in every worker.

    Dask's nanny starts workers with ``OMP_NUM_THREADS=1``, so torch uses one
    thread per task unless told otherwise. Choose ``threads`` so that
    ``threads * threads_per_worker * workers per machine`` is about the number of
    cores of a machine: one worker with one Dask thread per machine wants all the
    cores, one worker per core wants 1.

    Registered once, the plugin also applies to workers that join or restart
    later. Torch fixes a thread's count when that thread first runs a parallel
    operation, so threads that already ran torch keep their old count; the tasks
    of :func:`transform_blockwise` re-apply the count themselves, and
    :func:`configure_workers` checks and fixes it.

    Parameters
    ----------
    threads : int, default=1
        Threads torch may use in each task.

    See Also
    --------
    configure_workers : Registers this plugin and reports the count each worker uses.

    Examples
    --------
    On a running cluster (skipped here: it needs a client):

    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
    >>> client.register_plugin(TorchThreads(threads=4))  # doctest: +SKIP

    The plugin itself is an ordinary object:

    >>> TorchThreads(threads=2).threads
    2
    """

    name = "skconv-torch-threads"  # one per cluster: registering again replaces it

    def __init__(self, threads: int = 1):
        # A plugin is configured once, when built: its check cannot wait for a fit.
        validate_parameter_constraints(
            {"threads": [Interval(Integral, 1, None, closed="left")]},
            {"threads": threads},
            caller_name="TorchThreads",
        )
        self.threads = int(threads)

    def setup(self, worker) -> None:
        # Sets torch's process-wide default, which task threads pick up when they
        # first run torch; a fresh or restarted worker has run nothing yet.
        torch.set_num_threads(self.threads)


def _worker_torch_threads() -> int | None:
    """The thread count a registered :class:`TorchThreads` asks for on this worker."""
    try:
        worker = _distributed.get_worker()
    except ValueError:  # not on a worker: dask's local scheduler, or plain Python
        return None
    plugin = worker.plugins.get(TorchThreads.name)
    return None if plugin is None else plugin.threads


def _apply_torch_threads() -> int:
    wanted = _worker_torch_threads()
    if wanted is not None and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)  # this task thread ran torch before the plugin came
    return torch.get_num_threads()


def configure_workers(client, threads: int = 1) -> dict[str, int]:
    """Set torch's thread count on every worker, now and for workers that join later.

    Registers :class:`TorchThreads` and runs one small task per worker to apply
    and read the count in a task thread, where it matters.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster.
    threads : int, default=1
        Threads torch may use in each task; see :class:`TorchThreads` for how to
        choose it.

    Returns
    -------
    threads_by_worker : dict of str to int
        Worker address to the thread count torch reports in a task on it.

    Examples
    --------
    Needs a cluster (skipped here):

    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> configure_workers(Client(cluster), threads=1)  # doctest: +SKIP
    {'tcp://127.0.0.1:40145': 1, 'tcp://127.0.0.1:41321': 1}
    """
    plugin = TorchThreads(threads)
    client.register_plugin(plugin)
    # With threads_per_worker=1 (one model per worker) this reaches every task thread.
    futures = {
        addr: client.submit(
            _apply_torch_threads, workers=[addr], allow_other_workers=False, pure=False
        )
        for addr in client.scheduler_info(n_workers=-1)["workers"]
    }
    return {addr: future.result() for addr, future in futures.items()}


# --------------------------------------------------------------------------- blockwise


def _default_client():
    try:
        return _distributed.default_client()
    except ValueError:  # no client: dask's local scheduler runs the blocks in this process
        return None


# Fitted models built in this (worker) process, by the digest of their pickled bytes.
_MODELS: OrderedDict[str, Any] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2


class _Shipped:
    """A fitted estimator as pickled bytes plus their digest.

    What is scattered to the workers: moving or copying bytes builds nothing. Dask's
    active memory manager drops surplus replicas of scattered data between and near
    the end of computations, and a worker that needs the data again fetches it; the
    process-level cache keyed by the digest means it does not rebuild the backbone.
    """

    __slots__ = ("token", "payload")

    def __init__(self, estimator):
        # cloudpickle: a pipeline may hold lambdas (FunctionTransformer) that pickle refuses.
        self.payload = cloudpickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
        self.token = hashlib.sha256(self.payload).hexdigest()

    def __getstate__(self):
        return self.token, self.payload

    def __setstate__(self, state):
        self.token, self.payload = state

    def load(self):
        """The estimator, unpickled (its backbone built) at most once per process."""
        with _MODELS_LOCK:  # two task threads missing together would build twice
            model = _MODELS.get(self.token)
            if model is None:
                model = pickle.loads(self.payload)
                _MODELS[self.token] = model
                while len(_MODELS) > _MODELS_KEPT:
                    _MODELS.popitem(last=False)
            _MODELS.move_to_end(self.token)
        return model


def _path_block(part) -> np.ndarray:
    """One partition of a bag, Series or one-column DataFrame as a 1-D object array."""
    if hasattr(part, "iloc") and getattr(part, "ndim", 1) == 2:
        part = part.iloc[:, 0]
    return np.asarray(list(part), dtype=object)


def _as_path_array(X: Any, chunk_size: int) -> da.Array:
    """``X`` as a 1-D Dask array of paths, one block per partition of ``X``."""
    if isinstance(X, da.Array):
        if X.ndim == 2 and X.shape[1] == 1:
            return X[:, 0]
        if X.ndim != 1:
            raise ValueError(
                f"X must be a 1-D Dask array of image paths (or one column), got shape {X.shape}."
            )
        return X
    if _dask.is_dask_collection(X) and hasattr(X, "to_delayed"):
        columns = getattr(X, "columns", None)
        if columns is not None and len(columns) != 1:
            raise ValueError(
                f"X must be a Dask DataFrame column of image paths, got a DataFrame with "
                f"columns {list(columns)}; pass X[<column>]."
            )
        # Partition lengths stay unknown (nan chunks): learning them would read X twice.
        parts = [
            da.from_delayed(
                _dask.delayed(_path_block)(part),
                shape=(np.nan,),
                dtype=object,
                meta=np.empty(0, dtype=object),
            )
            for part in X.to_delayed()
        ]
        return da.concatenate(parts)
    if _dask.is_dask_collection(X):
        raise TypeError(
            f"X is a {type(X).__name__}; transform_blockwise takes a Dask array, bag, "
            "Series or one-column DataFrame of image paths."
        )
    if isinstance(X, str) or (hasattr(X, "iloc") and getattr(X, "ndim", 1) != 1):
        raise ValueError(
            "X must be a sequence of image paths (a list, 1-D array or Series), "
            f"got {type(X).__name__}."
        )
    paths = np.asarray(list(X), dtype=object)
    if paths.ndim != 1 or len(paths) == 0:
        raise ValueError(
            f"X must be a non-empty 1-D sequence of image paths, got shape {paths.shape}."
        )
    return da.from_array(paths, chunks=chunk_size, name=False)


def _output_spec(estimator, method: str, n_features: int | None) -> tuple[tuple, np.dtype]:
    """Shape of one output row and dtype of ``estimator.<method>``, from fitted attributes."""
    if not hasattr(estimator, method):
        raise AttributeError(f"{type(estimator).__name__} has no method {method!r}.")
    check_is_fitted(estimator)  # fail here, not once per block on the workers
    if method == "predict":
        classes = getattr(estimator, "classes_", None)
        return (), (np.asarray(classes).dtype if classes is not None else np.dtype(np.float64))
    if method == "predict_proba":
        return (len(estimator.classes_),), np.dtype(np.float64)
    if n_features is None:
        n_features = getattr(estimator, "n_features_out_", None)
    if n_features is None:
        try:
            n_features = len(estimator.get_feature_names_out())
        except (AttributeError, ValueError, TypeError) as exc:
            raise ValueError(
                f"Cannot tell how many features {type(estimator).__name__}.transform "
                "returns: it has neither n_features_out_ nor get_feature_names_out; "
                "pass n_features."
            ) from exc
    # Image features are float32 (ConvFeatureTransformer, and sklearn steps keep it).
    return (int(n_features),), np.dtype(np.float32)


def _apply(block: np.ndarray, estimator, method: str, tail: tuple, dtype) -> np.ndarray:
    """Run ``estimator.<method>`` on one block of paths; runs on a worker."""
    if len(block) == 0:  # a filtered bag or frame can have empty partitions
        return np.empty((0, *tail), dtype=dtype)
    if isinstance(estimator, _Shipped):
        estimator = estimator.load()
    _apply_torch_threads()
    return np.asarray(getattr(estimator, method)(block), dtype=dtype)


@validate_params(
    {
        "estimator": "no_validation",
        "X": "no_validation",
        "method": [StrOptions(set(_METHODS))],
        "client": "no_validation",
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def transform_blockwise(
    estimator,
    X,
    *,
    method: str = "transform",
    client=None,
    chunk_size: int = 256,
    n_features: int | None = None,
) -> da.Array:
    """Apply a fitted estimator to a Dask collection of image paths, block by block.

    Each block of paths is transformed on a worker, which reads the files itself:
    they must be reachable there under the same paths (a shared filesystem). The
    estimator is pickled once here and scattered to every worker
    (``client.scatter(..., broadcast=True)``); each worker process unpickles it,
    building its backbone, once and keeps it for later calls with the same fitted
    estimator. Putting the estimator in every task instead (what
    ``dask_ml.wrappers.ParallelPostFit`` does) ships the weights and rebuilds the
    backbone for every block.

    The result is lazy: call ``.compute()`` (or ``da.to_zarr``, ...) on the same
    client. A worker lost mid-way costs only time: Dask reruns its blocks
    elsewhere and a restarted worker fetches the estimator from another one. Only
    if every worker holding the estimator is lost at once does the computation
    fail; call this function again.

    Parameters
    ----------
    estimator : estimator
        A fitted :class:`~skconv.ConvFeatureTransformer`, or a fitted pipeline
        that starts with one (any estimator with ``method``).
    X : dask array, dask bag, dask Series or sequence of str
        Image paths: a 1-D Dask array (or one column of a 2-D one), a bag, a Dask
        Series or one-column DataFrame (one block per partition), or an in-memory
        list, array or pandas Series cut into blocks of ``chunk_size``.
    method : {"transform", "predict", "predict_proba"}, default="transform"
        The method of ``estimator`` to apply.
    client : distributed.Client or None, default=None
        The client to ship the estimator through; None uses the current client.
        Without any client, the blocks run in this process on Dask's local
        scheduler and nothing is shipped.
    chunk_size : int, default=256
        Paths per block when ``X`` is in memory. Use several ``batch_size`` of the
        transformer per block, so that per-task overhead stays small.
    n_features : int or None, default=None
        Width of the output of ``transform``; needed only when the estimator has
        neither ``n_features_out_`` nor ``get_feature_names_out``.

    Returns
    -------
    result : dask.array.Array
        ``(n_images, n_features)`` float32 for ``transform``,
        ``(n_images, n_classes)`` float64 for ``predict_proba``, ``(n_images,)``
        for ``predict``; blocked like ``X`` along the images (unknown block
        lengths for a bag or frame: ``result.compute_chunk_sizes()`` learns them).

    Raises
    ------
    ValueError
        If ``X`` is not a 1-D collection of paths or ``method`` is not allowed.
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted (checked here, before anything is shipped).
    TypeError
        If ``X`` is a Dask collection of another kind.

    See Also
    --------
    configure_workers : Set torch's thread count on the workers first.

    Examples
    --------
    Without a client the blocks run here, on Dask's local scheduler:

    >>> import tempfile
    >>> from skconv import ConvFeatureTransformer
    >>> from skconv.datasets import load_image_folder, make_ultrasound_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> paths = load_image_folder(make_ultrasound_folder(tmp.name + "/us", n_per_class=2,
    ...                                                  random_state=0)).paths
    >>> t = ConvFeatureTransformer(backbone="resnet18", weights=None, image_size=32).fit(paths)
    >>> features = transform_blockwise(t, paths, chunk_size=4)
    >>> features.shape, features.numblocks
    ((6, 512), (2, 1))
    >>> bool(abs(features.compute() - t.transform(paths)).max() < 1e-5)
    True
    >>> tmp.cleanup()

    On a cluster (skipped here: it needs one), with paths every worker can read:

    >>> import dask.bag as db  # doctest: +SKIP
    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
    >>> bag = db.from_sequence(shared_paths, partition_size=512)  # doctest: +SKIP
    >>> features = transform_blockwise(t, bag).compute()  # doctest: +SKIP
    """
    paths = _as_path_array(X, int(chunk_size))

    tail, dtype = _output_spec(estimator, method, n_features)
    client = client if client is not None else _default_client()
    if client is None:
        ref = estimator  # dask's local scheduler: the blocks share this very object
        key = uuid.uuid4().hex
    else:
        # hash=False: dask would hash the payload again for a key we do not need.
        shipped = _Shipped(estimator)
        [ref] = client.scatter([shipped], broadcast=True, hash=False)
        key = ref.key
    # The name is given, not derived: dask would otherwise tokenise the estimator.
    name = f"skconv-{method}-{tokenize(paths.name, key, method, tail, str(dtype))}"
    return paths.map_blocks(
        _apply,
        ref,
        method,
        tail,
        dtype,
        dtype=dtype,
        chunks=(paths.chunks[0], *((d,) for d in tail)),
        new_axis=list(range(1, 1 + len(tail))) or None,
        meta=np.empty((0, *tail), dtype=dtype),
        name=name,
    )
