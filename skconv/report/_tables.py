"""Tables: console text, Markdown cells and tables, and report.md."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..model_selection import duplicates_sentence
from ._metrics import HEADLINE


def fmt(value: Any, digits: int = 3) -> str:
    """A value for a table cell: floats with ``digits`` decimals, None as "-".

    The one formatter of the tables of report.md, report.html and the leaderboard.
    Flags show as True/False, other values (ints, text) as they are.

    Parameters
    ----------
    value : object
        A number, None, a flag or any value.
    digits : int, default=3
        Decimals of a float.

    Returns
    -------
    text : str
        The cell's text.

    Examples
    --------
    >>> from skconv.report import fmt
    >>> fmt(0.91234), fmt(None), fmt(12), fmt(True)
    ('0.912', '-', '12', 'True')
    """
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


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
    lines += [f"  {name:<{width}}  {fmt(metrics[key])}" for key, name in HEADLINE.items()]
    rows = [
        [cls, fmt(m["precision"]), fmt(m["recall"]), fmt(m["f1"]), str(m["support"])]
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


def md_cell(value: Any) -> str:
    """A value as the text of a Markdown table cell (pipes escaped, one line)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table, one line a row, for report.md and the leaderboard."""
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _fmt_interval(interval) -> str:
    return "-" if interval is None else f"{interval[0]:.3f} to {interval[1]:.3f}"


def _with_interval(value: Any, interval) -> str:
    """A value with its interval in brackets, when it has one."""
    return fmt(value) if interval is None else f"{fmt(value)} [{_fmt_interval(interval)}]"


def _md_metrics(name: str, metrics: Mapping) -> list[str]:
    lines = [f"## {name} ({metrics['n_samples']} images)", ""]
    ci = metrics.get("intervals")
    if ci:
        lines += md_table(
            ["metric", "value", f"{100 * ci['confidence']:g} % interval"],
            [
                [label, fmt(metrics[key]), _fmt_interval(ci.get(key))]
                for key, label in HEADLINE.items()
            ],
        )
        lines += [
            "",
            f"Intervals: percentile bootstrap over the {metrics['n_samples']} images "
            f"({ci['n_resamples']} resamples); per-class values show theirs in brackets.",
        ]
    else:
        lines += md_table(
            ["metric", "value"], [[label, fmt(metrics[key])] for key, label in HEADLINE.items()]
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
    lines += md_table(
        ["class", "precision", "recall", "F1", "ROC AUC (one-vs-rest)", "support"], rows
    )
    labels = [str(c) for c in metrics["labels"]]
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):", ""]
    lines += md_table(
        ["true \\ predicted", *labels],
        [[cls, *row] for cls, row in zip(labels, metrics["confusion_matrix"])],
    )
    return lines + [""]


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
            "- " + ", ".join(f"{md_cell(m['name'])} ({md_cell(m['label'])})" for m in group)
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
