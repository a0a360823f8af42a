"""``report.html``: a run's whole report as one self-contained page.

The page holds everything inline: its CSS in a ``<style>`` element, every figure and
thumbnail as a base64 ``data:`` URI, no script, no web font, nothing to fetch. A
Content-Security-Policy in its head forbids any other source, so that it opens the
same from a disk, an e-mail attachment or a machine without a network, and shows
nothing that is not in the file. Every string that comes from data (file names,
class names, a command line) is HTML-escaped.

The functions take numbers already computed, so each is testable without a model:

* :func:`html_report` renders the page from metrics (with the intervals of
  :func:`skconv.report.bootstrap_intervals`), the split, near-duplicate groups,
  figures, an optional leaderboard, an activation-map gallery and a model card;
* :func:`duplicate_summary` turns near-duplicate group labels into the groups of two or
  more images, and those that hold more than one label;
* :func:`plot_curves` draws ROC and precision-recall curves per class and a reliability
  diagram;
* :func:`activation_gallery` picks the test images the model was most sure of, right
  and wrong, and overlays their class activation maps (the one function here that
  runs a model);
* :func:`model_card` writes what a reader of the model should know.

:func:`skconv.experiment.fit_folder` puts them together into ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .report import duplicates_sentence

__all__ = [
    "activation_gallery",
    "duplicate_summary",
    "html_report",
    "model_card",
    "plot_curves",
]

#: Near-duplicate groups shown with thumbnails, and thumbnails per group: the page
#: stays small (a 48-px JPEG thumbnail is about 2 KB).
MAX_GROUPS_SHOWN = 12
MAX_THUMBNAILS_PER_GROUP = 4
THUMBNAIL_HEIGHT = 48

HEADLINE = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro-F1",
    "roc_auc_ovr_macro": "macro ROC AUC (one-vs-rest)",
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #1f2328;
       background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; }
nav ul { columns: 2; }
.ci { color: #57606a; font-size: .9em; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .8rem; }
.note { color: #57606a; }
.bar { background: #0969da; height: .8rem; display: inline-block; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: .9em; }
.group { margin: .4rem 0; }
.group img { height: 48px; margin-right: .2rem; border: 1px solid #d0d7de; }
.gallery { display: flex; flex-wrap: wrap; gap: .8rem; }
.gallery figure { margin: 0; width: 180px; }
.gallery img { width: 100%; }
.right { color: #1a7f37; }
.wrong { color: #cf222e; }
"""

