"""skconv.report's report.html from computed numbers, checked as text and in a browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
from browser import needs_browser, render
from PIL import Image

from skconv.model_selection import duplicate_summary
from skconv.report import (
    activation_gallery,
    bootstrap_intervals,
    classification_metrics,
    html_report,
    model_card,
    plot_curves,
)
from skconv.report._gallery import _confident
from skconv.report._html import MAX_GROUPS_SHOWN, MAX_THUMBNAILS_PER_GROUP

# Names that would break out of HTML if they were not escaped.
EVIL = '<script>alert("x")</script>'
LABELS = np.array(["benign", "malignant", EVIL])


class _Sources(HTMLParser):
    """Every tag and every src/href/action value of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.urls = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "srcset")]


def _parse(page: str) -> _Sources:
    parser = _Sources()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def numbers():
    rng = np.random.default_rng(0)
    y_true = LABELS[rng.integers(0, 3, 40)]
    proba = rng.dirichlet([1, 1, 1], size=40)
    y_pred = LABELS[proba.argmax(axis=1)]
    m = classification_metrics(y_true, y_pred, proba, labels=LABELS)
    m["intervals"] = bootstrap_intervals(y_true, y_pred, proba, LABELS, n_resamples=100)
    return y_true, y_pred, proba, m


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Ten small PNG files with names that need escaping."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    paths = []
    for k in range(10):
        path = root / f"scan {k} <&>.png"
        Image.fromarray(rng.integers(0, 256, (60, 80), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def page(numbers, image_files):
    """A page with every section, as fit_folder writes it."""
    y_true, y_pred, proba, m = numbers
    labels = ["benign", EVIL, "benign", "benign", "malignant", "normal"] + ["benign"] * 4
    dups = duplicate_summary(
        image_files, labels, [0, 0, 1, 1, 1, 2, 3, 4, 5, 6], names=[f"f{k}" for k in range(10)]
    )
    gallery = [
        {
            "image": Image.new("RGB", (40, 30), (200, 30, 30)),
            "kind": "right",
            "name": "a <b>.png",
            "true": EVIL,
            "predicted": EVIL,
            "probability": 0.9,
        }
    ]
    card = model_card(
        classes=LABELS,
        mode="features",
        backbone="resnet18",
        data="data/",
        counts={c: {"total": 10, "train": 6, "val": 2, "test": 2} for c in LABELS},
        test=m,
        duplicates=dups,
    )
    return html_report(
        {"Test": m},
        title="Run <1>",
        details={"command": "`skconv fit 'a&b'`"},
        split_table="Class: benign\nTotal files: 10\n",
        split_counts={c: {"total": 10, "train": 6, "val": 2, "test": 2} for c in LABELS},
        duplicates=dups,
        figures={"Curves": plot_curves(y_true, proba, LABELS)},
        leaderboard=[{"model": EVIL, "accuracy": 0.75}, {"model": "finetune", "f1": 0.5}],
        gallery=gallery,
        card=card,
    )


def test_page_is_self_contained_and_escapes_every_string(page):
    parsed = _parse(page)
    assert "script" not in parsed.tags
    assert "<script" not in page.lower()
    assert parsed.urls, "the page should have images"
    for url in parsed.urls:
        assert url.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "#")), url
    assert not re.search(r"https?://", page)
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "Content-Security-Policy" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "scan 0 &lt;&amp;&gt;.png" not in page  # names, not paths, are shown...
    assert "f0 (benign), f1 (&lt;script&gt;" in page  # ...escaped
    assert "<title>Run &lt;1&gt;</title>" in page
    assert "skconv fit &#x27;a&amp;b&#x27;" in page


def test_page_sections(page, numbers):
    m = numbers[3]
    for section in ("split", "duplicates", "metrics", "figures", "leaderboard", "gallery", "card"):
        assert f'<h2 id="{section}">' in page
        assert f'href="#{section}"' in page
    low, high = m["intervals"]["accuracy"]
    assert f"[{low:.3f}, {high:.3f}]" in page
    assert "95 % interval" in page
    # class balance, leaderboard (columns: union of the rows' keys), gallery, card
    assert '<span class="bar" style="width:67px"></span> 33.3 %' in page
    assert "<th>model</th><th>accuracy</th><th>f1</th>" in page
    assert "<td class=num>0.750</td><td>-</td>" in page
    assert "No wrong predictions on this part." in page
    assert "not a medical device" in page
    assert "joblib.load(&#x27;model.joblib&#x27;)" in page


def test_duplicate_thumbnails_are_capped_and_mixed_groups_come_first(page):
    duplicates = page.split('<h2 id="duplicates">')[1].split("<h2")[0]
    assert "4 groups" not in duplicates
    assert "2 groups of two or more near-duplicate images (5 images) found" in duplicates
    assert "<strong>Warning:</strong> 2 groups hold more than one label" in duplicates
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="([^"]*)"', duplicates)
    assert len(thumbs) == 5 and thumbs[0] == "f2 (benign)"  # the larger mixed group first


