"""Figures, drawn without pyplot on an Agg canvas: confusion matrix, learning and ROC curves."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np


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
        from .._io import atomic_write

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

    from .._io import atomic_write

    # The pass that early stopping watched (the refit on all images has no validation).
    history = getattr(net, "validation_history_", None) or net.history
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


def plot_curves(y_true, y_proba, labels, *, n_bins: int = 10):
    """ROC and precision-recall curves per class, and a reliability diagram.

    Each class is scored one against the rest; a class with no sample (or only
    samples) in ``y_true`` is left out. The reliability diagram bins the probability
    of the predicted class into ``n_bins`` equal bins and plots each bin's accuracy
    against its mean probability; the title gives the expected calibration error
    (the bins' absolute gaps, weighted by their counts). The figure is drawn without
    pyplot, so it changes no global matplotlib state.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true classes.
    y_proba : array-like of shape (n_samples, n_classes)
        Class probabilities, columns in the order of ``labels``.
    labels : array-like of shape (n_classes,)
        The classes, usually ``estimator.classes_``.
    n_bins : int, default=10
        Bins of the reliability diagram.

    Returns
    -------
    figure : matplotlib.figure.Figure
        Three axes: ROC, precision-recall, reliability.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.report_html import plot_curves
    >>> proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    >>> fig = plot_curves(["a", "b", "a", "b"], proba, ["a", "b"])
    >>> [ax.get_title().split(" (")[0] for ax in fig.axes]
    ['ROC', 'Precision-recall', 'Reliability']
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    y_true = np.asarray(y_true)
    proba = np.asarray(y_proba, dtype=float)
    labels = np.asarray(labels)
    if proba.shape != (len(y_true), len(labels)):
        raise ValueError(
            f"y_proba must have shape (n_samples, n_classes) = ({len(y_true)}, "
            f"{len(labels)}), got {proba.shape}."
        )
    figure = Figure(figsize=(13, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    roc_ax, pr_ax, rel_ax = figure.subplots(1, 3)
    for k, cls in enumerate(labels):
        positive = y_true == cls
        if not positive.any() or positive.all():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        roc_ax.plot(fpr, tpr, label=f"{cls}")
        precision, recall, _ = precision_recall_curve(positive, proba[:, k])
        ap = average_precision_score(positive, proba[:, k])
        pr_ax.step(recall, precision, where="post", label=f"{cls} (AP {ap:.2f})")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1))
    roc_ax.set_ylim(0, 1.02)
    roc_ax.set_title("ROC (one-vs-rest)")
    pr_ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1))
    pr_ax.set_ylim(0, 1.02)
    pr_ax.set_title("Precision-recall")
    for ax in (roc_ax, pr_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize="small")

    confidence = proba.max(axis=1)
    correct = labels[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    used = counts > 0
    mean_conf = np.bincount(which, confidence, n_bins)[used] / counts[used]
    accuracy = np.bincount(which, correct.astype(float), n_bins)[used] / counts[used]
    ece = float(np.sum(counts[used] * np.abs(accuracy - mean_conf)) / max(len(y_true), 1))
    rel_ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    rel_ax.plot(mean_conf, accuracy, "o-", label="model")
    for x, y, c in zip(mean_conf, accuracy, counts[used]):
        rel_ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    rel_ax.set(
        xlabel="probability of the predicted class (numbers: images per bin)",
        ylabel="accuracy",
        xlim=(0, 1),
    )
    rel_ax.set_ylim(0, 1.02)
    rel_ax.set_title(f"Reliability (ECE {ece:.3f})")
    rel_ax.legend(loc="upper left", fontsize="small")
    return figure
