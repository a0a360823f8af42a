"""The model card: what a reader of the model should know, as headed lists of sentences."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..model_selection import duplicates_sentence


def model_card(
    *,
    classes: Sequence[Any],
    mode: str,
    backbone: str,
    data: str,
    counts: Mapping[str, Mapping[str, int]],
    test: Mapping[str, Any],
    duplicates: Mapping[str, Any] | None = None,
    model_file: str = "model.joblib",
) -> dict:
    """What a reader of a fitted model should know: use, data, metrics, limits, reloading.

    Parameters
    ----------
    classes : sequence
        The classes the model predicts.
    mode : str
        How it was made (``"features"`` or ``"finetune"``).
    backbone : str
        The pretrained network.
    data : str
        Where the images came from.
    counts : mapping
        Images per class and part, as :func:`~skconv.model_selection.split_report`
        returns them.
    test : mapping
        The test part's metrics (:func:`skconv.report.classification_metrics`), with
        ``"intervals"`` if computed.
    duplicates : mapping, default=None
        As :func:`duplicate_summary` returns it.
    model_file : str, default="model.joblib"
        The saved model's file name, for the reloading example.

    Returns
    -------
    card : dict of str to list of str
        Section title to paragraphs, in order. A paragraph indented by four spaces is
        code.

    Examples
    --------
    >>> from skconv.report import classification_metrics
    >>> from skconv.report_html import model_card
    >>> test = classification_metrics(["a", "b"], ["a", "b"])
    >>> card = model_card(classes=["a", "b"], mode="features", backbone="resnet18",
    ...                   data="images/", counts={"a": {"total": 10, "train": 7,
    ...                   "val": 1, "test": 2}}, test=test)
    >>> list(card)
    ['Intended use', 'Data', 'Metrics', 'Limitations', 'Reloading']
    """
    classes = [str(c) for c in classes]
    n = {part: sum(c[part] for c in counts.values()) for part in ("total", "train", "val", "test")}
    ci = test.get("intervals") or {}
    accuracy = f"{test['accuracy']:.3f}"
    if ci.get("accuracy"):
        low, high = ci["accuracy"]
        accuracy += f" (95 % interval {low:.3f} to {high:.3f})"
    limits = [
        f"The test part holds {n['test']} images; with so few, every number above "
        "is uncertain, as the intervals show. A few more or fewer right answers move "
        "it by several points.",
        "The images came from one source; on images from another scanner, hospital or "
        "population the model may do worse, and nothing here measures that.",
        "This is a research model, not a medical device: it is not validated for "
        "diagnosis and must not be used to make clinical decisions.",
    ]
    if duplicates is None or not duplicates.get("searched"):
        limits.insert(1, duplicates_sentence({"searched": False}))
    else:
        text = duplicates_sentence(duplicates)
        if duplicates["n_groups"]:
            text += (
                " Copies of one image thus cannot sit on both sides of the split."
                if duplicates.get("grouped")
                else " Copies of one image may sit on both sides of the split."
            )
        if duplicates.get("mixed"):
            text += (
                f" {len(duplicates['mixed'])} of them hold more than one label: the same "
                "image filed under two classes, which caps what any model can score."
            )
        limits.insert(1, text)
    return {
        "Intended use": [
            f"Sorting images into {', '.join(classes)}, for images like those it was "
            "trained on; a starting point for research and for comparing methods.",
        ],
        "Data": [
            f"{n['total']} images from {data}: {n['train']} for training, {n['val']} for "
            f"validation, {n['test']} for the test. Per class: "
            + "; ".join(
                f"{cls} {c['total']} ({c['train']}/{c['val']}/{c['test']})"
                for cls, c in counts.items()
            )
            + ".",
        ],
        "Metrics": [
            f"On the test part: accuracy {accuracy}, balanced accuracy "
            f"{test['balanced_accuracy']:.3f}, macro-F1 {test['f1_macro']:.3f}"
            + (
                f", macro ROC AUC {test['roc_auc_ovr_macro']:.3f}"
                if test.get("roc_auc_ovr_macro") is not None
                else ""
            )
            + f". Model: {mode} with the {backbone} backbone.",
        ],
        "Limitations": limits,
        "Reloading": [
            "The model is a pickle: load it only if you trust who made it. With joblib:",
            f"    import joblib\n    model = joblib.load({model_file!r})\n"
            "    model.predict(['image.png'])",
            "or with skconv.persistence, which asks you to say that you trust it:",
            f"    from skconv.persistence import load\n"
            f"    model = load({model_file!r}, trusted=True)",
            f"From a shell: skconv predict {model_file} IMAGES...",
        ],
    }