def test_duplicate_groups_beyond_the_cap_are_counted_not_shown(image_files):
    n = MAX_GROUPS_SHOWN + 3
    paths = (image_files * 10)[: 6 * n]
    groups = np.repeat(np.arange(n), 6)
    page = html_report({}, duplicates=duplicate_summary(paths, ["a"] * len(paths), groups))
    assert f"(the first {MAX_GROUPS_SHOWN} of {n})" in page
    assert page.count("<img") == MAX_GROUPS_SHOWN * MAX_THUMBNAILS_PER_GROUP
    assert page.count(" and 2 more</div>") == MAX_GROUPS_SHOWN


def test_page_without_optional_parts(numbers):
    page = html_report({"Test": {k: v for k, v in numbers[3].items() if k != "intervals"}})
    assert "interval" not in page and "<nav>" not in page and "<img" not in page
    note = html_report({}, gallery=[], gallery_note="Activation maps left out: no.")
    assert '<p class="note">Activation maps left out: no.</p>' in note
    rows = html_report({}, leaderboard=[["model", "accuracy"], ["features", 0.5]])
    assert "<th>model</th><th>accuracy</th>" in rows and "<td class=num>0.500</td>" in rows
    assert '<h2 id="leaderboard">' not in html_report({}, leaderboard=[])


def test_duplicate_summary():
    s = duplicate_summary(
        ["p0", "p1", "p2", "p3", "p4", "p5"],
        ["a", "a", "b", "b", "a", "c"],
        [5, 5, 7, 7, 7, 9],
        names=["n0", "n1", "n2", "n3", "n4", "n5"],
        grouped=False,
    )
    assert (s["searched"], s["grouped"], s["n_groups"], s["n_images"]) == (True, False, 2, 5)
    assert [[m["name"] for m in g] for g in s["groups"]] == [["n2", "n3", "n4"], ["n0", "n1"]]
    assert [[m["path"] for m in g] for g in s["mixed"]] == [["p2", "p3", "p4"]]
    assert duplicate_summary([], [], None)["searched"] is False
    with pytest.raises(ValueError, match="same length"):
        duplicate_summary(["a"], ["a", "b"], [0, 1])


def test_plot_curves_one_line_per_class_present():
    y = np.array(["a", "b", "a", "b", "a"])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3]] * 2)[:5]
    fig = plot_curves(y, proba, ["a", "b", "c"])  # "c" has no sample: left out
    roc, pr, reliability = fig.axes
    assert len(roc.get_lines()) == 3  # a, b and the chance diagonal
    assert [t.get_text() for t in pr.get_legend().get_texts()][0].startswith("a (AP ")
    assert reliability.get_title().startswith("Reliability (ECE ")
    with pytest.raises(ValueError, match="y_proba must have shape"):
        plot_curves(y, proba[:, :2], ["a", "b", "c"])


def test_confident_picks_the_surest_right_and_wrong():
    y_true = np.array(["a", "a", "b", "b", "a"])
    y_pred = np.array(["a", "b", "b", "a", "a"])
    proba = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.55, 0.45], [0.99, 0.01]])
    assert _confident(y_true, y_pred, proba, 2, 5) == ([4, 2], [1, 3])
    assert _confident(y_true, y_pred, None, 1, 1) == ([0], [1])


def test_activation_gallery_leaves_out_what_it_cannot_explain():
    from sklearn.dummy import DummyClassifier

    X = np.zeros((4, 8, 8), dtype=np.uint8)
    y = np.array(["a", "b", "a", "b"])
    model = DummyClassifier().fit(X.reshape(4, -1), y)
    entries, note = activation_gallery(model, X, y, y, np.full((4, 2), 0.5))
    assert entries == []
    assert note.startswith("Activation maps left out: TypeError: ")
    assert "\n" not in note


@needs_browser
def test_page_opens_from_disk_in_chromium(page, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    seen = render(path)
    assert seen["requests"], "the browser saw no request at all"
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == []
    assert seen["errors"] == []
    shot = seen["screenshot"]
    assert shot.shape[0] > 2000  # the full page, not the first screen
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 100


@needs_browser
def test_the_browser_check_catches_an_outside_reference(page, tmp_path):
    # The checks above could fail: a page that fetches an image sees it refused (CSP).
    path = tmp_path / "leaky.html"
    path.write_text(page.replace("</body>", '<img src="http://127.0.0.1:9/x.png"></body>'))
    seen = render(path)
    complaints = [text for kind, text in seen["console"] if kind == "error"]
    outside = [u for u in seen["requests"] if not u.startswith(("file:", "data:"))]
    assert outside or any("Content Security Policy" in t for t in complaints)
