import csv
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import BUSI, needs_busi
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from skconv.datasets import make_ultrasound
from skconv.model_selection import find_near_duplicates, split_report, train_val_test_split

REFERENCE = {
    "malignant": (210, 147, 31, 32),
    "benign": (438, 306, 66, 66),
    "normal": (133, 93, 20, 20),
}

REFERENCE_REPORT = """\
Class: benign
Total files: 438
Training files: 306
Validation files: 66
Test files: 66

Class: malignant
Total files: 210
Training files: 147
Validation files: 31
Test files: 32

Class: normal
Total files: 133
Training files: 93
Validation files: 20
Test files: 20
"""


def _reference_labels(seed=0):
    y = np.concatenate([[c] * n for c, (n, *_) in REFERENCE.items()])
    return np.random.default_rng(seed).permutation(y)


# -- train_val_test_split: the reference table ------------------------------------------


@pytest.mark.parametrize("random_state", [0, 1, 42])
def test_reference_table_exact(random_state):
    y = _reference_labels()
    y_tr, y_va, y_te = train_val_test_split(y, stratify=y, random_state=random_state)
    for cls, (_, n_tr, n_va, n_te) in REFERENCE.items():
        assert (np.sum(y_tr == cls), np.sum(y_va == cls), np.sum(y_te == cls)) == (
            n_tr,
            n_va,
            n_te,
        )


def test_reference_437_benign():
    y = np.array(["benign"] * 437 + ["malignant"] * 210 + ["normal"] * 133)
    counts = split_report(*train_val_test_split(y, stratify=y, random_state=0), verbose=False)
    assert counts["benign"] == {"total": 437, "train": 305, "val": 66, "test": 66}
    assert counts["malignant"] == {"total": 210, "train": 147, "val": 31, "test": 32}
    assert counts["normal"] == {"total": 133, "train": 93, "val": 20, "test": 20}


def test_split_report_exact_text(capsys):
    y = _reference_labels()
    counts = split_report(*train_val_test_split(y, stratify=y, random_state=0))
    assert capsys.readouterr().out == REFERENCE_REPORT
    assert list(counts) == ["benign", "malignant", "normal"]
    assert counts["malignant"] == {"total": 210, "train": 147, "val": 31, "test": 32}


def test_split_report_quiet_file_and_frame(capsys):
    buf = io.StringIO()
    split_report(["a", "b"], ["a"], ["b"], file=buf)
    assert buf.getvalue().startswith("Class: a\nTotal files: 2\nTraining files: 1\n")
    assert capsys.readouterr().out == ""
    split_report(["a"], ["a"], ["a"], verbose=False)
    assert capsys.readouterr().out == ""
    pytest.importorskip("pandas")
    frame = split_report(["a", "b"], ["a"], ["b"], verbose=False, as_frame=True)
    assert frame.loc["b"].tolist() == [2, 1, 0, 1]
    assert list(frame.columns) == ["total", "train", "val", "test"]


# -- train_val_test_split: general behaviour --------------------------------------------


