"""Splits: train, validation and test parts in one call (stratified, grouped), and their counts."""

from __future__ import annotations

import numbers
import sys
from math import ceil
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing, check_random_state, indexable

from .._io import to_python

_PARTS = ("train", "val", "test")


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
        (to_python(cls), n_c, pc)
        for cls, n_c, pc in zip(classes, counts, per_class)
        if min(pc) < 1
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
        key = to_python(cls)
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
