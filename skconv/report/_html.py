"""report.html: a run's whole report as one self-contained page."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Mapping, Sequence

import numpy as np

from ..model_selection import duplicates_sentence
from ._metrics import HEADLINE
from ._tables import fmt

#: Near-duplicate groups shown with thumbnails, and thumbnails per group: the page
#: stays small (a 48-px JPEG thumbnail is about 2 KB).
MAX_GROUPS_SHOWN = 12

MAX_THUMBNAILS_PER_GROUP = 4

THUMBNAIL_HEIGHT = 48

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

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


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
    from ..images import load_image

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
        text = str(value) if raw and isinstance(value, str) else _e(fmt(value))
        return f"<{tag}{' class=num' if numeric and tag == 'td' else ''}>{text}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _metrics_section(name: str, metrics: Mapping) -> str:
    ci = metrics.get("intervals") or {}
    out = [f"<h3>{_e(name)} ({metrics['n_samples']} images)</h3>\n"]
    header = ["metric", "value"]
    if ci:
        header.append(f"{100 * ci['confidence']:g} % interval")
    rows = []
    for key, label in HEADLINE.items():
        row = [_e(label), _e(fmt(metrics.get(key)))]
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
                f"{_e(fmt(m[key]))} {_interval(c.get(key)) if m[key] is not None else ''}"
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