# Nothing but this file: images from data: URIs, styles from the <style> element.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --------------------------------------------------------------------------- helpers


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def _interval(interval) -> str:
    if not interval:
        return ""
    return f'<span class="ci">[{interval[0]:.3f}, {interval[1]:.3f}]</span>'


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image_uri(image: Any, *, height: int | None = None, fmt: str = "PNG") -> str:
    """A data: URI of a figure, a PIL image, an image file's bytes or a data: URI."""
    if isinstance(image, str) and image.startswith("data:image/"):
        return image
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
        return _data_uri(data, mime)
    if hasattr(image, "savefig"):  # a matplotlib figure
        buffer = io.BytesIO()
        image.savefig(buffer, format="png", dpi=90)
        return _data_uri(buffer.getvalue(), "image/png")
    from .images import load_image

    pil = load_image(image, where="image")
    if height is not None and pil.height > height:
        width = max(1, round(pil.width * height / pil.height))
        pil = pil.resize((width, height))
    buffer = io.BytesIO()
    if fmt.upper() == "JPEG":
        pil.save(buffer, format="JPEG", quality=80)
        return _data_uri(buffer.getvalue(), "image/jpeg")
    pil.save(buffer, format="PNG", optimize=True)
    return _data_uri(buffer.getvalue(), "image/png")


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells built here, already safe)."""

    def cell(value: Any, tag: str) -> str:
        numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        )
        text = str(value) if raw and isinstance(value, str) else _e(_fmt(value))
        return f"<{tag}{' class=num' if numeric and tag == 'td' else ''}>{text}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


# --------------------------------------------------------------------------- data


def duplicate_summary(paths, labels, groups, *, names=None, grouped: bool = True) -> dict:
    """Summarise near-duplicate groups: how many, and which hold more than one label.

    Parameters
    ----------
    paths : array-like of shape (n_images,)
        The images (file paths, for thumbnails in :func:`html_report`).
    labels : array-like of shape (n_images,)
        Their classes.
    groups : array-like of shape (n_images,) or None
        Group labels, as :func:`~skconv.model_selection.find_near_duplicates` returns
        them; None means the search was not made.
    names : array-like of shape (n_images,), default=None
        How to show each image (e.g. its path within the data folder); None shows
        ``paths``.
    grouped : bool, default=True
        Whether the groups were kept in one part of the split (recorded for the report).

    Returns
    -------
    summary : dict
        ``searched`` (bool), ``grouped`` (bool), ``n_groups`` (groups of two or more
        images; None if not searched), ``n_images`` (images in them), ``groups`` (those
        groups, largest first, each a list of dicts with ``path``, ``name`` and
        ``label``) and ``mixed`` (the groups that hold more than one label, in the
        same form).

    Examples
    --------
    >>> from skconv.report_html import duplicate_summary
    >>> s = duplicate_summary(["a.png", "b.png", "c.png", "d.png"],
    ...                       ["benign", "malignant", "benign", "normal"], [0, 0, 1, 2])
    >>> s["n_groups"], s["n_images"], [m["name"] for m in s["mixed"][0]]
    (1, 2, ['a.png', 'b.png'])
    """
    if groups is None:
        return {
            "searched": False,
            "grouped": False,
            "n_groups": None,
            "n_images": None,
            "groups": [],
            "mixed": [],
        }
    paths, labels, groups = np.asarray(paths), np.asarray(labels), np.asarray(groups)
    names = paths if names is None else np.asarray(names)
    if not len(paths) == len(labels) == len(groups) == len(names):
        raise ValueError(
            "paths, labels, groups and names must have the same length, got "
            f"{len(paths)}, {len(labels)}, {len(groups)} and {len(names)}."
        )
    found = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) > 1:
            found.append(
                [
                    {"path": str(paths[i]), "name": str(names[i]), "label": str(labels[i])}
                    for i in members
                ]
            )
    found.sort(key=len, reverse=True)  # stable: ties keep the order of the groups
    return {
        "searched": True,
        "grouped": bool(grouped),
        "n_groups": len(found),
        "n_images": int(sum(map(len, found))),
        "groups": found,
        "mixed": [g for g in found if len({m["label"] for m in g}) > 1],
    }


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
    from .explain import heatmaps, overlay

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


# --------------------------------------------------------------------------- figures


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


# --------------------------------------------------------------------------- the page


def _metrics_section(name: str, metrics: Mapping) -> str:
    ci = metrics.get("intervals") or {}
    out = [f"<h3>{_e(name)} ({metrics['n_samples']} images)</h3>\n"]
    header = ["metric", "value"]
    if ci:
        header.append(f"{100 * ci['confidence']:g} % interval")
    rows = []
    for key, label in HEADLINE.items():
        row = [_e(label), _e(_fmt(metrics.get(key)))]
        if ci:
            row.append(_interval(ci.get(key)) or "-")
        rows.append(row)
    out.append(_table(header, rows, raw=True))
    if ci:
        out.append(
            f'<p class="note">Intervals: percentile bootstrap over the '
            f"{metrics['n_samples']} images, {ci['n_resamples']} resamples.</p>\n"
        )
    per_ci = ci.get("per_class", {})
    rows = []
    for cls, m in metrics["per_class"].items():
        c = per_ci.get(cls, {})
        rows.append(
            [_e(cls)]
            + [
                f"{_e(_fmt(m[key]))} {_interval(c.get(key)) if m[key] is not None else ''}"
                for key in ("precision", "recall", "f1", "roc_auc")
            ]
            + [_e(m["support"])]
        )
    out.append(
        _table(["class", "precision", "recall", "F1", "ROC AUC", "support"], rows, raw=True)
    )
    labels = [str(c) for c in metrics["labels"]]
    out.append(
        '<p class="note">Confusion matrix (rows: true class, columns: predicted class):</p>\n'
    )
    out.append(
        _table(
            ["true \\ predicted", *labels],
            [[cls, *row] for cls, row in zip(labels, metrics["confusion_matrix"])],
        )
    )
    return "".join(out)


def _balance_section(counts: Mapping[str, Mapping[str, int]]) -> str:
    total = sum(c["total"] for c in counts.values()) or 1
    rows = []
    for cls, c in counts.items():
        share = c["total"] / total
        bar = f'<span class="bar" style="width:{200 * share:.0f}px"></span> {100 * share:.1f} %'
        rows.append([_e(cls), c["total"], bar, c["train"], c["val"], c["test"]])
    return "<h3>Class balance</h3>\n" + _table(
        ["class", "images", "share", "train", "val", "test"], rows, raw=True
    )


def _duplicates_section(summary: Mapping) -> str:
    out = []
    if not summary.get("searched"):
        return f"<p>{_e(duplicates_sentence(summary))}</p>\n"
    out.append(f"<p>{_e(duplicates_sentence(summary))}</p>\n")
    mixed = summary.get("mixed", [])
    if mixed:
        out.append(
            f'<div class="warning"><strong>Warning:</strong> {len(mixed)} '
            f"group{'s hold' if len(mixed) != 1 else ' holds'} more than one label (the "
            "same image filed under two classes?):<ul>"
            + "".join(
                "<li>" + ", ".join(f"{_e(m['name'])} ({_e(m['label'])})" for m in group) + "</li>"
                for group in mixed
            )
            + "</ul></div>\n"
        )
    groups = summary.get("groups", [])
    # The groups with more than one label first: they are the ones to look at.
    shown = [g for g in groups if g in mixed] + [g for g in groups if g not in mixed]
    shown = shown[:MAX_GROUPS_SHOWN]
    if shown:
        more = f" (the first {len(shown)} of {len(groups)})" if len(groups) > len(shown) else ""
        out.append(f"<h3>Groups{more}</h3>\n")
    for group in shown:
        thumbs = []
        for member in group[:MAX_THUMBNAILS_PER_GROUP]:
            title = f"{member['name']} ({member['label']})"
            source = member.get("thumbnail", member.get("path"))
            try:
                uri = _image_uri(source, height=THUMBNAIL_HEIGHT, fmt="JPEG")
            except Exception:  # a thumbnail is a courtesy; the names are listed anyway
                continue
            thumbs.append(f'<img src="{uri}" alt="{_e(title)}" title="{_e(title)}">')
        names = ", ".join(f"{_e(m['name'])} ({_e(m['label'])})" for m in group)
        extra = len(group) - MAX_THUMBNAILS_PER_GROUP
        more = f" and {extra} more" if extra > 0 else ""
        out.append(f'<div class="group">{"".join(thumbs)}<br>{names}{more}</div>\n')
    return "".join(out)


def _leaderboard_section(leaderboard) -> str:
    rows = list(leaderboard)
    if not rows:
        return ""
    if isinstance(rows[0], Mapping):
        header: list = []
        for row in rows:
            header += [k for k in row if k not in header]
        body = [[row.get(k) for k in header] for row in rows]
    else:
        header, body = list(rows[0]), [list(r) for r in rows[1:]]
    return _table(header, body)


def _gallery_section(gallery, note) -> str:
    out = []
    if note:
        out.append(f'<p class="note">{_e(note)}</p>\n')
    if gallery:
        out.append(
            "<p>Where the model looked, for the test images it was most sure of: right "
            "predictions, then wrong ones (red to blue: most to least evidence for the "
            "predicted class).</p>\n"
        )
    for kind, title in (("right", "Right"), ("wrong", "Wrong")):
        entries = [g for g in gallery or [] if g.get("kind") == kind]
        if not entries:
            if gallery:
                out.append(f'<p class="note">No {kind} predictions on this part.</p>\n')
            continue
        out.append(f'<h3 class="{kind}">{title}</h3>\n<div class="gallery">\n')
        for g in entries:
            p = g.get("probability")
            caption = (
                f"{_e(g.get('name', ''))}<br>true {_e(g.get('true', ''))}, predicted "
                f"{_e(g.get('predicted', ''))}" + (f" ({p:.2f})" if p is not None else "")
            )
            out.append(
                f'<figure><img src="{_image_uri(g["image"])}" alt="{_e(g.get("name", ""))}">'
                f"<figcaption>{caption}</figcaption></figure>\n"
            )
        out.append("</div>\n")
    return "".join(out)


def _card_section(card: Mapping[str, Sequence[str]]) -> str:
    out = []
    for heading, paragraphs in card.items():
        out.append(f"<h3>{_e(heading)}</h3>\n")
        for text in paragraphs:
            if text.startswith("    "):
                code = "\n".join(line[4:] for line in text.split("\n"))
                out.append(f"<pre>{_e(code)}</pre>\n")
            else:
                out.append(f"<p>{_e(text)}</p>\n")
    return "".join(out)


def html_report(
    parts: Mapping[str, Mapping],
    *,
    title: str = "skconv report",
    details: Mapping[str, Any] | None = None,
    split_table: str | None = None,
    split_counts: Mapping[str, Mapping[str, int]] | None = None,
    duplicates: Mapping[str, Any] | None = None,
    figures: Mapping[str, Any] | None = None,
    leaderboard: Sequence[Any] | None = None,
    gallery: Sequence[Mapping[str, Any]] | None = None,
    gallery_note: str | None = None,
    card: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Render a run's report as one self-contained HTML page.

    Sections, each left out when its argument is None: the details of the run, the
    split (the table of :func:`~skconv.model_selection.split_report` and the class
    balance), near-duplicates (with thumbnails of the first groups, those with more
    than one label first), the metrics of each part (with intervals when a part has
    them), the figures, a leaderboard, an activation-map gallery and a model card.
    Images are embedded as ``data:`` URIs; nothing else is referenced.

    Parameters
    ----------
    parts : mapping of str to dict
        One section per evaluated part, e.g. ``{"Validation": m_val, "Test": m_test}``,
        each as :func:`skconv.report.classification_metrics` returns it, optionally
        with ``"intervals"`` from :func:`skconv.report.bootstrap_intervals`.
    title : str, default="skconv report"
        The page's title and heading.
    details : mapping of str to object, default=None
        Facts about the run, listed under the title.
    split_table : str, default=None
        The split as :func:`~skconv.model_selection.split_report` prints it.
    split_counts : mapping, default=None
        Images per class and part, as :func:`~skconv.model_selection.split_report`
        returns them, shown as the class balance.
    duplicates : mapping, default=None
        As :func:`duplicate_summary` returns it. A member's ``thumbnail`` (an image in
        any form below) or else its ``path`` (an image file) gives its thumbnail.
    figures : mapping of str to object, default=None
        Caption to image: a matplotlib figure, PNG or JPEG bytes, a PIL image, a path
        to an image file or a ``data:image/`` URI.
    leaderboard : sequence, default=None
        Rows of a table comparing models: mappings (the keys are the columns, in order
        of first appearance), or sequences whose first is the header.
    gallery : sequence of dict, default=None
        As :func:`activation_gallery` returns them.
    gallery_note : str, default=None
        A line shown in the gallery's place, e.g. why it is empty.
    card : mapping of str to list of str, default=None
        As :func:`model_card` returns it.

    Returns
    -------
    page : str
        The HTML document.

    See Also
    --------
    skconv.report.markdown_report : The same report as Markdown.

    Examples
    --------
    >>> from skconv.report import classification_metrics
    >>> from skconv.report_html import html_report
    >>> m = classification_metrics(["a<b", "c"], ["a<b", "c"])
    >>> page = html_report({"Test": m}, leaderboard=[{"model": "features", "accuracy": 1.0}])
    >>> page.startswith("<!DOCTYPE html>"), "a&lt;b" in page, "a<b" in page
    (True, True, False)
    >>> "<script" in page
    False
    """
    sections: list[tuple[str, str, str]] = []  # (id, title, html)
    if split_table is not None or split_counts is not None:
        body = ""
        if split_table is not None:
            body += f"<pre>{_e(split_table.rstrip())}</pre>\n"
        if split_counts:
            body += _balance_section(split_counts)
        sections.append(("split", "Split", body))
    if duplicates is not None:
        sections.append(("duplicates", "Near-duplicates", _duplicates_section(duplicates)))
    if parts:
        sections.append(
            ("metrics", "Metrics", "".join(_metrics_section(n, m) for n, m in parts.items()))
        )
    if figures:
        body = "".join(
            f'<figure><img src="{_image_uri(image)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>\n"
            for caption, image in figures.items()
        )
        sections.append(("figures", "Figures", body))
    if leaderboard is not None:
        text = _leaderboard_section(leaderboard)
        if text:
            sections.append(("leaderboard", "Leaderboard", text))
    if gallery is not None or gallery_note is not None:
        sections.append(
            ("gallery", "Class activation maps", _gallery_section(gallery, gallery_note))
        )
    if card is not None:
        sections.append(("card", "Model card", _card_section(card)))

    head = (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n"
    )
    out = [head]
    if details:
        out.append(
            "<ul>"
            + "".join(
                f"<li><strong>{_e(k)}</strong>: {_e(str(v).strip('`'))}</li>"
                for k, v in details.items()
            )
            + "</ul>\n"
        )
    if len(sections) > 1:
        out.append(
            "<nav><ul>"
            + "".join(f'<li><a href="#{sid}">{_e(name)}</a></li>' for sid, name, _ in sections)
            + "</ul></nav>\n"
        )
    for sid, name, body in sections:
        out.append(f'<h2 id="{sid}">{_e(name)}</h2>\n{body}')
    out.append("</body>\n</html>\n")
    return "".join(out)