def test_parts_disjoint_and_complete_for_every_array():
    n = 50
    X = np.arange(n * 2).reshape(n, 2)
    y = list(range(n))
    w = np.arange(n) * 10
    X_tr, X_va, X_te, y_tr, y_va, y_te, w_tr, w_va, w_te = train_val_test_split(
        X, y, w, random_state=0
    )
    assert isinstance(y_tr, list)
    ids = [X_tr[:, 0] // 2, X_va[:, 0] // 2, X_te[:, 0] // 2]
    assert sorted(np.concatenate(ids).tolist()) == list(range(n))
    for part_ids, part_y, part_w in zip(ids, (y_tr, y_va, y_te), (w_tr, w_va, w_te)):
        assert part_ids.tolist() == list(part_y) == (part_w // 10).tolist()
    assert (len(y_tr), len(y_va), len(y_te)) == (35, 7, 8)


def test_same_random_state_same_split_and_other_state_differs():
    X, y = np.arange(200), np.repeat([0, 1], 100)
    a = train_val_test_split(X, stratify=y, random_state=3)
    b = train_val_test_split(X, stratify=y, random_state=3)
    c = train_val_test_split(X, stratify=y, random_state=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(np.sort(a[2]), np.sort(c[2]))


def test_dataframe_input():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"x": range(40), "label": ["a", "b"] * 20}, index=range(100, 140))
    df_tr, df_va, df_te = train_val_test_split(
        df, stratify=df["label"], random_state=0, val_size=0.25, test_size=0.25
    )
    assert all(isinstance(p, pd.DataFrame) for p in (df_tr, df_va, df_te))
    assert sorted(df_tr.index.tolist() + df_va.index.tolist() + df_te.index.tolist()) == list(
        range(100, 140)
    )
    assert (df_te["label"] == "a").sum() == 5 and (df_va["label"] == "b").sum() == 5


@pytest.mark.parametrize("stratify", [False, True])
def test_count_sizes(stratify):
    y = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    y_tr, y_va, y_te = train_val_test_split(
        y, val_size=20, test_size=10, random_state=0, stratify=y if stratify else None
    )
    assert (len(y_tr), len(y_va), len(y_te)) == (70, 20, 10)
    if stratify:
        assert [np.sum(y_va == c) for c in "abc"] == [12, 6, 2]
        assert [np.sum(y_te == c) for c in "abc"] == [6, 3, 1]


def test_shuffle_false_takes_blocks():
    X_tr, X_va, X_te = train_val_test_split(np.arange(20), shuffle=False)
    assert X_tr.tolist() == list(range(14))
    assert X_va.tolist() == [14, 15, 16] and X_te.tolist() == [17, 18, 19]


def test_groups_with_stratify_keep_proportions():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(2, 6, size=40), np.ones(300, dtype=int)])
    groups = np.repeat(np.arange(len(sizes)), sizes)
    y = rng.choice(["a", "b", "c"], p=[0.55, 0.3, 0.15], size=len(sizes))[groups]
    parts = train_val_test_split(np.arange(len(y)), stratify=y, groups=groups, random_state=0)
    whole = np.array([np.mean(y == c) for c in "abc"])
    for p in parts:
        assert np.abs(np.array([np.mean(y[p] == c) for c in "abc"]) - whole).max() < 0.02
    assert len(parts[0]) == pytest.approx(0.7 * len(y), abs=3)
    # Duplicated images are not all pushed into train.
    big = np.bincount(groups)[groups] > 1
    assert big[parts[2]].mean() > 0.5 * big.mean()


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(10, 120),
    n_classes=st.integers(1, 4),
    group_frac=st.floats(0.05, 1.0),
    stratify=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_groups_never_straddle_parts(n, n_classes, group_frac, stratify, seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, max(3, int(group_frac * n)), size=n)
    groups[:3] = [0, 1, 2]  # at least three groups
    y = rng.integers(0, n_classes, size=n)
    idx_tr, idx_va, idx_te, g_tr, g_va, g_te = train_val_test_split(
        np.arange(n), groups, groups=groups, stratify=y if stratify else None, random_state=seed
    )
    assert sorted(np.concatenate([idx_tr, idx_va, idx_te]).tolist()) == list(range(n))
    assert min(len(idx_tr), len(idx_va), len(idx_te)) >= 1
    assert not set(g_tr) & set(g_va) and not set(g_tr) & set(g_te)
    assert not set(g_va) & set(g_te)
    assert np.array_equal(groups[idx_te], g_te)


