"""Saving and loading fitted estimators: joblib for your own files, skops for others'.

A joblib file is a pickle, and loading a pickle runs whatever code its author put in
it. That is fine for a model you saved yourself and never for a file from someone
else. A skops file (:mod:`skops.io`) is a zip archive of JSON and ``.npy`` arrays that
names every type it holds; loading it builds only types you trust and refuses the
rest before anything is constructed. :func:`load` therefore loads a skops file holding
only scikit-learn, NumPy and skconv types without asking, refuses any other type
unless you name it, and refuses a joblib file unless you say ``trusted=True``.

Every write is atomic (:mod:`skconv._io`): an interrupted save leaves the previous file
as it was, never a truncated one.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ._io import atomic_write, dump_joblib

__all__ = ["FORMATS", "SKCONV_TYPES", "UnsafeFileError", "load", "save", "untrusted_types"]

#: The formats :func:`save` writes.
FORMATS = ("joblib", "skops")

#: skconv's own types that a skops file may hold without being named in ``trusted``.
#: Their ``__setstate__`` only rebuilds a registered architecture with random weights
#: (no download, no file read) and copies the stored arrays into it.
SKCONV_TYPES = (
    "skconv.features.ConvFeatureTransformer",
    "skconv.images.Preprocessing",
)

Trusted = Union[None, bool, Sequence[str]]


class UnsafeFileError(ValueError):
    """A model file would run code or read data that the caller did not trust."""


def save(
    estimator: Any,
    path: str | os.PathLike,
    format: str = "joblib",
    *,
    overwrite: bool = False,
    compress: int = 0,
) -> Path:
    """Save a (fitted) estimator to one file, atomically.

    Parameters
    ----------
    estimator : object
        A fitted estimator: a :class:`~skconv.ConvFeatureTransformer`, a
        :class:`~sklearn.pipeline.Pipeline` holding one, a
        :class:`~skconv.FineTuneClassifier` (``format="joblib"`` only), ...
    path : str or path-like
        The file to write; by convention ``*.joblib`` or ``*.skops``.
    format : {"joblib", "skops"}, default="joblib"
        ``"joblib"`` pickles anything, loads fastest, and is for files you load
        yourself. ``"skops"`` writes :mod:`skops.io`'s format, which loads without
        running code: use it for files you give to others.
        :class:`~skconv.FineTuneClassifier` holds torch modules and optimizer state,
        which skops cannot store; share its weights with ``save_params`` instead.
    overwrite : bool, default=False
        Replace ``path`` if it exists; otherwise an existing file raises
        :class:`FileExistsError`. Either way, a failed save leaves ``path`` as it was.
    compress : int, default=0
        Compression level from 0 (none, fastest) to 9.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If ``format`` is not one of :data:`FORMATS`.
    TypeError
        If ``format="skops"`` and the estimator holds a type skops cannot store; the
        message names it. Nothing is written.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skconv.persistence import load, save
    >>> folder = Path(tempfile.mkdtemp())
    >>> model = LogisticRegression(C=2.0).fit([[0.0], [1.0]], [0, 1])
    >>> load(save(model, folder / "model.skops", format="skops")).C
    2.0
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}.")
    if not isinstance(compress, int) or not 0 <= compress <= 9:
        raise ValueError(f"compress must be an int from 0 to 9, got {compress!r}.")
    if not overwrite and Path(path).exists():  # before the (slow) serialisation
        raise FileExistsError(
            f"File {os.fspath(path)!r} exists; refusing to overwrite it "
            "(pass overwrite=True to replace it)."
        )
    if format == "joblib":
        return dump_joblib(estimator, path, overwrite=overwrite, compress=compress)
    data = _skops_bytes(estimator, compress)  # before touching the disk: failures write nothing
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


def _skops():
    try:
        import skops.io
    except ImportError as exc:  # pragma: no cover - skops is in the dev extra
        raise ImportError("format='skops' needs the skops package: pip install skops") from exc
    return skops.io


def _holds_a_torch_net(estimator: Any) -> bool:
    """Whether ``estimator`` is, or holds as a parameter, a skorch net."""
    objects = [estimator]
    if hasattr(estimator, "get_params"):
        objects += list(estimator.get_params(deep=True).values())
    modules = {cls.__module__.partition(".")[0] for obj in objects for cls in type(obj).__mro__}
    return "skorch" in modules


def _skops_bytes(estimator: Any, compress: int) -> bytes:
    sio = _skops()
    try:
        if _holds_a_torch_net(estimator):
            # skops can write one, but loading it means trusting torch's and Python's
            # own types (print, functools.partial): a file that is no safer than a pickle.
            raise TypeError("a skorch net's file would need torch and builtin types trusted")
        if compress:
            return sio.dumps(estimator, compression=zipfile.ZIP_DEFLATED, compresslevel=compress)
        return sio.dumps(estimator)
    except Exception as exc:
        # skops raises UnsupportedTypeException, and torch objects fail inside it with
        # RuntimeError/TypeError; all mean "this object cannot be a skops file".
        raise TypeError(
            f"Cannot save {type(estimator).__name__} with format='skops': "
            f"{type(exc).__name__}: {exc}. skops stores scikit-learn, NumPy and skconv "
            "feature-extractor types only; save this object with format='joblib' for your "
            "own use (a FineTuneClassifier can share its weights with "
            "save_params(f_params='weights.pt'))."
        ) from exc


