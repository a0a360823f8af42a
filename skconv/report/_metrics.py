"""Metrics of a classification and their bootstrap intervals; classes and probabilities at once."""

from __future__ import annotations

import numbers
import sys

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from .._io import to_python

#: Headline metrics in the order reports show them, with their display names.
HEADLINE = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro-F1",
    "roc_auc_ovr_macro": "macro ROC AUC (one-vs-rest)",
}


def predict_with_proba(estimator, X) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict the class and the class probabilities of each sample, in one pass.

    A :class:`~sklearn.pipeline.Pipeline` transforms ``X`` once and hands the result
    to its last step's ``predict`` and ``predict_proba``, so the features of a
    :class:`~skconv.ConvFeatureTransformer` are computed once, not twice. A
    :class:`~skconv.FineTuneClassifier` runs its network once: its ``predict`` is the
    argmax of ``predict_proba``. Otherwise the classes are those of
    ``estimator.predict``, whatever its decision rule.

    Parameters
    ----------
    estimator : fitted classifier
        A classifier or a pipeline ending in one.
    X : array-like
        The samples (for skconv estimators: image paths, PIL images or arrays).

    Returns
    -------
    y_pred : ndarray of shape (n_samples,)
        The predicted classes.
    proba : ndarray of shape (n_samples, n_classes) or None
        Probabilities, columns in the order of ``estimator.classes_``; None if the
        estimator has no ``predict_proba``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skconv.report import predict_with_proba
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array(["a", "a", "b", "b"])
    >>> y_pred, proba = predict_with_proba(LogisticRegression().fit(X, y), X)
    >>> y_pred.tolist(), proba.shape
    (['a', 'a', 'b', 'b'], (4, 2))
    """
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        Xt = estimator[:-1].transform(X)
        estimator = estimator.steps[-1][1]
    else:
        Xt = X
    if _predicts_by_argmax(estimator):
        proba = np.asarray(estimator.predict_proba(Xt))
        return np.asarray(estimator.classes_)[proba.argmax(axis=1)], proba
    y_pred = np.asarray(estimator.predict(Xt))
    proba = (
        np.asarray(estimator.predict_proba(Xt)) if hasattr(estimator, "predict_proba") else None
    )
    return y_pred, proba


def _predicts_by_argmax(estimator) -> bool:
    """Whether ``predict`` is the argmax of ``predict_proba``, so one pass gives both.

    True for a :class:`~skconv.FineTuneClassifier`, whose network (twice with ``tta``)
    would otherwise run once for each. Not assumed of other classifiers: an SVC's
    ``predict`` and its Platt-scaled ``predict_proba`` can disagree.
    """
    finetune = sys.modules.get("skconv.finetune")  # not imported: not a FineTuneClassifier
    return finetune is not None and isinstance(estimator, finetune.FineTuneClassifier)


def classification_metrics(y_true, y_pred, y_proba=None, *, labels=None) -> dict:
    """Compute the metrics of a classification, as a dict that JSON can hold.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true classes.
    y_pred : array-like of shape (n_samples,)
        The predicted classes.
    y_proba : array-like of shape (n_samples, n_classes), default=None
        Class probabilities, columns in the order of ``labels``. Needed for the ROC
        AUC; without it the AUC entries are None.
    labels : array-like of shape (n_classes,), default=None
        The classes in the order of the probability columns and of the confusion
        matrix, usually ``estimator.classes_``. None takes the sorted union of
        ``y_true`` and ``y_pred`` (then ``y_proba`` must have those columns).

    Returns
    -------
    metrics : dict
        ``n_samples``; ``accuracy``; ``balanced_accuracy``; ``f1_macro``;
        ``roc_auc_ovr_macro``, the mean over classes of the ROC AUC of each class
        against the rest (the same as scikit-learn's ``roc_auc_score(...,
        multi_class="ovr", average="macro")``; classes absent from ``y_true`` are
        left out of the mean, and it is None when no class has both positives and
        negatives); ``labels``; ``per_class``, mapping each class to its
        ``precision``, ``recall``, ``f1``, ``support`` and ``roc_auc``; and
        ``confusion_matrix``, a list of rows (true class) of counts per predicted
        class, both in the order of ``labels``. Undefined precision or recall
        (no sample predicted as or belonging to a class) counts as 0.

    Raises
    ------
    ValueError
        If the lengths differ, or ``y_proba`` does not have one column per label.

    Examples
    --------
    >>> from skconv.report import classification_metrics
    >>> m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"],
    ...                            [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    >>> m["accuracy"], m["balanced_accuracy"], m["roc_auc_ovr_macro"]
    (0.75, 0.75, 1.0)
    >>> m["per_class"]["b"]["precision"], m["confusion_matrix"]
    (0.6666666666666666, [[1, 1], [0, 2]])
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}."
        )
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    labels = np.asarray(labels)
    proba = None
    if y_proba is not None:
        proba = np.asarray(y_proba, dtype=float)
        if proba.shape != (len(y_true), len(labels)):
            raise ValueError(
                f"y_proba must have shape (n_samples, n_classes) = ({len(y_true)}, "
                f"{len(labels)}) for labels {[to_python(c) for c in labels]}, got {proba.shape}."
            )
    # Classes outside labels count as scikit-learn counts them: in the accuracy, and as
    # wrong predictions, but in no row or column of their own.
    others = np.setdiff1d(np.unique(np.concatenate([y_true, y_pred])), labels)
    codes = np.concatenate([labels, others]) if len(others) else labels
    s = _scores(
        _codes(y_true, codes, "y_true"), _codes(y_pred, codes, "y_pred"), proba, len(labels)
    )
    aucs = [None if np.isnan(a) else float(a) for a in s["roc_auc"]]
    return {
        "n_samples": int(len(y_true)),
        "accuracy": s["accuracy"],
        "balanced_accuracy": s["balanced_accuracy"],
        "f1_macro": s["f1_macro"],
        "roc_auc_ovr_macro": s["roc_auc_ovr_macro"],
        "labels": [to_python(c) for c in labels],
        "per_class": {
            str(to_python(cls)): {
                "precision": float(s["precision"][k]),
                "recall": float(s["recall"][k]),
                "f1": float(s["f1"][k]),
                "support": int(s["support"][k]),
                "roc_auc": aucs[k],
            }
            for k, cls in enumerate(labels)
        },
        "confusion_matrix": s["confusion_matrix"].tolist(),
    }