# -- train_val_test_split: errors --------------------------------------------------------


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        train_val_test_split(np.arange(10), np.arange(9))
    with pytest.raises(ValueError, match=r"stratify must be 1-D with one entry per sample"):
        train_val_test_split(np.arange(10), stratify=np.arange(9))
    with pytest.raises(ValueError, match="At least one array"):
        train_val_test_split()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val_size=0.5, test_size=0.5), r"val_size=0.5 and test_size=0.5 sum to 1"),
        (dict(val_size=0.7, test_size=0.4), r"must sum to less than 1"),
        (dict(val_size=0.0), r"val_size=0.0 must be in the open interval \(0, 1\)"),
        (dict(test_size=1.5), r"test_size=1.5 must be in the open interval"),
        (dict(test_size=100), r"test_size=100 must be at least 1 and less than"),
        (dict(val_size=60, test_size=40), r"the parts would have 0 train"),
        (dict(val_size="a"), r"val_size must be a float in \(0, 1\) or a positive int"),
        (dict(test_size=True), r"test_size must be a float"),
    ],
)
def test_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_val_test_split(np.arange(100), **kwargs)


def test_tiny_data_would_leave_a_part_empty():
    with pytest.raises(ValueError, match=r"n_samples=3.*every part needs at least one"):
        train_val_test_split(np.arange(3), val_size=0.1, test_size=0.1)


def test_one_member_class_with_stratify():
    y = ["a"] * 20 + ["b"] * 20 + ["rare"]
    with pytest.raises(ValueError, match=r"class 'rare' has 1 member \(0 train, 0 val, 1 test\)"):
        train_val_test_split(y, stratify=y, random_state=0)


def test_too_few_groups_and_shuffle_false():
    with pytest.raises(ValueError, match="groups has 2 distinct value"):
        train_val_test_split(np.arange(10), groups=[0] * 5 + [1] * 5)
    with pytest.raises(ValueError, match="shuffle=False cannot be combined"):
        train_val_test_split(np.arange(10), stratify=[0, 1] * 5, shuffle=False)


# -- find_near_duplicates ----------------------------------------------------------------


def _synthetic_duplicates():
    """12 distinct images followed by 4 altered copies of the first four."""
    X, _ = make_ultrasound(n_per_class=4, image_size=128, random_state=0)
    originals = list(X)
    buf = io.BytesIO()
    Image.fromarray(X[1]).save(buf, format="JPEG", quality=60)
    resaved = np.asarray(Image.open(buf))
    with_calipers = Image.fromarray(X[2][6:-2, 3:-5])
    draw = ImageDraw.Draw(with_calipers)
    for x, y in [(30, 40), (80, 70)]:
        draw.line([(x - 4, y), (x + 4, y)], fill=255)
        draw.line([(x, y - 4), (x, y + 4)], fill=255)
    copies = [X[0][5:-3, 4:-6], resaved, np.asarray(with_calipers), X[3][:-8, 8:]]
    return originals + copies


def test_find_near_duplicates_groups_copies_not_distinct_images():
    items = _synthetic_duplicates()
    groups, pairs = find_near_duplicates(items, return_pairs=True)
    assert len(groups) == 16 and groups.dtype.kind == "i"
    assert len(set(groups[:12].tolist())) == 12  # distinct images stay apart
    assert groups[12:].tolist() == groups[:4].tolist()  # each copy joins its original
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 12), (1, 13), (2, 14), (3, 15)]
    assert all(0.95 <= s <= 1.0 for *_, s in pairs)


def test_find_near_duplicates_needs_crop_search_for_recrops():
    items = _synthetic_duplicates()
    groups = find_near_duplicates(items, crop_scales=())
    assert groups[12] != groups[0]  # the 4 % re-crop is missed by whole-image matching
    assert groups[13] == groups[1]  # the re-saved copy is not


def test_find_near_duplicates_inputs_agree(tmp_path):
    items = _synthetic_duplicates()[:2] + [_synthetic_duplicates()[12]]
    paths = []
    for k, a in enumerate(items):
        paths.append(tmp_path / f"im{k}.png")
        Image.fromarray(a).save(paths[-1])
    expected = [0, 1, 0]
    assert find_near_duplicates(paths).tolist() == expected
    assert find_near_duplicates([str(p) for p in paths]).tolist() == expected
    assert find_near_duplicates([Image.fromarray(a) for a in items]).tolist() == expected
    rgb = [np.repeat(a[..., None], 3, axis=2) for a in items]
    assert find_near_duplicates(rgb).tolist() == expected
    same_size = np.stack([items[0], items[1], items[0]])
    assert find_near_duplicates(same_size).tolist() == expected


