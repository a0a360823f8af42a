"""Train/validation/test splits that respect classes and near-duplicate groups.

The functions here are plain scikit-learn citizens: they take array-likes (lists, NumPy
arrays, pandas objects) and return the same kinds, and they never import torch.
"""

from __future__ import annotations

import numbers
import os
import sys
from math import ceil
from typing import Any

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing, check_random_state, indexable
from sklearn.utils._param_validation import Interval, validate_params

from .images import load_image

__all__ = ["train_val_test_split", "split_report", "find_near_duplicates"]

_PARTS = ("train", "val", "test")


# --------------------------------------------------------------------------------------
# train_val_test_split
# --------------------------------------------------------------------------------------


def _check_size(value: Any, name: str, n_samples: int) -> None:
    """Raise a ValueError unless ``value`` is a fraction in (0, 1) or a positive count."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a float in (0, 1) or a positive int, got {value!r}.")
    if isinstance(value, numbers.Integral):
        if not 1 <= value < n_samples:
            raise ValueError(
                f"{name}={value!r} must be at least 1 and less than the number of "
                f"samples ({n_samples}) when given as a count."
            )
    elif isinstance(value, numbers.Real):
        if not 0.0 < value < 1.0:
            raise ValueError(
                f"{name}={value!r} must be in the open interval (0, 1) when given as a fraction."
            )
    else:
        raise ValueError(f"{name} must be a float in (0, 1) or a positive int, got {value!r}.")


def _is_fraction(value: Any) -> bool:
    return not isinstance(value, numbers.Integral)


def _part_counts(n: int, val_size, test_size) -> tuple[int, int, int]:
    """Sizes of train, val and test for ``n`` samples, rounded as scikit-learn rounds.

    With two fractions the split is done as scikit-learn's ``train_test_split`` would do
    it twice: ``ceil((val + test) * n)`` samples leave train, and of those
    ``ceil(test / (val + test) * rest)`` go to test. Counts are taken as they are; a
    fraction mixed with a count is rounded up, like ``train_test_split``'s ``test_size``.
    """
    if _is_fraction(val_size) and _is_fraction(test_size):
        n_rest = ceil((val_size + test_size) * n)
        n_test = ceil(test_size / (val_size + test_size) * n_rest)
        return n - n_rest, n_rest - n_test, n_test
    n_val = val_size if not _is_fraction(val_size) else ceil(val_size * n)
    n_test = test_size if not _is_fraction(test_size) else ceil(test_size * n)
    return n - n_val - n_test, int(n_val), int(n_test)


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split the integer ``total`` in proportion to ``weights`` (largest remainder)."""
    quota = total * weights / weights.sum()
    out = np.floor(quota).astype(int)
    # Ties in the remainder go to the earlier entry: deterministic, no randomness needed.
    order = np.argsort(-(quota - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def _split_two(idx: np.ndarray, n_first: int, n_second: int, rng) -> tuple[np.ndarray, ...]:
    """Shuffle ``idx`` into three parts with sklearn's train_test_split, twice."""
    first, rest = train_test_split(idx, test_size=n_first + n_second, random_state=rng)
    second, third = train_test_split(rest, test_size=n_second, random_state=rng)
    return first, second, third


def _stratified_indices(y_codes, classes, val_size, test_size, rng):
    counts = np.bincount(y_codes, minlength=len(classes))
    if _is_fraction(val_size) and _is_fraction(test_size):
        per_class = [_part_counts(int(n_c), val_size, test_size) for n_c in counts]
    else:
        n_train, n_val, n_test = _part_counts(int(counts.sum()), val_size, test_size)
        vals, tests = _allocate(n_val, counts), _allocate(n_test, counts)
        per_class = [(int(c - v - t), int(v), int(t)) for c, v, t in zip(counts, vals, tests)]

    too_small = [
        (cls.item(), n_c, pc) for cls, n_c, pc in zip(classes, counts, per_class) if min(pc) < 1
    ]
    if too_small:
        desc = "; ".join(
            f"class {cls!r} has {n_c} member{'s' if n_c != 1 else ''} "
            f"({pc[0]} train, {pc[1]} val, {pc[2]} test)"
            for cls, n_c, pc in too_small
        )
        raise ValueError(
            f"Too few members to stratify with val_size={val_size!r} and "
            f"test_size={test_size!r}: {desc}. Every class needs at least one sample in "
            "each part; merge or drop such classes, or pass stratify=None."
        )

    parts: list[list[np.ndarray]] = [[], [], []]
    for code, (_, n_va, n_te) in enumerate(per_class):
        # Each class alone, exactly as train_test_split would split it: this is what
        # reproduces the reference table (210 -> 147/31/32).
        for part, idx in zip(parts, _split_two(np.flatnonzero(y_codes == code), n_va, n_te, rng)):
            part.append(idx)
    return [np.concatenate(p) for p in parts]


def _grouped_indices(y_codes, n_classes, group_codes, n_groups, part_sizes, rng):
    n = len(y_codes)
    # counts[g, c]: members of class c in group g (a group may mix classes).
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (group_codes, y_codes), 1)
    class_totals = counts.sum(axis=0)
    # Target per part and class: the part's size times the class's share of the whole.
    target = np.outer(part_sizes, class_totals) / n
    current = np.zeros_like(target)
    assigned = np.empty(n_groups, dtype=int)

    # Largest groups first (they are the hardest to place); random order among equals.
    perm = rng.permutation(n_groups)
    order = perm[np.argsort(-counts[perm].sum(axis=1), kind="stable")]
    # Cost: sum of (count - target)**2 / target over parts and classes. Dividing by the
    # target matters: with plain squared counts, every group larger than one lands in
    # train (on BUSI, val and test then hold no image that has a duplicate at all).
    weight = 1.0 / np.maximum(target, 1e-12)
    for g in order:
        vec = counts[g]
        # Change in the cost if group g went to each part.
        delta = (vec * (2 * (current - target) + vec) * weight).sum(axis=1)
        best = np.flatnonzero(np.isclose(delta, delta.min()))
        part = best[0] if len(best) == 1 else rng.choice(best)
        assigned[g] = part
        current[part] += vec

    # Greedy can leave a part empty when groups are few and large: move the smallest
    # group of the most populated part (in groups) there.
    for part in range(3):
        if not np.any(assigned == part):
            donor = np.argmax(np.bincount(assigned, minlength=3))
            members = np.flatnonzero(assigned == donor)
            assigned[members[np.argmin(counts[members].sum(axis=1))]] = part

    sample_part = assigned[group_codes]
    return [np.flatnonzero(sample_part == p) for p in range(3)]


def train_val_test_split(
    *arrays,
    val_size: float | int = 0.15,
    test_size: float | int = 0.15,
    stratify=None,
    groups=None,
    shuffle: bool = True,
    random_state=None,
) -> list:
    """Split arrays into random train, validation and test subsets.

    The three-way counterpart of :func:`sklearn.model_selection.train_test_split`.
    With ``stratify``, each class is split on its own, as ``train_test_split`` would
    split that class alone twice: first train against the rest
    (``test_size = val_size + test_size``), then the rest into validation and test (the
    relative fraction ``test_size / (val_size + test_size)``). Class counts 210, 438 and
    133 thus give exactly 147/31/32, 306/66/66 and 93/20/20.

    With ``groups``, no group is split across two parts. With ``groups`` and
    ``stratify`` together, whole groups are assigned, largest first, to the part where
    they most reduce the deviation from the target count of every (part, class) pair
    (squared and relative to the target), in the spirit of
    :class:`~sklearn.model_selection.StratifiedGroupKFold`; the class proportions of
    each part then stay as close to the whole as the groups allow, and a group whose
    members carry different labels is fine. Part sizes follow the unstratified rounding
    (780 samples: 546/117/117) up to what the groups allow. Groups of one sample each
    constrain nothing: the split is then the one made without ``groups``.

    When to pass ``groups``: whenever one subject, scan or lesion can appear in more
    than one sample, as in most medical image sets, where the same scan is re-cropped,
    re-annotated or re-saved. Give ``groups=find_near_duplicates(X)`` (see
    :func:`find_near_duplicates`), or patient identifiers when you have them;
    otherwise copies land on both sides of the split and the test numbers are
    optimistic. ``skconv fit`` and ``skconv split`` do this by default; this function
    leaves ``groups=None`` as its default, like scikit-learn's splitters.

    Parameters
    ----------
    *arrays : sequence of indexables with the same length
        Lists, NumPy arrays, scipy-sparse matrices or pandas DataFrames and Series.
    val_size : float or int, default=0.15
        A float in (0, 1) is the fraction of the data (of each class, with
        ``stratify``) for validation; an int is the absolute number of samples.
    test_size : float or int, default=0.15
        The same for the test part. Two fractions must sum to less than 1, two counts to
        less than the number of samples: no part may be empty.
    stratify : array-like of shape (n_samples,), default=None
        Class labels. Each class gets its share of every part; a class too small to
        have a member in each part raises a ValueError that names it.
    groups : array-like of shape (n_samples,), default=None
        Group labels, for example from :func:`find_near_duplicates`. Members of a
        group always land in the same part.
    shuffle : bool, default=True
        Whether to shuffle before splitting. ``shuffle=False`` takes train, val and test
        as consecutive blocks and cannot be combined with ``stratify`` or ``groups``.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffling. Pass an int for a reproducible split.

    Returns
    -------
    splitting : list, length=3 * len(arrays)
        For each input array its train, validation and test parts, in that order:
        ``X_train, X_val, X_test, y_train, y_val, y_test``. Each part has the type of
        its input (a list stays a list, a DataFrame a DataFrame).

    See Also
    --------
    split_report : Print and count the classes in each part.
    find_near_duplicates : Group labels for re-cropped or re-saved images.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.model_selection import train_val_test_split
    >>> X = np.arange(20).reshape(10, 2)
    >>> y = np.array([0, 1] * 5)
    >>> X_tr, X_va, X_te, y_tr, y_va, y_te = train_val_test_split(
    ...     X, y, val_size=0.2, test_size=0.2, random_state=0)
    >>> X_tr.shape, X_va.shape, X_te.shape
    ((6, 2), (2, 2), (2, 2))
    >>> y = ["malignant"] * 210 + ["benign"] * 438 + ["normal"] * 133
    >>> y_tr, y_va, y_te = train_val_test_split(y, stratify=y, random_state=0)
    >>> [y_tr.count("malignant"), y_va.count("malignant"), y_te.count("malignant")]
    [147, 31, 32]
    """
    if not arrays:
        raise ValueError("At least one array required as input.")
    arrays = indexable(*arrays)
    n_samples = len(arrays[0]) if not hasattr(arrays[0], "shape") else arrays[0].shape[0]

    _check_size(val_size, "val_size", n_samples)
    _check_size(test_size, "test_size", n_samples)
    if _is_fraction(val_size) and _is_fraction(test_size) and val_size + test_size >= 1:
        raise ValueError(
            f"val_size={val_size!r} and test_size={test_size!r} sum to "
            f"{val_size + test_size:g}; they must sum to less than 1 to leave a training part."
        )
    n_train, n_val, n_test = _part_counts(n_samples, val_size, test_size)
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(
            f"With n_samples={n_samples}, val_size={val_size!r} and test_size={test_size!r} "
            f"the parts would have {n_train} train, {n_val} val and {n_test} test samples; "
            "every part needs at least one. Use smaller sizes or more samples."
        )

    labels = {}
    for name, value in (("stratify", stratify), ("groups", groups)):
        if value is not None:
            value = np.asarray(value)
            if value.ndim != 1 or value.shape[0] != n_samples:
                raise ValueError(
                    f"{name} must be 1-D with one entry per sample ({n_samples}), "
                    f"got shape {value.shape}."
                )
            labels[name] = np.unique(value, return_inverse=True)

    if not shuffle:
        if labels:
            raise ValueError(
                "shuffle=False cannot be combined with stratify or groups: a stratified or "
                "grouped split needs shuffling. Pass shuffle=True."
            )
        idx = np.arange(n_samples)
        parts = [idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]]
    else:
        rng = check_random_state(random_state)
        if "groups" in labels and len(labels["groups"][0]) == n_samples:
            del labels["groups"]  # one sample per group: no constraint
        if "groups" in labels:
            group_names, group_codes = labels["groups"]
            if len(group_names) < 3:
                raise ValueError(
                    f"groups has {len(group_names)} distinct value(s); at least 3 are needed "
                    "to fill train, val and test without splitting a group."
                )
            if "stratify" in labels:
                classes, y_codes = labels["stratify"]
            else:
                classes, y_codes = np.zeros(1), np.zeros(n_samples, dtype=int)
            parts = _grouped_indices(
                y_codes,
                len(classes),
                group_codes.ravel(),
                len(group_names),
                np.array([n_train, n_val, n_test]),
                rng,
            )
        elif "stratify" in labels:
            classes, y_codes = labels["stratify"]
            parts = _stratified_indices(y_codes.ravel(), classes, val_size, test_size, rng)
        else:
            parts = list(_split_two(np.arange(n_samples), n_val, n_test, rng))
        # Per-class (or per-group) concatenation would sort the parts by class; shuffle
        # them like train_test_split does, so that order carries no label information.
        parts = [rng.permutation(p) for p in parts]

    return [_safe_indexing(a, p) for a in arrays for p in parts]


