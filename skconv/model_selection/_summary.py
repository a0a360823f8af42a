"""Summaries of near-duplicate groups: how many, which hold two labels, one sentence on them."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def duplicate_summary(paths, labels, groups, *, names=None, grouped: bool = True) -> dict:
    """Summarise near-duplicate groups: how many, and which hold more than one label.

    Parameters
    ----------
    paths : array-like of shape (n_images,)
        The images (file paths, for thumbnails in :func:`skconv.report.html_report`).
    labels : array-like of shape (n_images,)
        Their classes.
    groups : array-like of shape (n_images,) or None
        Group labels, as :func:`~skconv.model_selection.find_near_duplicates` returns
        them; None means the search was not made.
    names : array-like of shape (n_images,), default=None
        How to show each image (e.g. its path within the data folder); None shows
        ``paths``.
    grouped : bool, default=True
        Whether the groups were kept in one part of the split (recorded for the report).

    Returns
    -------
    summary : dict
        ``searched`` (bool), ``grouped`` (bool), ``n_groups`` (groups of two or more
        images; None if not searched), ``n_images`` (images in them), ``groups`` (those
        groups, largest first, each a list of dicts with ``path``, ``name`` and
        ``label``) and ``mixed`` (the groups that hold more than one label, in the
        same form).

    Examples
    --------
    >>> from skconv.model_selection import duplicate_summary
    >>> s = duplicate_summary(["a.png", "b.png", "c.png", "d.png"],
    ...                       ["benign", "malignant", "benign", "normal"], [0, 0, 1, 2])
    >>> s["n_groups"], s["n_images"], [m["name"] for m in s["mixed"][0]]
    (1, 2, ['a.png', 'b.png'])
    """
    if groups is None:
        return {
            "searched": False,
            "grouped": False,
            "n_groups": None,
            "n_images": None,
            "groups": [],
            "mixed": [],
        }
    paths, labels, groups = np.asarray(paths), np.asarray(labels), np.asarray(groups)
    names = paths if names is None else np.asarray(names)
    if not len(paths) == len(labels) == len(groups) == len(names):
        raise ValueError(
            "paths, labels, groups and names must have the same length, got "
            f"{len(paths)}, {len(labels)}, {len(groups)} and {len(names)}."
        )
    found = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) > 1:
            found.append(
                [
                    {"path": str(paths[i]), "name": str(names[i]), "label": str(labels[i])}
                    for i in members
                ]
            )
    found.sort(key=len, reverse=True)  # stable: ties keep the order of the groups
    return {
        "searched": True,
        "grouped": bool(grouped),
        "n_groups": len(found),
        "n_images": int(sum(map(len, found))),
        "groups": found,
        "mixed": [g for g in found if len({m["label"] for m in g}) > 1],
    }


def duplicates_sentence(summary: Mapping) -> str:
    """One sentence on the near-duplicates found, for report.md and report.html.

    Parameters
    ----------
    summary : mapping
        As :func:`duplicate_summary` returns it.

    Returns
    -------
    sentence : str
        How many groups and images, and whether they were kept in one part.

    Examples
    --------
    >>> from skconv.model_selection import duplicates_sentence
    >>> from skconv.model_selection import duplicate_summary
    >>> summary = duplicate_summary(["a", "b", "c"], [0, 0, 1], groups=[0, 0, 1])
    >>> print(duplicates_sentence(summary))  # doctest: +NORMALIZE_WHITESPACE
    1 group of two or more near-duplicate images (2 images) found; each group was kept in
    one part of the split.
    """
    if not summary.get("searched"):
        return (
            "Near-duplicates were not searched for: copies of one image may sit in both "
            "the training and the test part, which makes the test numbers optimistic."
        )
    n_groups, n_images = summary["n_groups"], summary["n_images"]
    if not n_groups:
        return "No near-duplicate images found."
    kept = (
        "; each group was kept in one part of the split"
        if summary.get("grouped")
        else ("; they were not kept together")
    )
    return (
        f"{n_groups} group{'s' if n_groups != 1 else ''} of two or more near-duplicate "
        f"images ({n_images} images) found{kept}."
    )
