"""The per-image feature cache: one row per image and configuration, on disk.

A key-value store in a folder: the key of a row is the feature configuration (backbone,
weights and their hash, preprocessing, pooling, stages, mirroring, decoding), hashed
once per transform, and the content of the image (the SHA-256 of a file's bytes, or of
an in-memory image's pixels). Each row is one small ``.npy`` file, written to a
temporary name and renamed into place, so a hit costs one read and a crash mid-write
never leaves a truncated row:

    <location>/skconv-features/<configuration>/<content[:2]>/<content>.npy
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["FeatureCache", "content_key"]


def content_key(item: Any) -> str:
    """A digest of one image of ``X``: a file's bytes, or an array's or PIL image's pixels.

    An unreadable file gets a key of its own; decoding it will raise with its name.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv._cache import content_key
    >>> a = np.zeros((4, 4), dtype=np.uint8)
    >>> content_key(a) == content_key(a.copy()) != content_key(a + 1)
    True
    """
    if isinstance(item, (str, os.PathLike)):
        from .zoo._hub import sha256

        # A DicomPath's window and frame change the pixels, so they are part of the key.
        options = getattr(item, "options_key", "")
        try:
            key = sha256(os.fspath(item))
        except OSError:
            key = f"unreadable-{hashlib.sha256(os.fsencode(item)).hexdigest()}"
        return hashlib.sha256(f"{key};{options}".encode()).hexdigest() if options else key
    digest = hashlib.sha256()
    array = np.asarray(item)
    digest.update(str((array.shape, array.dtype.str, getattr(item, "mode", ""))).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Feature rows of one configuration, stored under a folder.

    Parameters
    ----------
    location : str or path-like
        The cache's root folder (created on the first write).
    config : tuple
        Everything the features depend on besides the image; its ``repr`` is hashed.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from skconv._cache import FeatureCache
    >>> cache = FeatureCache(tempfile.mkdtemp(), ("resnet18", "avg"))
    >>> cache.get("abc") is None
    True
    >>> cache.put("abc", np.arange(3, dtype=np.float32))
    >>> cache.get("abc").tolist()
    [0.0, 1.0, 2.0]
    """

    def __init__(self, location: str | os.PathLike, config: tuple):
        self.config = config
        key = hashlib.sha256(repr(config).encode()).hexdigest()
        self.folder = Path(location) / "skconv-features" / key

    @classmethod
    def of(cls, memory: Any, config: tuple) -> FeatureCache | None:
        """The cache a ``memory`` parameter asks for: a path, a ``joblib.Memory`` or None."""
        if memory is None:
            return None
        location = getattr(memory, "location", memory)  # joblib.Memory keeps its folder here
        return None if location is None else cls(location, config)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The row stored under ``key``, or None."""
        try:
            return np.load(self._path(key), allow_pickle=False)
        except (FileNotFoundError, ValueError, EOFError):
            return None  # absent, or unreadable: computed again and overwritten

    def put(self, key: str, row: np.ndarray) -> None:
        """Store ``row`` under ``key``, atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.asarray(row), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def lookup(self, images: Sequence) -> tuple[list[str], dict[int, np.ndarray]]:
        """The content key of every image, and the rows already stored, by position."""
        keys = [content_key(images[i]) for i in range(len(images))]
        found = {}
        for i, key in enumerate(keys):
            row = self.get(key)
            if row is not None:
                found[i] = row
        return keys, found
