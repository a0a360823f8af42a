"""Near-duplicates: images that are copies of one another, whatever their crop or contrast."""

from __future__ import annotations

import numbers
import os

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.utils._param_validation import Interval, validate_params

from ..images import load_image


def _gray_image(item, index: int) -> Image.Image:
    """Decode one element of X to a grayscale PIL image (mode "L" or "F")."""
    if isinstance(item, (str, os.PathLike)):
        # The package's one hardened decoder: no EPS (Ghostscript), a pixel limit, EXIF
        # orientation, and an error that names the file.
        return _pil_gray(load_image(item, where=f"X[{index}]", keep_gray=True))
    if isinstance(item, Image.Image):
        return _pil_gray(item)
    arr = np.asarray(item)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        # ITU-R 601-2 luma, the weights of PIL's convert("L").
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf" or min(arr.shape) < 1:
        raise ValueError(
            f"X[{index}] is not an image: expected a file path, a PIL image or an array of "
            f"shape (h, w) or (h, w, c) with c in {{1, 3, 4}}, got {type(item).__name__} "
            f"with shape {arr.shape}."
        )
    # Pearson correlation ignores scale, so any dtype can go through float32.
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))


def _pil_gray(im: Image.Image) -> Image.Image:
    # 16-bit and float modes would be clipped by convert("L"); keep their range.
    return im.convert("F") if im.mode.startswith(("I", "F")) else im.convert("L")


def _crop_boxes(scales, positions: int) -> list[tuple[float, float, float, float]]:
    """The whole image, then a positions x positions grid of square crops per scale."""
    boxes = [(0.0, 0.0, 1.0, 1.0)]
    for scale in scales:
        for top in np.linspace(0.0, 1.0 - scale, positions):
            for left in np.linspace(0.0, 1.0 - scale, positions):
                boxes.append((left, top, left + scale, top + scale))
    return boxes


def _thumbnails(image: Image.Image, size: int, boxes) -> np.ndarray:
    """Standardised thumbnails of the crops ``boxes`` (fractions) of one image."""
    full = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32)
    out = [full.ravel()]
    if len(boxes) > 1:
        # Crop from a 4x thumbnail: decoding and downscaling the original once is what
        # keeps many crops cheap. Fractional boxes survive the change of aspect ratio.
        side = 4 * size
        small = image.resize((side, side), Image.BILINEAR)
        out += [
            np.asarray(
                small.resize((size, size), Image.BILINEAR, box=tuple(side * v for v in box)),
                dtype=np.float32,
            ).ravel()
            for box in boxes[1:]
        ]
    thumbs = np.stack(out)
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(thumbs, axis=1, keepdims=True)
    # A flat image has no correlation with anything; leave it at zero, not NaN.
    return thumbs / np.where(norms > 0, norms, 1.0)


