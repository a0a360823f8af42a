"""The engine cache: exported graphs and OpenVINO models, built once per network.

A fresh transformer's first transform used to export its network to ONNX (about 1.4 s
for EfficientNet-Lite0 on the 2-core benchmark machine) and, for OpenVINO, convert the
graph (about 1.5 s), and every clone in a ``GridSearchCV`` paid it again. Both are now
made once per network and configuration: kept in this process, and on disk between
processes, under a key made of the weights' sha256 and everything the graph depends on
(the feature spec, and the versions of skconv, torch and OpenVINO).

On disk each entry is its files plus a manifest with their sha256, all written
atomically (a temporary file renamed into place), the manifest last. An entry whose
files do not match its manifest, or that does not load, is rebuilt and rewritten, never
trusted. The folder is ``$SKCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/skconv``, else
``~/.cache/skconv``; ``SKCONV_CACHE_DIR=off`` keeps the cache in memory only.
Importing this module imports neither torch nor OpenVINO.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

__all__ = ["cache_dir", "cached_files", "engine_cache_key"]

#: Part of every key: raised when what is cached changes form (the export, the layout).
CACHE_FORMAT = 1
_MEMORY: dict = {}
_LOCK = threading.Lock()


def cache_dir() -> Path | None:
    """The engine cache's folder, or None when ``SKCONV_CACHE_DIR=off``.

    Examples
    --------
    >>> from skconv.engine.cache import cache_dir
    >>> folder = cache_dir()  # a pathlib.Path, or None with SKCONV_CACHE_DIR=off
    """
    chosen = os.environ.get("SKCONV_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "none", "0") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skconv"


def engine_cache_key(*parts) -> str:
    """A cache key: the sha256 of the parts' ``repr`` (and :data:`CACHE_FORMAT`).

    Examples
    --------
    >>> from skconv.engine.cache import engine_cache_key
    >>> engine_cache_key("lite0", 224) == engine_cache_key("lite0", 224) != engine_cache_key(1)
    True
    """
    return hashlib.sha256(repr((CACHE_FORMAT, *parts)).encode()).hexdigest()


def in_memory(key: tuple, build: Callable):
    """``build()``, made once per ``key`` in this process (thread-safely)."""
    with _LOCK:
        if key in _MEMORY:
            return _MEMORY[key]
    value = build()
    with _LOCK:
        return _MEMORY.setdefault(key, value)


def cached_files(
    kind: str,
    key: str,
    names: tuple[str, ...],
    build: Callable[[Path], None],
    load: Callable,
    fresh: Callable,
):
    """Load an entry of files from the disk cache, building and storing it when needed.

    Parameters
    ----------
    kind : str
        The entry's sub-folder (``"onnx"``, ``"openvino"``).
    key : str
        The entry's key (:func:`engine_cache_key`).
    names : tuple of str
        The file names the entry is made of.
    build : callable
        ``build(folder)`` writes the files ``names`` into ``folder``.
    load : callable
        ``load(folder)`` returns the value from the files in ``folder``.
    fresh : callable
        ``fresh()`` returns the value without any file: what runs without a cache
        folder, or with one that cannot be written.

    Returns
    -------
    value
        What ``load`` or ``fresh`` returned.
    """
    root = cache_dir()
    if root is not None:
        folder = root / kind / key
        try:
            if _valid(folder, names):
                return load(folder)
        except Exception:  # a damaged entry that passed the check: rebuilt below
            pass
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return _store(folder, names, build, load)
        except OSError:  # a read-only or full disk: the cache is a help, not a need
            pass
    return fresh()


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid(folder: Path, names: tuple[str, ...]) -> bool:
    manifest = folder / "manifest.json"
    try:
        recorded = json.loads(manifest.read_text())
        return all(recorded[name] == _digest(folder / name) for name in names)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _store(folder: Path, names: tuple[str, ...], build: Callable, load: Callable):
    # Built in a private folder beside the entry, then each file renamed into place and
    # the manifest last: a reader sees a whole entry or none.
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as scratch:
        scratch = Path(scratch)
        build(scratch)
        digests = {name: _digest(scratch / name) for name in names}
        (folder / "manifest.json").unlink(missing_ok=True)
        for name in names:
            os.replace(scratch / name, folder / name)
        manifest = scratch / "manifest.json"
        manifest.write_text(json.dumps(digests))
        os.replace(manifest, folder / "manifest.json")
    return load(folder)