def _scores(true: np.ndarray, pred: np.ndarray, proba, n_labels: int) -> dict:
    """The metrics of integer-coded classes: the one definition that
    :func:`classification_metrics` reports and every resample of
    :func:`bootstrap_intervals` computes (a thousand times, so NumPy, not scikit-learn's
    functions, whose input checks cost about 20 ms a call).

    Codes ``0 .. n_labels - 1`` are the labels; higher codes are classes outside them.
    Precision, recall and F1 are scikit-learn's with ``zero_division=0``, balanced
    accuracy the recall averaged over the labels present, and each ROC AUC the
    Mann-Whitney statistic with ties counted half, which is what
    :func:`sklearn.metrics.roc_auc_score` computes (tests compare the two); NaN where a
    label has no positive or no negative.
    """
    k = n_labels
    n_codes = max(k, int(true.max(initial=-1)) + 1, int(pred.max(initial=-1)) + 1)
    matrix = np.bincount(true * n_codes + pred, minlength=n_codes * n_codes)
    matrix = matrix.reshape(n_codes, n_codes)
    tp = np.diag(matrix)[:k].astype(float)
    support = matrix.sum(axis=1)[:k]
    predicted = matrix.sum(axis=0)[:k]
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    both = support + predicted
    f1 = np.divide(2 * tp, both, out=np.zeros(k), where=both > 0)
    auc = np.full(k, np.nan)
    if proba is not None:
        from scipy.stats import rankdata

        for c in range(k):
            positive = true == c
            n_pos = int(positive.sum())
            n_neg = len(true) - n_pos
            if n_pos and n_neg:
                ranks = rankdata(proba[:, c])
                auc[c] = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    present = support > 0
    defined = auc[~np.isnan(auc)]
    return {
        "accuracy": float(np.mean(true == pred)) if len(true) else 0.0,
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else 0.0,
        "f1_macro": float(np.mean(f1)),
        "roc_auc_ovr_macro": float(np.mean(defined)) if len(defined) else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "roc_auc": auc,
        "confusion_matrix": matrix[:k, :k],
    }


def evaluate(estimator, X, y) -> dict:
    """Predict ``X`` with a fitted classifier and compute the metrics against ``y``.

    Parameters
    ----------
    estimator : fitted classifier
        A classifier or a pipeline ending in one, with ``classes_``.
    X : array-like
        The samples.
    y : array-like of shape (n_samples,)
        Their true classes.

    Returns
    -------
    metrics : dict
        As :func:`classification_metrics`, with ``labels = estimator.classes_``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skconv.report import evaluate
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array(["a", "a", "b", "b"])
    >>> evaluate(LogisticRegression().fit(X, y), X, y)["accuracy"]
    1.0
    """
    y_pred, proba = predict_with_proba(estimator, X)
    return classification_metrics(y, y_pred, proba, labels=estimator.classes_)