def test_find_near_duplicates_errors(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    good = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"Cannot decode image file .*broken\.png"):
        find_near_duplicates([good, bad])
    with pytest.raises(ValueError, match=r"'threshold' parameter.*range \(0.0, 1.0\]. Got 1.5"):
        find_near_duplicates([good, good], threshold=1.5)
    with pytest.raises(ValueError, match=r"'thumb_size' parameter.*\[4, inf\). Got 2"):
        find_near_duplicates([good, good], thumb_size=2)
    with pytest.raises(ValueError, match=r"crop_scales must be a tuple of floats"):
        find_near_duplicates([good, good], crop_scales=(1.2,))
    with pytest.raises(ValueError, match=r"X\[1\] is not an image"):
        find_near_duplicates([good, np.zeros(5)])
    with pytest.raises(ValueError, match="'X' parameter"):
        find_near_duplicates(str(bad))


def test_find_near_duplicates_decodes_files_as_the_estimators_do(tmp_path):
    # An EPS file named .png: Pillow would hand it to Ghostscript; the hardened decoder
    # of skconv.images refuses it by name, without starting any program.
    eps = tmp_path / "scan.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    good = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"Cannot decode image file .*scan\.png"):
        find_near_duplicates([good, str(eps)])


def test_splitting_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, skconv.model_selection, skconv.datasets; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# -- BUSI -------------------------------------------------------------------------------


@pytest.mark.real_data
@needs_busi
def test_busi_near_duplicate_recall():
    from skconv.datasets import load_image_folder

    data = load_image_folder(BUSI)
    index = {"/".join(Path(p).parts[-2:]): i for i, p in enumerate(data.paths)}
    with open(BUSI / "NEAR_DUPLICATES.tsv", newline="") as f:
        reference = {
            tuple(sorted((index[r["image_a"]], index[r["image_b"]])))
            for r in csv.DictReader(f, delimiter="\t")
        }
    assert len(reference) == 212
    groups, pairs = find_near_duplicates(data.paths, return_pairs=True)
    found = {(i, j) for i, j, _ in pairs}
    # Measured: recall 1.000 (212/212), 30 extra pairs (its speed: benchmarks/, not here).
    assert len(found & reference) / len(reference) >= 0.98
    assert len(found - reference) <= 45
    assert np.mean([groups[i] == groups[j] for i, j in reference]) == 1.0

    # Grouped, stratified 70:15:15: no group straddles parts, proportions stay close.
    y = data.target
    whole = np.array([np.mean(y == c) for c in data.target_names])
    for seed in range(2):
        parts = train_val_test_split(
            np.arange(len(y)), stratify=y, groups=groups, random_state=seed
        )
        assert len({g for p in parts for g in set(groups[p])}) == len(set(groups))
        assert sum(len(set(groups[p])) for p in parts) == len(set(groups))
        for p in parts:
            share = np.array([np.mean(y[p] == c) for c in data.target_names])
            assert np.abs(share - whole).max() < 0.01


def test_groups_of_one_are_the_split_without_groups():
    y = np.array(["malignant"] * 21 + ["benign"] * 44 + ["normal"] * 13)
    X = np.arange(len(y))
    plain = train_val_test_split(X, stratify=y, random_state=0)
    singletons = train_val_test_split(X, stratify=y, groups=X[::-1], random_state=0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, singletons))
    paired = np.arange(len(y)) // 2  # real groups: the grouped assignment
    parts = train_val_test_split(X, stratify=y, groups=paired, random_state=0)
    sets = [set(paired[p]) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