# --------------------------------------------------------------------------------------
# split_report
# --------------------------------------------------------------------------------------


def split_report(
    y_train, y_val, y_test, *, verbose: bool = True, file=None, as_frame: bool = False
):
    """Count each class in the train, validation and test parts, and print the counts.

    The printed text has one block per class, classes in sorted order, blocks separated
    by one blank line::

        Class: malignant
        Total files: 210
        Training files: 147
        Validation files: 31
        Test files: 32

    Parameters
    ----------
    y_train, y_val, y_test : array-like of shape (n_samples_part,)
        The labels of each part, for example from :func:`train_val_test_split`.
    verbose : bool, default=True
        Whether to print the report. Pass ``False`` to only get the counts.
    file : file-like object, default=None
        Where to print; ``None`` means ``sys.stdout`` at call time.
    as_frame : bool, default=False
        Return a pandas DataFrame (one row per class; columns ``total``, ``train``,
        ``val``, ``test``) instead of a dict. Needs pandas.

    Returns
    -------
    counts : dict or pandas.DataFrame
        ``{class: {"total": int, "train": int, "val": int, "test": int}}``, classes in
        sorted order.

    Examples
    --------
    >>> from skconv.model_selection import split_report
    >>> counts = split_report(["a", "b", "a"], ["a"], ["b"])
    Class: a
    Total files: 3
    Training files: 2
    Validation files: 1
    Test files: 0
    <BLANKLINE>
    Class: b
    Total files: 2
    Training files: 1
    Validation files: 0
    Test files: 1
    >>> counts["a"]
    {'total': 3, 'train': 2, 'val': 1, 'test': 0}
    """
    parts = [np.asarray(y).ravel() for y in (y_train, y_val, y_test)]
    classes = np.unique(np.concatenate(parts))
    counts: dict = {}
    for cls in classes:
        row = {name: int(np.sum(p == cls)) for name, p in zip(_PARTS, parts)}
        key = cls.item() if hasattr(cls, "item") else cls
        counts[key] = {"total": sum(row.values()), **row}

    if verbose:
        blocks = [
            f"Class: {cls}\nTotal files: {c['total']}\nTraining files: {c['train']}\n"
            f"Validation files: {c['val']}\nTest files: {c['test']}"
            for cls, c in counts.items()
        ]
        print("\n\n".join(blocks), file=sys.stdout if file is None else file)

    if as_frame:
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas is a dev dependency
            raise ImportError(
                "split_report(as_frame=True) needs pandas; install it or pass as_frame=False."
            ) from exc
        frame = pd.DataFrame.from_dict(
            counts, orient="index", columns=["total", "train", "val", "test"]
        )
        frame.index.name = "class"
        return frame
    return counts


# --------------------------------------------------------------------------------------
# find_near_duplicates
# --------------------------------------------------------------------------------------


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