def _codes(y: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """The index in ``labels`` of each element of ``y``; a ValueError for unknown ones."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    pos = np.clip(np.searchsorted(ordered, y), 0, len(labels) - 1)
    unknown = ordered[pos] != y
    if unknown.any():
        raise ValueError(
            f"{name} holds {to_python(y[unknown][0])!r}, which is not one of the labels "
            f"{[to_python(c) for c in labels]}."
        )
    return order[pos]


@validate_params(
    {
        "y_true": ["array-like"],
        "y_pred": ["array-like"],
        "y_proba": ["array-like", None],
        "labels": ["array-like", None],
        "n_resamples": [Interval(numbers.Integral, 1, None, closed="left")],
        "confidence": [Interval(numbers.Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def bootstrap_intervals(
    y_true,
    y_pred,
    y_proba=None,
    labels=None,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state=0,
) -> dict:
    """Percentile bootstrap intervals of the metrics of :func:`classification_metrics`.

    The samples (test images) are drawn with replacement ``n_resamples`` times; each
    resample's metrics are computed as :func:`classification_metrics` defines them,
    and the interval of a metric runs between the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of its values. It says how far the number could
    move on another test part of the same size from the same source; it does not
    cover a shift to other data. A per-class recall, F1 or ROC AUC is left out of the
    resamples that hold no sample of that class (a ROC AUC also of those holding only
    that class), and the macro ROC AUC averages the classes defined in a resample.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true classes.
    y_pred : array-like of shape (n_samples,)
        The predicted classes.
    y_proba : array-like of shape (n_samples, n_classes), default=None
        Class probabilities, columns in the order of ``labels``; without them the ROC
        AUC intervals are None.
    labels : array-like of shape (n_classes,), default=None
        The classes, as for :func:`classification_metrics`; None takes the sorted
        union of ``y_true`` and ``y_pred``.
    n_resamples : int, default=1000
        Number of bootstrap resamples.
    confidence : float, default=0.95
        Coverage of the interval, in (0, 1).
    random_state : int, RandomState instance or None, default=0
        Seed of the resampling; an int gives the same intervals twice.

    Returns
    -------
    intervals : dict
        ``confidence``, ``n_resamples``, and for each of ``accuracy``,
        ``balanced_accuracy``, ``f1_macro`` and ``roc_auc_ovr_macro`` a list
        ``[low, high]`` (None if no resample defines the metric); ``per_class`` maps
        each class to its ``precision``, ``recall``, ``f1`` and ``roc_auc`` intervals.

    Raises
    ------
    ValueError
        If the lengths differ, a class is not in ``labels``, or ``y_proba`` does not
        have one column per label.

    See Also
    --------
    classification_metrics : The point estimates.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.report import bootstrap_intervals
    >>> rng = np.random.default_rng(0)
    >>> y_true = rng.integers(0, 2, 100)
    >>> y_pred = np.where(rng.random(100) < 0.8, y_true, 1 - y_true)  # 80 % right
    >>> ci = bootstrap_intervals(y_true, y_pred, random_state=0)
    >>> low, high = ci["accuracy"]
    >>> bool(low < (y_true == y_pred).mean() < high), bool(high - low < 0.2)
    (True, True)
    >>> sorted(ci["per_class"])
    ['0', '1']
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(
            "y_true and y_pred must have the same, non-zero length, got "
            f"{len(y_true)} and {len(y_pred)}."
        )
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else labels
    labels = np.asarray(labels)
    n, k = len(y_true), len(labels)
    true = _codes(y_true, labels, "y_true")
    pred = _codes(y_pred, labels, "y_pred")
    proba = None
    if y_proba is not None:
        proba = np.asarray(y_proba, dtype=float)
        if proba.shape != (n, k):
            raise ValueError(
                f"y_proba must have shape (n_samples, n_classes) = ({n}, {k}), got {proba.shape}."
            )

    rng = check_random_state(random_state)
    # One row per resample: accuracy, balanced accuracy, macro-F1, macro AUC, then
    # precision, recall, F1 and AUC of each class.
    values = np.full((n_resamples, 4 + 4 * k), np.nan)
    # Each resample's metrics as classification_metrics defines them.
    for r in range(n_resamples):
        idx = rng.randint(0, n, n)
        m = _scores(true[idx], pred[idx], None if proba is None else proba[idx], k)
        present = m["support"] > 0
        values[r, :4] = [
            m["accuracy"],
            m["balanced_accuracy"],
            m["f1_macro"],
            np.nan if m["roc_auc_ovr_macro"] is None else m["roc_auc_ovr_macro"],
        ]
        values[r, 4:] = np.concatenate(
            [
                m["precision"],
                np.where(present, m["recall"], np.nan),
                np.where(present, m["f1"], np.nan),
                m["roc_auc"],
            ]
        )

    tail = 100 * (1 - confidence) / 2

    def interval(column: np.ndarray):
        column = column[~np.isnan(column)]
        if not len(column):
            return None
        return [float(v) for v in np.percentile(column, [tail, 100 - tail])]

    names = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr_macro")
    result = {"confidence": float(confidence), "n_resamples": int(n_resamples)}
    result.update({name: interval(values[:, j]) for j, name in enumerate(names)})
    result["per_class"] = {
        str(to_python(cls)): {
            name: interval(values[:, 4 + j * k + c])
            for j, name in enumerate(("precision", "recall", "f1", "roc_auc"))
        }
        for c, cls in enumerate(labels)
    }
    return result
