"""Atomic file writes: a file or a folder appears complete, or not at all.

Everything skconv writes for a user (models, reports, figures, CSV tables, output
folders) goes through here. A file is written to a temporary sibling in the same
folder and moved into place with :func:`os.replace`, which is atomic on one file
system, so an interrupted run (an error, Ctrl-C, a full disk) never leaves a truncated
file under the final name. Existing files are never overwritten unless the caller says
so, and an existing non-empty folder is never written into.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "to_python",
    "atomic_write",
    "atomic_dir",
    "check_new_dir",
    "dump_joblib",
    "write_json",
    "write_text",
]

_MODES = ("w", "wt", "wb")


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse_existing_file(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"Cannot write the file {os.fspath(path)!r}: it is a folder.")
    if path.exists():
        raise FileExistsError(
            f"File {os.fspath(path)!r} exists; refusing to overwrite it "
            "(pass overwrite=True to replace it)."
        )


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    overwrite: bool = False,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[Any]:
    """Open a file for writing that appears under ``path`` only when complete.

    The data go to a hidden temporary file in the same folder as ``path``; when the
    ``with`` block ends without an error, the file is flushed to disk and moved onto
    ``path`` in one atomic step. If the block raises, the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or path-like
        The file to write. Its folder must exist.
    mode : {"w", "wt", "wb"}, default="w"
        Text or binary mode.
    overwrite : bool, default=False
        Replace ``path`` if it exists. If False, an existing ``path`` raises
        :class:`FileExistsError` both before writing and at the final move (a file
        that appeared meanwhile is not clobbered).
    encoding : str or None, default="utf-8"
        Text encoding; ignored in binary mode.
    newline : str or None, default=None
        As for :func:`open`, in text mode (``""`` for the :mod:`csv` module).

    Yields
    ------
    file : file object
        The open temporary file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        If ``mode`` is not one of the allowed values.

    Examples
    --------
    >>> import os, tempfile
    >>> from skconv._io import atomic_write
    >>> folder = tempfile.mkdtemp()
    >>> target = os.path.join(folder, "notes.txt")
    >>> with atomic_write(target) as f:
    ...     _ = f.write("complete or absent")
    >>> open(target).read()
    'complete or absent'
    >>> with atomic_write(target) as f:  # doctest: +ELLIPSIS
    ...     pass
    Traceback (most recent call last):
    ...
    FileExistsError: File '...notes.txt' exists; refusing to overwrite it (pass overwrite=True to replace it).
    """  # noqa: E501
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}.")
    path = Path(path)
    if path.is_dir() or not overwrite:
        _refuse_existing_file(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot write {os.fspath(path)!r}: the folder {os.fspath(folder)!r} does not exist."
        )
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        binary = "b" in mode
        with os.fdopen(
            fd,
            "wb" if binary else "w",
            encoding=None if binary else encoding,
            newline=None if binary else newline,
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions an ordinary open() would.
        os.chmod(tmp_name, 0o666 & ~_umask())
        _move_into_place(tmp_name, path, overwrite)
    except BaseException:
        # Also on KeyboardInterrupt: never leave the temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_name)
        raise


def _move_into_place(tmp_name: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp_name, path)
        return
    try:
        # A hard link fails if the target exists: a no-clobber move with no race.
        os.link(tmp_name, path)
    except FileExistsError:
        _refuse_existing_file(path)
        raise
    except OSError:
        # File systems without hard links (some network and FAT mounts).
        _refuse_existing_file(path)
        os.replace(tmp_name, path)
        return
    os.remove(tmp_name)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write a UTF-8 text file atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write. Its folder must exist.
    text : str
        The content.
    overwrite : bool, default=False
        Replace ``path`` if it exists; otherwise an existing file raises
        :class:`FileExistsError`.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skconv._io import write_text
    >>> write_text(Path(tempfile.mkdtemp()) / "report.md", "# Report\\n").read_text()
    '# Report\\n'
    """
    with atomic_write(path, "w", overwrite=overwrite) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = False) -> Path:
    """Write an object as indented JSON atomically.

    NumPy scalars and arrays are converted to plain numbers and lists; other objects
    that JSON cannot hold raise :class:`TypeError` before anything is written.

    Parameters
    ----------
    path : str or path-like
        The file to write. Its folder must exist.
    obj : object
        Dicts, lists, strings, numbers, booleans, None, NumPy scalars and arrays.
    overwrite : bool, default=False
        Replace ``path`` if it exists; otherwise an existing file raises
        :class:`FileExistsError`.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from skconv._io import write_json
    >>> p = write_json(Path(tempfile.mkdtemp()) / "metrics.json", {"accuracy": np.float64(0.5)})
    >>> json.loads(p.read_text())
    {'accuracy': 0.5}
    """
    # Serialise first so that an unsupported object fails before any file exists.
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    return write_text(path, text, overwrite=overwrite)