@validate_params(
    {
        "X": [list, tuple, np.ndarray, "array-like"],
        "threshold": [Interval(numbers.Real, 0, 1, closed="right")],
        "thumb_size": [Interval(numbers.Integral, 4, None, closed="left")],
        "crop_scales": ["array-like"],
        "crop_positions": [Interval(numbers.Integral, 1, None, closed="left")],
        "return_pairs": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def find_near_duplicates(
    X,
    threshold: float = 0.95,
    *,
    thumb_size: int = 32,
    crop_scales: tuple[float, ...] = (0.94, 0.88),
    crop_positions: int = 5,
    return_pairs: bool = False,
):
    """Group images that are the same picture re-cropped, re-annotated or re-saved.

    Each image is decoded once to a small grayscale thumbnail (``thumb_size`` squared,
    bilinear, aspect ratio ignored), standardised to zero mean and unit norm, and every
    pair is compared by Pearson correlation, computed as matrix products in blocks. To
    catch re-crops, thumbnails of a grid of crops of each image (``crop_scales`` times
    ``crop_positions`` squared) are compared with the whole of every other image too;
    a pair scores the best of these correlations. Pairs at or above ``threshold`` are
    linked, and the connected components of the links are the groups. Pass the groups
    to :func:`train_val_test_split` or to a group-aware splitter such as
    :class:`~sklearn.model_selection.GroupKFold`, so that copies of one scan never sit
    on both sides of a split.

    On BUSI (780 images, 256 px) the defaults find all 212 pairs of its
    ``NEAR_DUPLICATES.tsv`` (64-px thumbnails, correlation >= 0.95) and 30 further
    pairs; those inspected were re-crops of one scan or other frames of one lesion. It
    takes about 3 s on two CPU cores. The comparisons grow with ``n ** 2`` times the
    number of crops (51 by default); ``crop_scales=()`` takes about 1 s on BUSI but
    misses re-crops of more than a few percent.

    Parameters
    ----------
    X : sequence of str or path-like, sequence of PIL images, or array-like
        File paths, PIL images, or arrays of shape ``(n, h, w)`` / ``(n, h, w, c)``
        (also a list of ``(h, w)`` or ``(h, w, c)`` arrays of different sizes). Colour
        images are compared in grayscale.
    threshold : float, default=0.95
        Smallest correlation that links two images, in (0, 1]. Lower values find more
        re-crops and, below about 0.93 on BUSI, distinct scans that merely look alike.
    thumb_size : int, default=32
        Side of the square thumbnail, at least 4. Larger is stricter: 64 misses shifted
        copies that 32 finds.
    crop_scales : tuple of float, default=(0.94, 0.88)
        Side of the crops as fractions of the image, each in (0, 1); ``()`` compares
        whole images only.
    crop_positions : int, default=5
        Crop positions along each axis, at least 1 (1 means centred crops only).
    return_pairs : bool, default=False
        Also return the linked pairs.

    Returns
    -------
    groups : ndarray of shape (n_samples,), dtype=int
        Group label of each image, numbered from 0 in order of first appearance; an
        image without duplicates has a group of its own.
    pairs : list of (int, int, float)
        Only if ``return_pairs=True``: ``(i, j, correlation)`` with ``i < j`` for each
        linked pair, highest correlation first.

    Raises
    ------
    ValueError
        If a parameter is out of range, an element of ``X`` is not an image, or a file
        does not decode (the message names the file).

    Examples
    --------
    >>> from skconv.datasets import make_ultrasound
    >>> from skconv.model_selection import find_near_duplicates
    >>> X, y = make_ultrasound(n_per_class=1, image_size=128, random_state=0)
    >>> recrop = X[0][5:-3, 4:-6]
    >>> find_near_duplicates([X[0], X[1], X[2], recrop])
    array([0, 1, 2, 0])
    >>> groups, pairs = find_near_duplicates([X[0], X[1], X[0]], return_pairs=True)
    >>> [(i, j) for i, j, _ in pairs]
    [(0, 2)]
    """
    try:
        crop_scales = tuple(float(s) for s in crop_scales)
    except (TypeError, ValueError):
        crop_scales = None
    if crop_scales is None or not all(0.0 < s < 1.0 for s in crop_scales):
        raise ValueError(f"crop_scales must be a tuple of floats in (0, 1), got {crop_scales!r}.")
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise ValueError(
            f"X must be a sequence of images, got a single {type(X).__name__}; wrap it in a list."
        )

    boxes = _crop_boxes(crop_scales, crop_positions)
    thumbs = np.stack(
        [_thumbnails(_gray_image(item, i), thumb_size, boxes) for i, item in enumerate(X)]
    )  # (n, n_boxes, d)
    n, m, d = thumbs.shape
    whole = np.ascontiguousarray(thumbs[:, 0])

    # score[i, j] = max over crops c of <crop c of i, whole j>; a pair's score is the
    # larger of score[i, j] and score[j, i]. Row blocks bound memory to about 256 MB.
    links: dict[tuple[int, int], float] = {}
    rows_per_block = max(1, 2**26 // (m * n))
    for start in range(0, n, rows_per_block):
        block = thumbs[start : start + rows_per_block].reshape(-1, d) @ whole.T
        block = block.reshape(-1, m, n).max(axis=1)
        i, j = np.nonzero(block >= threshold - 1e-6)  # float32 slack for exact copies
        for a, b, s in zip((i + start).tolist(), j.tolist(), block[i, j].tolist()):
            if a != b:
                key = (min(a, b), max(a, b))
                links[key] = max(s, links.get(key, -1.0))

    # The groups are the connected components of the links, numbered in order of first
    # appearance (scipy numbers them so: a component's label is set at its first node).
    pairs_array = np.array(list(links), dtype=int).reshape(-1, 2)
    graph = coo_matrix(
        (np.ones(len(pairs_array)), (pairs_array[:, 0], pairs_array[:, 1])), shape=(n, n)
    )
    _, labels = connected_components(graph, directed=False)
    groups = labels.astype(int)

    if not return_pairs:
        return groups
    pairs = sorted(
        ((a, b, round(min(s, 1.0), 6)) for (a, b), s in links.items()),
        key=lambda p: (-p[2], p[0], p[1]),
    )
    return groups, pairs
