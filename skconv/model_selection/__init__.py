"""Train/validation/test splits that respect classes and near-duplicate groups.

The functions here are plain scikit-learn citizens: they take array-likes (lists, NumPy
arrays, pandas objects) and return the same kinds, and they never import torch.

The parts: ``_split`` (:func:`train_val_test_split`, :func:`split_report`),
``_duplicates`` (:func:`find_near_duplicates`) and ``_summary`` (what a report says of
the near-duplicates found: :func:`duplicate_summary`, :func:`duplicates_sentence`).
"""

from __future__ import annotations

from ._duplicates import find_near_duplicates
from ._split import split_report, train_val_test_split
from ._summary import duplicate_summary, duplicates_sentence

__all__ = [
    "train_val_test_split",
    "split_report",
    "find_near_duplicates",
    "duplicate_summary",
    "duplicates_sentence",
]