def to_python(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON and f-strings expect; other values as they are.

    Parameters
    ----------
    value : object
        A NumPy scalar (``np.int64(3)``, ``np.str_("a")``) or any other value.

    Returns
    -------
    value : object
        ``value.item()`` when it has one, else ``value``.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv._io import to_python
    >>> to_python(np.int64(3)), to_python("a")
    (3, 'a')
    """
    return value.item() if hasattr(value, "item") else value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Cannot write {type(value).__name__} {value!r} as JSON.")


def dump_joblib(
    obj: Any, path: str | os.PathLike, *, overwrite: bool = False, compress: int = 0
) -> Path:
    """Save an object with :func:`joblib.dump`, atomically.

    Parameters
    ----------
    obj : object
        Anything that pickles, e.g. a fitted estimator.
    path : str or path-like
        The file to write (by convention ``*.joblib``). Its folder must exist.
    overwrite : bool, default=False
        Replace ``path`` if it exists; otherwise an existing file raises
        :class:`FileExistsError`.
    compress : int, default=0
        zlib compression level from 0 (none, fastest) to 9.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, joblib
    >>> from pathlib import Path
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skconv._io import dump_joblib
    >>> p = dump_joblib(LogisticRegression(C=2.0), Path(tempfile.mkdtemp()) / "m.joblib")
    >>> joblib.load(p).C
    2.0
    """
    import joblib

    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        joblib.dump(obj, handle, compress=compress)
    return Path(path)


def check_new_dir(path: str | os.PathLike, *, what: str = "folder") -> Path:
    """Check that ``path`` can become a new folder: absent, or an empty folder.

    Parameters
    ----------
    path : str or path-like
        The folder to be created.
    what : str, default="folder"
        How the error message names the folder (e.g. ``"--out"``).

    Returns
    -------
    path : pathlib.Path
        The same path.

    Raises
    ------
    FileExistsError
        If ``path`` is a file or a folder that is not empty.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skconv._io import check_new_dir
    >>> root = Path(tempfile.mkdtemp())
    >>> check_new_dir(root / "new") == root / "new"
    True
    >>> _ = (root / "file.txt").write_text("x")
    >>> check_new_dir(root, what="--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: --out '...' exists and is not empty; refusing to write into it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{what} {os.fspath(path)!r} exists and is a file, not a folder.")
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(
            f"{what} {os.fspath(path)!r} exists and is not empty; refusing to write into it."
        )
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, what: str = "folder") -> Iterator[Path]:
    """Build a folder in a hidden sibling and rename it into place when complete.

    Inside the ``with`` block, write into the yielded temporary folder. When the block
    ends without an error, the folder is renamed to ``path`` (an empty folder at
    ``path`` is replaced). If the block raises, the temporary folder is removed, and so
    are the parent folders this call had to create: a failure leaves nothing.

    Parameters
    ----------
    path : str or path-like
        The folder to create. It must not exist, or be an empty folder.
    what : str, default="folder"
        How error messages name the folder (e.g. ``"--out"``).

    Yields
    ------
    staging : pathlib.Path
        The temporary folder, on the same file system as ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` is a file or a non-empty folder, before the block runs or when it
        is about to be renamed into place.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skconv._io import atomic_dir
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "run" / "1") as staging:
    ...     _ = (staging / "a.txt").write_text("a")
    >>> sorted(p.name for p in (root / "run" / "1").iterdir())
    ['a.txt']
    >>> try:
    ...     with atomic_dir(root / "other" / "2") as staging:
    ...         raise RuntimeError("fitting failed")
    ... except RuntimeError:
    ...     pass
    >>> sorted(p.name for p in root.iterdir())
    ['run']
    """
    path = Path(path)
    check_new_dir(path, what=what)
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        check_new_dir(path, what=what)  # it may have filled up meanwhile
        if path.is_dir():
            path.rmdir()
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def refuse_non_empty(path: Path, name: str) -> None:
    """Raise FileExistsError unless ``path`` is absent or an empty folder (``name`` says which)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(
            f"{name} {os.fspath(path)!r} exists and is not an empty "
            "folder; refusing to write into it."
        )
