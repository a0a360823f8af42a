"""Batching: many images decoded (in threads) into one uint8 or normalised float array."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._decode import load_image
from ._preprocessing import Preprocessing

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _decode_rows(
    X: Sequence,
    indices: list,
    preprocessing: Preprocessing,
    write,
    *,
    n_threads: int,
    jpeg_draft: bool,
) -> None:
    """Decode and crop ``X[indices[row]]`` for every row; ``write(row, uint8 array)`` stores it.

    Arrays are ``(s, s)`` for gray images (one channel resized, a third of the work) and
    ``(s, s, 3)`` otherwise. Threads each take a contiguous block of rows: Pillow and
    NumPy release the GIL while they decode, resize and copy.
    """
    min_side = 2 * preprocessing.resize_size if jpeg_draft else None

    def fill(rows: range) -> None:
        for row in rows:
            index = indices[row]
            image = load_image(X[index], where=f"X[{index}]", keep_gray=True, min_side=min_side)
            write(row, np.asarray(preprocessing.crop(image), dtype=np.uint8))

    n_threads = max(1, min(int(n_threads), len(indices)))
    if n_threads == 1:
        fill(range(len(indices)))
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, len(indices), n_threads + 1).astype(int)
    with ThreadPoolExecutor(n_threads, thread_name_prefix="skconv-decode") as pool:
        # list() re-raises the first error, naming its file.
        list(pool.map(fill, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))


def _checked_out(out, shape: tuple, dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous {np.dtype(dtype).name} array of shape {shape}, got "
            f"{out.dtype} {out.shape}."
        )
    return out


def crop_batch(
    X: Sequence,
    indices: Sequence[int],
    preprocessing: Preprocessing,
    *,
    n_threads: int = 1,
    out: np.ndarray | None = None,
    jpeg_draft: bool = False,
) -> np.ndarray:
    """Decode, resize and crop some images of ``X`` into one ``uint8`` RGB batch.

    The pixels :func:`load_batch` normalises, before normalisation: the input of an
    exported ONNX model (:func:`skconv.export_onnx`) and of the ONNX Runtime engine,
    which normalise inside the graph. Needs no torch.

    Parameters
    ----------
    X : sequence
        Images in any form :func:`check_images` accepts.
    indices : sequence of int
        Which images of ``X`` make the batch, in order.
    preprocessing : Preprocessing
        The resize and crop to apply (its normalisation is not applied here).
    n_threads : int, default=1
        Threads decoding the images, each filling its own rows.
    out : ndarray of uint8, shape ``(len(indices), s, s, 3)``, default=None
        Memory to fill and return; None allocates.
    jpeg_draft : bool, default=False
        As in :func:`load_batch`.

    Returns
    -------
    batch : ndarray of uint8, shape ``(len(indices), s, s, 3)``
        RGB pixels, channels last.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.images import Preprocessing, crop_batch
    >>> crop_batch(np.zeros((3, 32, 40), dtype=np.uint8), [0, 2], Preprocessing(16)).shape
    (2, 16, 16, 3)
    """
    indices = list(indices)
    size = preprocessing.image_size
    batch = _checked_out(out, (len(indices), size, size, 3), np.uint8)

    def write(row: int, pixels: np.ndarray) -> None:
        batch[row] = pixels if pixels.ndim == 3 else pixels[..., None]

    _decode_rows(X, indices, preprocessing, write, n_threads=n_threads, jpeg_draft=jpeg_draft)
    return batch


def load_batch(
    X: Sequence,
    indices: Sequence[int],
    preprocessing: Preprocessing,
    *,
    n_threads: int = 1,
    out: np.ndarray | None = None,
    jpeg_draft: bool = False,
) -> torch.Tensor:
    """Decode and preprocess some images of ``X`` into one normalised batch.

    The same pixels as stacking ``preprocessing(load_image(X[i], min_side=m))``,
    with ``m`` None or, with ``jpeg_draft``, twice ``preprocessing.resize_size``, built
    with less work: gray images are resized on one channel, each 8-bit level is normalised
    through a 256-entry table instead of float arithmetic over the batch, in NumPy
    (single-threaded, so a decoding thread does not compete with the network's
    threads), and the batch comes out channels-last, the layout the network wants on
    CPU and CUDA.

    Parameters
    ----------
    X : sequence
        Images in any form :func:`check_images` accepts.
    indices : sequence of int
        Which images of ``X`` make the batch, in order.
    preprocessing : Preprocessing
        The resize, crop and normalisation to apply.
    n_threads : int, default=1
        Threads decoding the images, each filling its own rows of the batch (Pillow
        and NumPy release the GIL while they decode and look up).
    out : ndarray of float32, shape ``(len(indices), s, s, 3)``, default=None
        Memory to fill and return (as a tensor view), e.g. one buffer reused batch
        after batch: a fresh batch of 32 images at 224 px is 19 MB of new pages for
        the kernel to fault in. None allocates.
    jpeg_draft : bool, default=False
        Decode JPEG files at the smallest of libjpeg's 1/1, 1/2, 1/4 and 1/8 scales that
        keeps both sides at least twice the resize's shorter side, before the usual
        resize: the reduction margin of Pillow's ``thumbnail``. See ``min_side`` in
        :func:`load_image`.

    Returns
    -------
    batch : torch.Tensor of float32, shape ``(len(indices), 3, s, s)``
        Normalised pixels in channels-last memory format.

    Raises
    ------
    ImageLoadError
        If an image cannot be decoded; the message names the file or index.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skconv.images import Preprocessing, load_batch
    >>> X = np.zeros((3, 32, 40), dtype=np.uint8)
    >>> batch = load_batch(X, [0, 2], Preprocessing(image_size=16))
    >>> tuple(batch.shape), batch.is_contiguous(memory_format=torch.channels_last)
    ((2, 3, 16, 16), True)
    """
    import torch

    # Normalised value of each 8-bit level, per channel: the same float32 operations as
    # Preprocessing.normalize, so the pixels are bit-identical, but a lookup per pixel
    # instead of four passes over a float batch.
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    table = (levels[:, None] - mean) / std  # (256, 3)
    columns = np.ascontiguousarray(table.T)  # (3, 256)
    indices = list(indices)
    size = preprocessing.image_size
    batch = _checked_out(out, (len(indices), size, size, 3), np.float32)

    def write(row: int, pixels: np.ndarray) -> None:
        if pixels.ndim == 2:  # one lookup fills the three channels
            np.take(table, pixels, axis=0, out=batch[row])
        else:
            for channel in range(3):
                batch[row, ..., channel] = columns[channel][pixels[..., channel]]

    _decode_rows(X, indices, preprocessing, write, n_threads=n_threads, jpeg_draft=jpeg_draft)
    return torch.from_numpy(batch).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
