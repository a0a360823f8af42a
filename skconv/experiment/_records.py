"""The records a run writes: metrics.json, report.md, report.html, leaderboard.csv, the model."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from .._io import atomic_dir, dump_joblib, write_json, write_text
from ..report import (
    html_report,
    markdown_report,
    model_card,
    plot_confusion_matrix,
)
from ._leaderboard import write_csv


def describe_model(model, mode: str) -> dict:
    """What metrics.json and the model card say of a fitted model of ``mode``."""
    if mode == "features":
        features = model.named_steps["features"]
        return {
            "mode": "features",
            "backbone": features.backbone_,
            "image_size": features.preprocessing_.image_size,
            "n_features": features.n_features_out_,
            "precision": getattr(features, "precision", "fp32"),
            "head": repr(model.named_steps["head"]),
        }
    # The pass that early stopping watched (the refit on all images has no validation).
    history = getattr(model, "validation_history_", None) or model.history
    return {
        "mode": "finetune",
        "backbone": model.module_.backbone_identity,
        "image_size": model.preprocessing_.image_size,
        "epochs_run": len(history),
        "best_valid_loss": min(
            (h["valid_loss"] for h in history if "valid_loss" in h), default=None
        ),
        # The final model: refitted on all images? The network, the probe, or a blend?
        "refit_epochs": getattr(model, "refit_epochs_", None),
        "predicts_with": getattr(model, "chosen_", "network"),
        "network_weight": getattr(model, "network_weight_", 1.0),
    }


def _records(
    model,
    mode,
    backbone,
    parts,
    results,
    *,
    source,
    command,
    random_state,
    fit_s,
    eval_s,
    chosen=None,
):
    """metrics.json's content, report.md's text and report.html's arguments.

    ``chosen`` is what ``compare=True`` chose (see :func:`skconv.experiment.choose`), or None.
    """
    description = describe_model(model, mode) if chosen is None else chosen.description
    duplicates = parts.duplicates
    metrics = {
        "skconv_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "data": source,
        "split": {"method": parts.method, "seed": random_state, "counts": parts.counts},
        "grouped": duplicates["grouped"],
        "duplicate_groups": duplicates["n_groups"],
        "mixed_label_groups": [[m["name"] for m in g] for g in duplicates["mixed"]],
        "model": description,
        "classes": [str(c) for c in model.classes_],
        "val": results["val"],
        "test": results["test"],
        "timing_s": {"fit": round(fit_s, 3), "evaluate": round(eval_s, 3)},
    }
    if chosen is not None:
        metrics["compare"] = {"selected_by": chosen.selection, "leaderboard": chosen.leaderboard}
    members = description.get("members", [description])
    details = {
        "data": source,
        "split": parts.method,
        "mode": mode,
        "backbone": " + ".join(
            f"{m['backbone']['name']} (weights {m['backbone']['weights']})" for m in members
        ),
        "input size": " + ".join(f"{m['image_size']} px" for m in members),
        "classes": ", ".join(map(str, model.classes_)),
        "fit time": f"{fit_s:.1f} s on {len(parts.paths['train'])} images",
        "skconv": __version__,
    }
    if chosen is not None:
        details["model"] = chosen.name
        details["chosen by"] = chosen.selection
    if command:
        details = {"command": f"`{command}`", **details}
    if mode in ("finetune", "ensemble"):
        details["note"] = (
            "the validation part chose the epoch kept (early stopping), so its "
            "numbers are optimistic; the test part was not seen in training"
        )
    figures = {"Confusion matrix, test part": "confusion_matrix.png"}
    if mode in ("finetune", "ensemble"):
        figures["Learning curves"] = "learning_curves.png"
    sections = {"Validation": results["val"], "Test": results["test"]}
    title = f"skconv {mode} model: {backbone}" if chosen is None else chosen.title
    report = markdown_report(
        sections,
        title=title,
        details=details,
        split_table=parts.table,
        figures=figures,
        duplicates=duplicates,
    )
    if chosen is not None:  # the leaderboard first, before the chosen model's details
        head, sep, tail = report.partition("\n## ")
        report = f"{head}\n{chosen.markdown}{sep}{tail}"
    page = dict(
        parts=sections,
        title=title,
        details=details,
        split_table=parts.table,
        split_counts=parts.counts,
        duplicates=duplicates,
        figures={},  # filled in by fit_folder and _save
        leaderboard=None if chosen is None else chosen.leaderboard,
        card=model_card(
            classes=model.classes_,
            mode=mode,
            backbone=details["backbone"],
            data=source,
            counts=parts.counts,
            test=results["test"],
            duplicates=duplicates,
        ),
    )
    return metrics, report, page


def _save(out: Path, model, metrics, report, page, test, finetuned, leaderboard) -> None:
    """Write everything into ``out`` at once: all the files, or none.

    ``finetuned`` is the fine-tuned network whose learning curves are drawn (None for
    none); ``leaderboard`` the rows of ``leaderboard.csv`` (None for none).
    """
    with atomic_dir(out, what="out") as staging:
        dump_joblib(model, staging / "model.joblib")
        write_json(staging / "metrics.json", metrics)
        write_text(staging / "report.md", report)
        if leaderboard is not None:
            write_csv(staging / "leaderboard.csv", leaderboard)
        plot_confusion_matrix(
            test["confusion_matrix"],
            test["labels"],
            staging / "confusion_matrix.png",
            title=f"Test part ({test['n_samples']} images)",
        )
        figures = {"Confusion matrix, test part": (staging / "confusion_matrix.png").read_bytes()}
        figures.update(page["figures"])
        if finetuned is not None:
            from ..report import plot_learning_curves

            plot_learning_curves(finetuned, staging / "learning_curves.png")
            figures["Learning curves"] = (staging / "learning_curves.png").read_bytes()
        write_text(staging / "report.html", html_report(**{**page, "figures": figures}))
