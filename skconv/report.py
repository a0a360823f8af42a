"""Evaluation of a fitted classifier: metrics, a Markdown report, PNG figures.

The same numbers serve the ``skconv`` command, the benchmarks and a notebook:

* :func:`predict_with_proba` runs a classifier once for both its classes and its
  probabilities (a :class:`~sklearn.pipeline.Pipeline` computes its features once);
* :func:`classification_metrics` turns labels and probabilities into a JSON-ready dict:
  accuracy, balanced accuracy, macro-F1, macro one-vs-rest ROC AUC, per-class
  precision, recall and F1, and the confusion matrix;
* :func:`evaluate` is both for an estimator and a data set;
* :func:`bootstrap_intervals` gives each of those metrics a percentile bootstrap
  interval over the samples (how much a small test part can say);
* :func:`format_metrics` (console text), :func:`markdown_report` (``report.md``) and
  :func:`plot_confusion_matrix` (a PNG, drawn without pyplot, so it changes no global
  matplotlib state and needs no display) present them;
* :func:`plot_learning_curves` draws a fitted net's losses and accuracy per epoch.
"""

from __future__ import annotations

import numbers
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = [
    "bootstrap_intervals",
    "classification_metrics",
    "duplicates_sentence",
    "evaluate",
    "format_metrics",
    "markdown_report",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "predict_with_proba",
    "text_table",
]

#: Headline metrics in the order reports show them, with their display names.
HEADLINE = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro-F1",
    "roc_auc_ovr_macro": "macro ROC AUC (one-vs-rest)",
}


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON and f-strings expect."""
    return value.item() if hasattr(value, "item") else value


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
    from sklearn import metrics as skm

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
                f"{len(labels)}) for labels {[_plain(c) for c in labels]}, got {proba.shape}."
            )

    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    aucs = [None] * len(labels)
    if proba is not None:
        for k, cls in enumerate(labels):
            positive = y_true == cls
            if positive.any() and not positive.all():
                aucs[k] = float(skm.roc_auc_score(positive, proba[:, k]))
    defined = [a for a in aucs if a is not None]
    present = np.isin(labels, y_true)
    return {
        "n_samples": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        # Recall averaged over the classes present in y_true, as scikit-learn defines it.
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else 0.0,
        "f1_macro": float(np.mean(f1)),
        "roc_auc_ovr_macro": float(np.mean(defined)) if defined else None,
        "labels": [_plain(c) for c in labels],
        "per_class": {
            str(_plain(cls)): {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
                "roc_auc": aucs[k],
            }
            for k, cls in enumerate(labels)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
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
            f"{name} holds {_plain(y[unknown][0])!r}, which is not one of the labels "
            f"{[_plain(c) for c in labels]}."
        )
    return order[pos]


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN if undefined."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
    for r in range(n_resamples):
        idx = rng.randint(0, n, n)
        t, p = true[idx], pred[idx]
        cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
        tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
        present = support > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(present, tp / support, np.nan)
            f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        auc = np.full(k, np.nan)
        if proba is not None:
            auc = np.array([_auc(t == c, proba[idx, c]) for c in range(k)])
        values[r, :4] = [
            tp.sum() / n,
            recall[present].mean(),
            f1.mean(),
            np.nanmean(auc) if not np.isnan(auc).all() else np.nan,
        ]
        values[r, 4:] = np.concatenate([precision, recall, np.where(present, f1, np.nan), auc])

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
        str(_plain(cls)): {
            name: interval(values[:, 4 + j * k + c])
            for j, name in enumerate(("precision", "recall", "f1", "roc_auc"))
        }
        for c, cls in enumerate(labels)
    }
    return result


# --------------------------------------------------------------------------- text


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_metrics(metrics: Mapping, *, title: str | None = None) -> str:
    """Format metrics as a short plain-text report for a console.

    Parameters
    ----------
    metrics : dict
        As returned by :func:`classification_metrics`.
    title : str, default=None
        First line, e.g. ``"Test"``; the sample count is added to it.

    Returns
    -------
    text : str
        The headline metrics, then precision, recall, F1 and support per class.

    Examples
    --------
    >>> from skconv.report import classification_metrics, format_metrics
    >>> m = classification_metrics(["a", "a", "b"], ["a", "b", "b"])
    >>> print(format_metrics(m, title="Test"))
    Test (3 images)
      accuracy                     0.667
      balanced accuracy            0.750
      macro-F1                     0.667
      macro ROC AUC (one-vs-rest)  -
      class  precision  recall  f1     support
      a      1.000      0.500   0.667  2
      b      0.500      1.000   0.667  1
    """
    lines = [] if title is None else [f"{title} ({metrics['n_samples']} images)"]
    width = max(len(name) for name in HEADLINE.values())
    lines += [f"  {name:<{width}}  {_fmt(metrics[key])}" for key, name in HEADLINE.items()]
    rows = [
        [cls, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), str(m["support"])]
        for cls, m in metrics["per_class"].items()
    ]
    lines += [
        "  " + line for line in text_table(["class", "precision", "recall", "f1", "support"], rows)
    ]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns separated by two spaces, one string per line.

    Parameters
    ----------
    header : sequence of str
        The column names.
    rows : sequence of sequences
        The cells, converted with :class:`str`.

    Returns
    -------
    lines : list of str
        The header line, then one line per row, trailing spaces removed.

    Examples
    --------
    >>> from skconv.report import text_table
    >>> print("\\n".join(text_table(["file", "class"], [["a.png", "benign"]])))
    file   class
    a.png  benign
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


# --------------------------------------------------------------------------- markdown


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _fmt_interval(interval) -> str:
    return "-" if interval is None else f"{interval[0]:.3f} to {interval[1]:.3f}"


def _with_interval(value: Any, interval) -> str:
    """A value with its interval in brackets, when it has one."""
    return _fmt(value) if interval is None else f"{_fmt(value)} [{_fmt_interval(interval)}]"


def _md_metrics(name: str, metrics: Mapping) -> list[str]:
    lines = [f"## {name} ({metrics['n_samples']} images)", ""]
    ci = metrics.get("intervals")
    if ci:
        lines += _md_table(
            ["metric", "value", f"{100 * ci['confidence']:g} % interval"],
            [
                [label, _fmt(metrics[key]), _fmt_interval(ci.get(key))]
                for key, label in HEADLINE.items()
            ],
        )
        lines += [
            "",
            f"Intervals: percentile bootstrap over the {metrics['n_samples']} images "
            f"({ci['n_resamples']} resamples); per-class values show theirs in brackets.",
        ]
    else:
        lines += _md_table(
            ["metric", "value"], [[label, _fmt(metrics[key])] for key, label in HEADLINE.items()]
        )
    per_class_ci = (ci or {}).get("per_class", {})
    lines += ["", "Per class:", ""]
    rows = []
    for cls, m in metrics["per_class"].items():
        c = per_class_ci.get(cls, {})
        rows.append(
            [
                cls,
                *(_with_interval(m[key], c.get(key)) for key in ("precision", "recall", "f1")),
                _with_interval(
                    m["roc_auc"], c.get("roc_auc") if m["roc_auc"] is not None else None
                ),
                m["support"],
            ]
        )
    lines += _md_table(
        ["class", "precision", "recall", "F1", "ROC AUC (one-vs-rest)", "support"], rows
    )
    labels = [str(c) for c in metrics["labels"]]
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):", ""]
    lines += _md_table(
        ["true \\ predicted", *labels],
        [[cls, *row] for cls, row in zip(labels, metrics["confusion_matrix"])],
    )
    return lines + [""]


def duplicates_sentence(summary: Mapping) -> str:
    """One sentence on the near-duplicates found, for report.md and report.html.

    Parameters
    ----------
    summary : mapping
        As :func:`skconv.report_html.duplicate_summary` returns it.

    Returns
    -------
    sentence : str
        How many groups and images, and whether they were kept in one part.

    Examples
    --------
    >>> from skconv.report import duplicates_sentence
    >>> from skconv.report_html import duplicate_summary
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


