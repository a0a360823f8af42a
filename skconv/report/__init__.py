"""Evaluation of a fitted classifier: metrics, report.md, figures, report.html, a model card.

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
* :func:`plot_learning_curves` draws a fitted net's losses and accuracy per epoch;
* :func:`html_report` renders ``report.html``, one self-contained page, with
  :func:`plot_curves` (ROC, precision-recall, reliability), :func:`activation_gallery`
  and :func:`model_card`.

The parts: ``_metrics``, ``_tables`` (text, Markdown, report.md), ``_figures``,
``_html`` (report.html), ``_gallery`` and ``_card``. Importing this package imports
no torch: :func:`predict_with_proba` recognises a FineTuneClassifier only if skconv's
finetune module is already loaded.
"""

from __future__ import annotations

from ..model_selection import duplicates_sentence
from ._card import model_card
from ._figures import plot_confusion_matrix, plot_curves, plot_learning_curves
from ._gallery import activation_gallery
from ._html import html_report
from ._metrics import HEADLINE as HEADLINE
from ._metrics import (
    bootstrap_intervals,
    classification_metrics,
    evaluate,
    predict_with_proba,
)
from ._tables import fmt, format_metrics, markdown_report, text_table
from ._tables import md_table as md_table

__all__ = [
    "activation_gallery",
    "bootstrap_intervals",
    "classification_metrics",
    "duplicates_sentence",
    "evaluate",
    "fmt",
    "format_metrics",
    "html_report",
    "markdown_report",
    "model_card",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_learning_curves",
    "predict_with_proba",
    "text_table",
]