def _is_skops_file(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "schema.json" in archive.namelist()


def untrusted_types(path: str | os.PathLike) -> list[str]:
    """List the types in a skops file that :func:`load` would refuse by default.

    Parameters
    ----------
    path : str or path-like
        A file written by ``save(..., format="skops")`` or :func:`skops.io.dump`.

    Returns
    -------
    types : list of str
        Fully qualified type names beyond skops' defaults and :data:`SKCONV_TYPES`.
        Review them before passing any to ``load(path, trusted=[...])``.

    Raises
    ------
    ValueError
        If ``path`` is not a skops file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from skconv.persistence import save, untrusted_types
    >>> path = save(FunctionTransformer(func=print), Path(tempfile.mkdtemp()) / "f.skops",
    ...             format="skops")
    >>> untrusted_types(path)
    ['builtins.print']
    """
    sio = _skops()
    path = Path(path)
    if not path.is_file() or not _is_skops_file(path):
        raise ValueError(f"{os.fspath(path)!r} is not a skops file.")
    return [t for t in sio.get_untrusted_types(file=path) if t not in SKCONV_TYPES]


def load(path: str | os.PathLike, trusted: Trusted = None) -> Any:
    """Load an estimator saved by :func:`save`, refusing anything not trusted.

    The format is read from the file's content, not its name.

    Parameters
    ----------
    path : str or path-like
        A skops or joblib file.
    trusted : None, list of str or True, default=None
        What the caller vouches for.

        * None: load a skops file that holds only types skops trusts by default
          (scikit-learn, NumPy, builtins) and :data:`SKCONV_TYPES`; refuse a
          joblib file, because unpickling it can run any code.
        * list of str: also trust these type names in a skops file (see
          :func:`untrusted_types`); a joblib file is still refused.
        * True: you made this file, or trust its author as you trust code you
          run. A joblib file is unpickled; a skops file loads whatever types it
          holds. Never pass True for a file from someone else.

    Returns
    -------
    estimator : object
        The loaded estimator.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    UnsafeFileError
        If ``path`` is a joblib/pickle file and ``trusted`` is not True, or a skops
        file sets ``memory`` (a cache folder whose stored rows would be read as features on
        use) and ``trusted`` is not True.
    skops.io.exceptions.UntrustedTypesFoundException
        If a skops file holds a type that is not trusted; the message lists it.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skconv.persistence import load, save
    >>> path = save(LogisticRegression(), Path(tempfile.mkdtemp()) / "model.joblib")
    >>> load(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skconv.persistence.UnsafeFileError: ...model.joblib' is a pickle (joblib) file...
    >>> load(path, trusted=True)
    LogisticRegression()
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {os.fspath(path)!r}.")
    if (
        trusted is not None
        and trusted is not True
        and (isinstance(trusted, (str, bytes)) or not isinstance(trusted, Sequence))
    ):
        raise ValueError(f"trusted must be None, True or a list of type names, got {trusted!r}.")
    if _is_skops_file(path):
        return _load_skops(path, trusted)
    if trusted is not True:
        raise UnsafeFileError(
            f"{os.fspath(path)!r} is a pickle (joblib) file: loading it can run any code "
            "its author put in it. Load it with trusted=True only if you made it or trust "
            "its author; ask others for a skops file (save(..., format='skops'))."
        )
    import joblib

    return joblib.load(path)


def _load_skops(path: Path, trusted: Trusted) -> Any:
    sio = _skops()
    data = path.read_bytes()  # read once: what is audited is what gets built
    if trusted is True:
        return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    estimator = sio.loads(data, trusted=list(SKCONV_TYPES) + [str(t) for t in trusted or []])
    # Checked on the built objects, not the JSON schema, which can alias nodes by id.
    caches = sorted(set(_memory_settings(estimator, set())))
    if caches:
        raise UnsafeFileError(
            f"{os.fspath(path)!r} sets {', '.join(caches)}: a cache folder holds pickles, "
            "which would be unpickled (and could run code) when the model is used. Load it "
            "with trusted=True only if you made it or trust its author, or ask for a file "
            "saved after set_params(memory=None)."
        )
    return estimator


def _memory_settings(obj: Any, seen: set):
    """Yield ``Name(memory=...)`` for every object in ``obj`` whose ``memory`` is set."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, np.ndarray):
        children = list(obj.ravel()) if obj.dtype == object else []
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        attrs = vars(obj)
        if attrs.get("memory") is not None:
            yield f"{type(obj).__name__}(memory={attrs['memory']!r})"
        children = list(attrs.values())
    else:
        return
    for child in children:
        yield from _memory_settings(child, seen)