def _md_duplicates(summary: Mapping) -> list[str]:
    lines = ["## Near-duplicates", "", duplicates_sentence(summary), ""]
    mixed = summary.get("mixed", [])
    if mixed:
        lines += [
            f"**Warning:** {len(mixed)} group{'s hold' if len(mixed) != 1 else ' holds'} "
            "more than one label (the same image filed under two classes?):",
            "",
        ]
        lines += [
            "- " + ", ".join(f"{_md_cell(m['name'])} ({_md_cell(m['label'])})" for m in group)
            for group in mixed
        ]
        lines += [""]
    return lines


def markdown_report(
    parts: Mapping[str, Mapping],
    *,
    title: str = "skconv report",
    details: Mapping[str, Any] | None = None,
    split_table: str | None = None,
    figures: Mapping[str, str] | None = None,
    duplicates: Mapping[str, Any] | None = None,
) -> str:
    """Write evaluation results as a Markdown document.

    Parameters
    ----------
    parts : mapping of str to dict
        One section per evaluated part, e.g. ``{"Validation": m_val, "Test": m_test}``,
        each dict as returned by :func:`classification_metrics`; one with an
        ``"intervals"`` entry (from :func:`bootstrap_intervals`) shows them too.
    title : str, default="skconv report"
        The level-1 heading.
    details : mapping of str to object, default=None
        Facts about the run (data, backbone, seed, ...), listed under the title.
    split_table : str, default=None
        The split as printed by :func:`skconv.model_selection.split_report`, shown
        verbatim.
    figures : mapping of str to str, default=None
        Caption to image path (relative to the report), embedded at the end.
    duplicates : mapping, default=None
        Near-duplicate groups as :func:`skconv.report_html.duplicate_summary` returns
        them: how many were found, and a warning listing the groups with more than one
        label. None leaves the section out.

    Returns
    -------
    markdown : str
        The document, ending in a newline.

    Examples
    --------
    >>> from skconv.report import classification_metrics, markdown_report
    >>> m = classification_metrics(["a", "b"], ["a", "b"])
    >>> md = markdown_report({"Test": m}, details={"backbone": "efficientnet_lite0"})
    >>> print(md.splitlines()[0])
    # skconv report
    >>> "| accuracy | 1.000 |" in md
    True
    """
    lines = [f"# {title}", ""]
    if details:
        lines += [f"- {key}: {value}" for key, value in details.items()] + [""]
    if split_table is not None:
        lines += ["## Split", "", "```", split_table.rstrip("\n"), "```", ""]
    if duplicates is not None:
        lines += _md_duplicates(duplicates)
    for name, metrics in parts.items():
        lines += _md_metrics(name, metrics)
    for caption, path in (figures or {}).items():
        lines += [f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- figures


def plot_confusion_matrix(
    confusion_matrix,
    labels: Sequence[Any],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    overwrite: bool = False,
):
    """Draw a confusion matrix and optionally save it as a PNG, atomically.

    The figure is made without :mod:`matplotlib.pyplot`, on an Agg canvas: it needs
    no display, changes no global matplotlib state and is not kept open.

    Parameters
    ----------
    confusion_matrix : array-like of shape (n_classes, n_classes)
        Counts, rows the true class, columns the predicted class (the
        ``"confusion_matrix"`` entry of :func:`classification_metrics`).
    labels : sequence
        The class names, in the order of the rows.
    path : str or path-like, default=None
        Where to save the PNG; None only returns the figure.
    title : str, default=None
        The axes title.
    overwrite : bool, default=False
        Replace ``path`` if it exists; otherwise an existing file raises
        :class:`FileExistsError`.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skconv.report import plot_confusion_matrix
    >>> png = Path(tempfile.mkdtemp()) / "cm.png"
    >>> fig = plot_confusion_matrix([[5, 1], [0, 6]], ["benign", "malignant"], png)
    >>> Image.open(png).format
    'PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(confusion_matrix)
    labels = [str(c) for c in labels]
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(
            f"confusion_matrix must be square with one row per label ({len(labels)}), "
            f"got shape {matrix.shape}."
        )
    side = 3.0 + 0.6 * len(labels)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    display = ConfusionMatrixDisplay(matrix, display_labels=labels).plot(
        ax=ax, cmap="Blues", colorbar=True, values_format="d"
    )
    # Counts are whole numbers: no 0.25 steps on the colour bar of a small test part.
    display.im_.colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(labels) > 4 or max(map(len, labels), default=0) > 10:
        ax.tick_params(axis="x", labelrotation=45)
    if title:
        ax.set_title(title)
    if path is not None:
        from ._io import atomic_write

        with atomic_write(path, "wb", overwrite=overwrite) as handle:
            figure.savefig(handle, format="png", dpi=120)
    return figure


def plot_learning_curves(net, path: str | os.PathLike) -> str:
    """Save the training and validation loss (and validation accuracy) per epoch as a PNG.

    Parameters
    ----------
    net : skorch.NeuralNet
        A fitted net; its ``history`` is plotted.
    path : str or path-like
        Where to write the PNG (written to a temporary file, then renamed).

    Returns
    -------
    path : str
        The path written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from skconv import FineTuneClassifier
    >>> from skconv.report import plot_learning_curves
    >>> X = np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8)
    >>> clf = FineTuneClassifier("resnet18", weights=None, image_size=32, max_epochs=1,
    ...                          train_split=None).fit(X, [0, 1] * 4)
    >>> out = plot_learning_curves(clf, os.path.join(tempfile.mkdtemp(), "curves.png"))
    >>> os.path.exists(out)
    True
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ._io import atomic_write

    history = net.history
    epochs = history[:, "epoch"]
    # A bare Figure (no pyplot) changes no global matplotlib state.
    fig = Figure(figsize=(6, 4))
    loss_ax = fig.subplots()
    loss_ax.plot(epochs, history[:, "train_loss"], "o-", label="train loss")
    if "valid_loss" in history[-1]:
        loss_ax.plot(epochs, history[:, "valid_loss"], "o-", label="valid loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = loss_ax.get_legend_handles_labels()
    if "valid_acc" in history[-1]:
        acc_ax = loss_ax.twinx()
        acc_ax.plot(epochs, history[:, "valid_acc"], "s--", color="tab:green", label="valid acc")
        acc_ax.set_ylabel("accuracy")
        acc_ax.set_ylim(0, 1)
        more_handles, more_labels = acc_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_ax.legend(handles, labels, loc="best")
    loss_ax.set_title("Fine-tuning learning curves")
    fig.tight_layout()
    path = os.fspath(path)
    with atomic_write(path, "wb", overwrite=True) as handle:
        fig.savefig(handle, format="png", dpi=100)
    return path
