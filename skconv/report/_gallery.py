"""The activation-map gallery: the test images the model was most sure of, right and wrong."""

from __future__ import annotations

import os

import numpy as np

from ._html import _image_uri


def _confident(y_true, y_pred, proba, n_right: int, n_wrong: int) -> tuple[list, list]:
    """Indices of the most confident right and wrong predictions, most confident first."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confidence = np.ones(len(y_true)) if proba is None else np.asarray(proba).max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    right = [int(i) for i in order if y_true[i] == y_pred[i]][:n_right]
    wrong = [int(i) for i in order if y_true[i] != y_pred[i]][:n_wrong]
    return right, wrong


def activation_gallery(
    estimator,
    X,
    y_true,
    y_pred,
    proba=None,
    *,
    n_right: int = 4,
    n_wrong: int = 4,
    height: int = 160,
) -> tuple[list, str | None]:
    """Class activation maps of the test images the model was most sure of.

    Takes the ``n_right`` right and ``n_wrong`` wrong predictions with the highest
    probability, explains each predicted class with :func:`skconv.explain.heatmaps`
    (its defaults) and overlays the map on the image with
    :func:`skconv.explain.overlay`, scaled to ``height`` pixels. A model that
    :func:`~skconv.explain.heatmaps` cannot explain gives no entries and a note
    saying why, instead of an error: the gallery is a view, not the work.

    Parameters
    ----------
    estimator : fitted classifier
        A feature pipeline or a :class:`~skconv.FineTuneClassifier`.
    X : array-like of shape (n_images,)
        The images (file paths, PIL images or arrays) that were predicted.
    y_true : array-like of shape (n_images,)
        Their true classes.
    y_pred : array-like of shape (n_images,)
        The predicted classes.
    proba : array-like of shape (n_images, n_classes), default=None
        The predicted probabilities; None ranks every prediction as equally sure.
    n_right : int, default=4
        Most right predictions shown.
    n_wrong : int, default=4
        Most wrong predictions shown.
    height : int, default=160
        Height in pixels of each overlaid image.

    Returns
    -------
    entries : list of dict
        One per image, right ones first: ``image`` (a JPEG ``data:`` URI), ``kind``
        (``"right"`` or ``"wrong"``), ``index`` (into ``X``), ``name``, ``true``,
        ``predicted`` and ``probability`` (None without ``proba``).
    note : str or None
        Why there are no maps, or None.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skconv import ConvFeatureTransformer
    >>> from skconv.report import predict_with_proba
    >>> from skconv.report_html import activation_gallery
    >>> X = np.random.default_rng(0).integers(0, 256, (6, 40, 40), dtype=np.uint8)
    >>> y = np.array(["a", "b"] * 3)
    >>> clf = make_pipeline(ConvFeatureTransformer("resnet18", weights=None, image_size=32),
    ...                     LogisticRegression()).fit(X, y)
    >>> y_pred, proba = predict_with_proba(clf, X)
    >>> entries, note = activation_gallery(clf, X, y, y_pred, proba, n_right=2, n_wrong=2)
    >>> note is None, entries[0]["image"].startswith("data:image/jpeg;base64,")
    (True, True)
    """
    from ..explain import heatmaps, overlay

    right, wrong = _confident(y_true, y_pred, proba, n_right, n_wrong)
    chosen = right + wrong
    if not chosen:
        return [], "No images to show."
    items = [X[i] for i in chosen]
    try:
        maps = heatmaps(estimator, items)
        pictures = [overlay(item, heat) for item, heat in zip(items, maps)]
    except Exception as exc:  # a view must not fail the run that made the model
        message = " ".join(str(exc).split()) or type(exc).__name__
        return [], f"Activation maps left out: {type(exc).__name__}: {message}"
    entries = []
    for k, (i, picture) in enumerate(zip(chosen, pictures)):
        item = X[i]
        name = (
            os.path.basename(os.fspath(item))
            if isinstance(item, (str, os.PathLike))
            else f"X[{i}]"
        )
        entries.append(
            {
                "image": _image_uri(picture, height=height, fmt="JPEG"),
                "kind": "right" if k < len(right) else "wrong",
                "index": i,
                "name": name,
                "true": str(np.asarray(y_true)[i]),
                "predicted": str(np.asarray(y_pred)[i]),
                "probability": None if proba is None else float(np.max(np.asarray(proba)[i])),
            }
        )
    return entries, None
