"""Labels of fine-tuning: checked, learnt once, and encoded as the integer targets."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets

from ..images import check_images

__all__ = ["check_labels", "encode_labels", "fit_labels", "loss_settings"]


def check_labels(X, y) -> np.ndarray:
    """``y`` as a 1-D array of classification labels, one per image of ``X``."""
    if y is None:
        raise ValueError("FineTuneClassifier needs y: one label per image.")
    images = check_images(X) if not isinstance(X, torch.utils.data.Dataset) else X
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, one label per image; got shape {y.shape}.")
    if len(y) != len(images):
        raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")
    check_classification_targets(y)
    return y


def fit_labels(y, class_weight: str | None) -> tuple[LabelEncoder, np.ndarray | None]:
    """The encoder of ``y``'s classes, and the loss's class weights (None unless balanced)."""
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"y holds a single class ({encoder.classes_[0]!r}); a classifier needs at least two."
        )
    weights = (
        compute_class_weight("balanced", classes=encoder.classes_, y=y).astype(np.float32)
        if class_weight == "balanced"
        else None
    )
    return encoder, weights


def encode_labels(encoder: LabelEncoder, y) -> np.ndarray:
    """``y`` as int64 codes; a label the encoder has not seen raises ValueError."""
    y = np.asarray(y)
    unseen = np.setdiff1d(np.unique(y), encoder.classes_)
    if len(unseen):
        raise ValueError(
            f"y contains labels not seen in fit: {unseen.tolist()}; "
            f"known classes are {encoder.classes_.tolist()}."
        )
    return encoder.transform(y).astype(np.int64)


def loss_settings(criterion, label_smoothing: float, class_weights) -> dict:
    """The criterion's keyword arguments for ``label_smoothing`` and the class weights.

    A criterion (class or instance) that takes neither raises ValueError naming it.
    """
    criterion = criterion if isinstance(criterion, type) else type(criterion)
    accepted = inspect.signature(criterion).parameters
    settings = {}
    if label_smoothing:
        if "label_smoothing" not in accepted:
            raise ValueError(
                f"label_smoothing={label_smoothing!r} needs a criterion with "
                f"label_smoothing, got {criterion.__name__}."
            )
        settings["label_smoothing"] = float(label_smoothing)
    if class_weights is not None:
        if "weight" not in accepted:
            raise ValueError(
                f"class_weight='balanced' needs a criterion with a 'weight', "
                f"got {criterion.__name__}."
            )
        settings["weight"] = torch.as_tensor(class_weights)
    return settings
