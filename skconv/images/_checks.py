"""What ``X`` may be: the container's checks, the error every decoding failure raises."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image


class ImageLoadError(ValueError):
    """An image in ``X`` could not be read or decoded.

    The message names the file (or the position of the in-memory image) and the
    reason. It is a :class:`ValueError`, so code that guards scikit-learn input
    errors catches it too.
    """


def _is_path(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike))


def n_images(X: Any) -> int:
    """Number of images in ``X`` without decoding any of them.

    Parameters
    ----------
    X : sequence of paths or PIL images, or ndarray
        Images in any form accepted by :func:`check_images`.

    Returns
    -------
    n : int
        The number of images.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.images import n_images
    >>> n_images(np.zeros((5, 8, 8), dtype=np.uint8))
    5
    """
    return len(check_images(X))


def check_images(X: Any) -> Sequence:
    """Validate the container of ``X`` and return something indexable by position.

    Only the container is checked here (cheaply, nothing is decoded): the kind of
    each element is checked when it is loaded.

    Parameters
    ----------
    X : sequence of paths or PIL images, or ndarray
        A list, tuple, pandas Series or 1-D array of file paths or PIL images; a
        ``uint8``, ``uint16`` or float array of shape ``(n, h, w)`` or
        ``(n, h, w, c)`` with ``c`` in {1, 3, 4}.

    Returns
    -------
    images : sequence
        ``X`` itself when it is already indexable by position, else a list.

    Raises
    ------
    ValueError
        If ``X`` is empty, a string (one path rather than a list of paths), or an
        array of the wrong shape, channel count or dtype.

    Examples
    --------
    >>> from skconv.images import check_images
    >>> check_images(["a.png", "b.png"])
    ['a.png', 'b.png']
    """
    if isinstance(X, (str, os.PathLike)):
        raise ValueError(
            f"X must be a sequence of images, got a single path {str(X)!r}; wrap it in a list."
        )
    if isinstance(X, Image.Image):
        raise ValueError("X must be a sequence of images, got a single PIL image; wrap it.")
    if hasattr(X, "iloc") and hasattr(X, "to_numpy"):  # pandas Series/DataFrame column
        X = X.to_numpy()
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("Sparse input is not supported: X must hold images, not a sparse matrix.")
    if not isinstance(X, np.ndarray) and hasattr(X, "__array__"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray):
        if X.dtype == object or X.dtype.kind in "US":
            if X.ndim == 2 and X.shape[1] == 1:  # a DataFrame column turned 2-D
                X = X[:, 0]
            if X.ndim != 1:
                raise ValueError(
                    f"An array of paths or PIL images must be 1-D, got shape {X.shape}."
                )
        else:
            _check_pixel_array(X)
    elif not hasattr(X, "__len__") or not hasattr(X, "__getitem__"):
        X = list(X)
    if len(X) == 0:
        raise ValueError("X contains no images (length 0); at least one is required.")
    return X


def _check_pixel_array(X: np.ndarray) -> None:
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: image arrays must be real.")
    if X.dtype.kind not in "uif" or X.dtype == np.bool_:
        raise ValueError(f"An image array must have an integer or float dtype, got {X.dtype}.")
    _check_integer_dtype(X.dtype, "X")
    if X.ndim not in (3, 4):
        raise ValueError(
            "An image array must have shape (n, h, w) or (n, h, w, c) with c in "
            f"{{1, 3, 4}}, got shape {X.shape}."
        )
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"An image array must have 1, 3 or 4 channels in its last axis, got "
            f"shape {X.shape} ({X.shape[-1]} channels)."
        )
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"An image array must have non-empty images, got shape {X.shape}.")
    if X.dtype.kind == "f" and X.size and not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity; float images must lie in [0, 1].")


def _check_integer_dtype(dtype: np.dtype, name: str) -> None:
    # An int64 array of 0-255 values would otherwise be read as 16-bit and come out
    # nearly black: the range of a user's integer array is not guessed.
    if dtype.kind in "ui" and dtype not in (np.uint8, np.uint16):
        raise ImageLoadError(
            f"{name} has dtype {dtype}; integer images must be uint8 (0-255) or uint16 "
            "(0-65535): cast it, e.g. X.astype(np.uint8), so that no pixel range is guessed."
        )


def describe(X: Sequence, index: int) -> str:
    """Name element ``index`` of ``X`` for messages: its path, or ``X[index]``."""
    item = X[index]
    return os.fspath(item) if _is_path(item) else f"X[{index}]"
