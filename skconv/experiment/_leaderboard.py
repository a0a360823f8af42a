"""The leaderboard: how contenders are scored, their rows, as text, Markdown and CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..report import fmt

#: Validation score that chooses a model: the name in scikit-learn's scorers and the
#: key in :func:`skconv.report.classification_metrics`.
SCORINGS = {
    "balanced_accuracy": "balanced_accuracy",
    "accuracy": "accuracy",
    "roc_auc_ovr": "roc_auc_ovr_macro",
}


def _metrics(y_true, y_pred, proba, classes) -> dict:
    from ..report import classification_metrics

    return classification_metrics(y_true, y_pred, proba, labels=classes)


def _score(scoring: str, y_val, entry: dict) -> float:
    from ..report import classification_metrics

    classes = entry["model"].classes_
    y_pred = classes[np.argmax(entry["val_proba"], axis=1)]
    value = classification_metrics(y_val, y_pred, entry["val_proba"], labels=classes)[
        SCORINGS[scoring]
    ]
    return -np.inf if value is None else float(value)


def _pickled_bytes(model) -> int:
    import joblib

    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.tell()


def _row(entry: dict, metrics: dict, scoring: str, classes) -> dict:
    test = metrics["test"]
    score = metrics["val"][SCORINGS[scoring]]
    row = {
        "model": entry["name"],
        "way": entry["way"],
        "backbone": entry["backbone"],
        "chosen": entry["chosen"],
        "val_score": None if score is None else float(score),
        "cv_score": entry["cv_score"],
        "accuracy": test["accuracy"],
        "balanced_accuracy": test["balanced_accuracy"],
        "roc_auc_ovr_macro": test["roc_auc_ovr_macro"],
    }
    for cls in classes:
        row[f"recall_{cls}"] = test["per_class"][str(cls)]["recall"]
    row["fit_s"] = round(entry["fit_s"], 2)
    row["predict_images_per_s"] = round(entry["n_test"] / max(entry["predict_s"], 1e-9), 2)
    row["model_bytes"] = _pickled_bytes(entry["model"])
    return row


#: Leaderboard columns shown in text and Markdown, with their headers.
_SHOWN = {
    "model": "model",
    "chosen": "chosen",
    "val_score": "val score",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc.",
    "roc_auc_ovr_macro": "macro AUC",
}


def _cells(rows) -> tuple[list[str], list[list[str]]]:
    recalls = [k for k in rows[0] if k.startswith("recall_")]
    header = list(_SHOWN.values()) + [f"recall {k[len('recall_') :]}" for k in recalls]
    header += ["fit s", "predict img/s", "size MB"]
    table = []
    for row in rows:
        cells = [row["model"], row["chosen"]]
        cells += [fmt(_finite(row[k])) for k in list(_SHOWN)[2:] + recalls]
        cells += [
            f"{row['fit_s']:.1f}",
            f"{row['predict_images_per_s']:.1f}",
            f"{row['model_bytes'] / 1e6:.1f}",
        ]
        table.append(cells)
    return header, table


def _finite(value):
    """None for a score that is missing or not finite: the table shows "-"."""
    return None if value is None or not np.isfinite(value) else value


def _leaderboard_text(rows) -> list[str]:
    """The leaderboard as aligned plain-text lines, for a console."""
    from ..report import text_table

    return text_table(*_cells(rows))


def _leaderboard_markdown(rows, selection: str) -> str:
    """The leaderboard as a Markdown section: the table and how the model was chosen."""
    from ..report import md_table

    header, table = _cells(rows)
    lines = ["## Leaderboard", ""]
    lines += [
        f"All on one split. Metrics are of the test part; the model saved is the first row, "
        f"chosen by {selection}. Fit seconds include feature extraction and the heads' "
        "search; the ensemble's fit and prediction are the sums of its members'. Size: the "
        "model pickled by joblib.",
        "",
    ]
    lines += md_table(header, table)
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows) -> None:
    """Write ``rows`` (dicts with the same keys) to ``path`` as CSV, atomically."""
    from .._io import atomic_write

    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
