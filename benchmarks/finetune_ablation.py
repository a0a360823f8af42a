"""Which fine-tuning recipe pays on a CPU? An ablation on BUSI's duplicate-aware splits.

Run from the project root (hours: each row fits 5 models; results of finished fits are
kept in benchmarks/.cache/finetune_ablation/ and a rerun only fits what is missing):

    .venv/bin/python benchmarks/finetune_ablation.py [BUSI_DIR] [--seeds 5] [--rows A,B,...]

Writes benchmarks/results/finetune_ablation.md and .json; benchmarks/busi.py includes the
table in busi.md.

Every row is a FineTuneClassifier configuration (or, for the baselines, a feature
pipeline), fitted on the train part of the duplicate-aware 70:15:15 split of each seed,
with the val part as its validation set (`predefined_split`), and scored on the test part:
accuracy, macro one-vs-rest AUC and malignant recall, mean ± std over seeds. Fit time is
given as seconds and as a ratio to the time `ConvFeatureTransformer().transform` takes over
the same training images, measured in the same process right before the fit, so that the
ratio carries across machines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv.datasets import load_image_folder
from skconv.model_selection import find_near_duplicates, train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache" / "finetune_ablation"

# The rows: label, description, and what FineTuneClassifier is given (None: a baseline).
# Everything not named takes FineTuneClassifier's defaults of this version; the rows that
# vary one default name `tta` too, so that they read the same whatever its default.
PREVIOUS = dict(
    train_layers="all",
    head_init="random",
    label_smoothing=0.0,
    freeze_epochs=1,
    backbone_lr_scale=0.1,
    max_epochs=15,
    patience=4,
    tta=False,
)
DEFAULTS = dict(tta=True, head_init="random")
PROBE = dict(tta=True, head_init="linear_probe")  # the defaults until this table chose
ROWS = {
    "naive": ("naive features: Lite0 features + `LogisticRegression()` on train+val", None),
    "A": (
        "previous defaults: every layer, random head, 1 head-only epoch, early stopping",
        PREVIOUS,
    ),
    "D": (
        "last two stages on cached views + head from the linear probe (LP-FT)",
        dict(PROBE, tta=False),
    ),
    "H": ("D + mirror test-time augmentation", PROBE),
    "C": ("H with a random head instead of the probe: **today's defaults**", DEFAULTS),
    "F": ("H without label smoothing", dict(PROBE, label_smoothing=0.0)),
    "G": ("H without augmentation (one plain view)", dict(PROBE, augment=None)),
    "B": (
        "defaults, but the head alone trains (`train_layers='head'`)",
        dict(DEFAULTS, train_layers="head"),
    ),
    "K": ("defaults with 3 views instead of 6", dict(DEFAULTS, n_views=3)),
    "E": ("defaults with early stopping patience 3", dict(DEFAULTS, patience=3)),
    "I": ("defaults on every layer (no cache)", dict(DEFAULTS, train_layers="all")),
    "J": (
        "defaults with EfficientNet-Lite2 at 260 px",
        dict(DEFAULTS, backbone="efficientnet_lite2"),
    ),
}
# Rows that differ from another row only at prediction: scored on that row's fitted model,
# so they cost no fit of their own (their fit time is the other row's).
PREDICTION_ONLY = {"H": ("D", dict(tta=True))}
# The robustness rows: BUSI reduced to 28 px grey images, malignant against the rest, as
# small low-resolution medical sets are (the held-out set was of this kind).
TINY_ROWS = {
    "tiny-features": "28 px grey, binary: Lite0 features + `LogisticRegression()` on train+val",
    "tiny-D": "28 px grey, binary: `FineTuneClassifier(image_size=96)`, as row H",
    "tiny-C": "28 px grey, binary: `FineTuneClassifier(image_size=96)`: **today's defaults**",
}
TINY_PARAMS = {"tiny-D": PROBE, "tiny-C": DEFAULTS}


def _scores(proba, y_true, classes) -> dict:
    codes = np.searchsorted(classes, y_true)
    malignant = int(np.flatnonzero(classes == "malignant")[0])
    predicted = proba.argmax(axis=1)
    # Binary: the one AUC (both columns give it); otherwise the one-vs-rest macro mean.
    columns = [malignant] if len(classes) == 2 else range(len(classes))
    return {
        "accuracy": float(np.mean(predicted == codes)),
        "macro_auc": float(np.mean([roc_auc_score(codes == k, proba[:, k]) for k in columns])),
        "malignant_recall": float(np.mean(predicted[codes == malignant] == malignant)),
    }


def run(row: str, seed: int, data, groups) -> dict:
    path = CACHE / f"{row}_{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    if row in TINY_ROWS:
        return _cache(path, run_tiny(row, seed, data, groups))
    fitted_row = PREDICTION_ONLY.get(row, (row,))[0]
    _, params = ROWS[fitted_row]
    paths, labels = data.paths, data.target
    train, val, test = train_val_test_split(
        np.arange(len(paths)), stratify=labels, groups=groups, random_state=seed
    )
    start = time.perf_counter()
    features = ConvFeatureTransformer().fit(paths[train])
    train_features = features.transform(paths[train])
    transform_s = time.perf_counter() - start
    start = time.perf_counter()
    if params is None:  # as busi.md's naive baseline: the head sees train and val
        both = np.vstack([train_features, features.transform(paths[val])])
        model = LogisticRegression().fit(both, labels[np.concatenate([train, val])])
        fit_s = time.perf_counter() - start
        probas = {row: model.predict_proba(features.transform(paths[test]))}
        epochs = None
    else:
        model = FineTuneClassifier(
            **params,
            train_split=predefined_split(Dataset(paths[val], labels[val])),
            random_state=seed,
        )
        model.fit(paths[train], labels[train])
        fit_s = time.perf_counter() - start
        probas = {fitted_row: model.predict_proba(paths[test])}
        # Every prediction-only variant of this row, from the same fitted model.
        for other, (base, changes) in PREDICTION_ONLY.items():
            if base == fitted_row:
                probas[other] = model.set_params(**changes).predict_proba(paths[test])
                model.set_params(**{k: params[k] for k in changes})
        epochs = len(model.history)
    for name, proba in probas.items():
        result = _result(name, seed, fit_s, transform_s, epochs, proba, labels[test], model, test)
        _cache(CACHE / f"{name}_{seed}.json", result)
    return json.loads(path.read_text())


def _result(row, seed, fit_s, transform_s, epochs, proba, y_test, model, test) -> dict:
    return {
        "row": row,
        "seed": seed,
        "fit_s": fit_s,
        "transform_s": transform_s,
        "ratio": fit_s / transform_s,
        "epochs": epochs,
        **_scores(proba, y_test, np.asarray(model.classes_)),
        "proba": proba.tolist(),
        "test": np.asarray(test).tolist(),
    }


def _cache(path: Path, result: dict) -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def tiny_images(paths) -> np.ndarray:
    """Each image as 28 x 28 grey pixels (area-averaged), as MedMNIST-like sets hold them."""
    from PIL import Image

    return np.stack(
        [np.asarray(Image.open(p).convert("L").resize((28, 28), Image.BOX)) for p in paths]
    )


def run_tiny(row: str, seed: int, data, groups) -> dict:
    """A robustness row: 28 px grey images, malignant against the rest."""
    labels = np.where(data.target == "malignant", "malignant", "other")
    train, val, test = train_val_test_split(
        np.arange(len(labels)), stratify=data.target, groups=groups, random_state=seed
    )
    images = tiny_images(data.paths)
    start = time.perf_counter()
    features = ConvFeatureTransformer().fit(images[train])
    features.transform(images[train])
    transform_s = time.perf_counter() - start
    start = time.perf_counter()
    if row == "tiny-features":
        both = np.concatenate([train, val])
        model = Pipeline([("features", features), ("head", LogisticRegression())])
        model.fit(images[both], labels[both])
    else:
        model = FineTuneClassifier(
            **TINY_PARAMS[row],
            image_size=96,
            train_split=predefined_split(Dataset(images[val], labels[val])),
            random_state=seed,
        ).fit(images[train], labels[train])
    fit_s = time.perf_counter() - start
    epochs = len(model.history) if row != "tiny-features" else None
    proba = model.predict_proba(images[test])
    return _result(row, seed, fit_s, transform_s, epochs, proba, labels[test], model, test)


def summary(results: list) -> dict:
    out = {}
    for key in ("accuracy", "macro_auc", "malignant_recall", "fit_s", "ratio"):
        values = np.array([r[key] for r in results], dtype=float)
        out[key] = (float(values.mean()), float(values.std()))
    out["per_seed_accuracy"] = [r["accuracy"] for r in results]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("busi", nargs="?", default=ROOT.parent / "shared" / "datasets" / "busi")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rows", default=",".join([*ROWS, *TINY_ROWS]))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    data = load_image_folder(args.busi)
    groups = find_near_duplicates(data.paths)
    results = {}
    for row in args.rows.split(","):
        for seed in range(args.seeds):
            result = run(row, seed, data, groups)
            results.setdefault(row, []).append(result)
            print(
                f"{row} seed {seed}: accuracy {result['accuracy']:.3f} AUC "
                f"{result['macro_auc']:.3f} fit {result['fit_s']:.0f} s ratio "
                f"{result['ratio']:.1f}",
                flush=True,
            )
    write(results)


def write(results: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    table = {row: summary(rs) for row, rs in results.items()}
    names = {**{r: d for r, (d, _) in ROWS.items()}, **TINY_ROWS}
    (OUT / "finetune_ablation.json").write_text(
        json.dumps({"rows": {r: names[r] for r in results}, "summary": table}, indent=1)
    )
    lines = [
        "# Fine-tuning recipes on BUSI (duplicate-aware splits)",
        "",
        "Made by `python benchmarks/finetune_ablation.py` on a 2-core CPU machine (no GPU). "
        "Each row: train part of the duplicate-aware 70:15:15 split of seeds "
        f"0..{len(next(iter(results.values()))) - 1}, validation part as the validation set, "
        "scored on the test part; mean ± std over seeds, in percent. Fit ratio: fit seconds "
        "over the seconds `ConvFeatureTransformer().transform` takes on the same training "
        "images in the same process. Per seed, each row's accuracy minus its baseline's: "
        "the naive features for BUSI's rows, `tiny-features` for the 28 px rows (their AUC "
        "is the binary one, malignant against the rest). Fits are seeded "
        "(`random_state=seed`) and a CPU repeats them to the last digit.",
        "",
        "| row | recipe | accuracy | vs baseline, per seed | macro AUC | malignant recall "
        "| fit s | fit ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, s in table.items():
        gap = "-"
        baseline = table.get("tiny-features" if row in TINY_ROWS else "naive")
        if baseline is not None and row not in ("naive", "tiny-features"):
            diffs = 100 * (np.array(s["per_seed_accuracy"]) - baseline["per_seed_accuracy"])
            gap = " ".join(f"{d:+.1f}" for d in diffs)
        lines.append(
            f"| {row} | {names[row]} | {100 * s['accuracy'][0]:.1f} ± "
            f"{100 * s['accuracy'][1]:.1f} | {gap} | {100 * s['macro_auc'][0]:.1f} "
            f"| {100 * s['malignant_recall'][0]:.1f} | {s['fit_s'][0]:.0f} "
            f"| {s['ratio'][0]:.1f} |"
        )
    (OUT / "finetune_ablation.md").write_text("\n".join([*lines, "", *READING]) + "\n")


# Written after the run of 2026-12-02; the table above is regenerated by the script.
READING = [
    "## Reading",
    "",
    "Measured on 2026-12-02 with `--rows naive,D,H,C,F,G,tiny-features,tiny-D,tiny-C "
    "--seeds 5` (about 50 minutes of fits). Row A, the previous defaults, was measured "
    "by `busi.py` on the same splits on 2026-11-28: 77.9 ± 5.4 %, macro AUC 0.903, "
    "927 s per fit.",
    "",
    "- **What paid.** Training the last two stages on cached views of the frozen early "
    "layers (D: 80.3 %, fit ratio 23, against 77.9 % in 927 s for every layer); mirror "
    "test-time augmentation (D to H: +2.1 points on the same fitted models, AUC +0.006); "
    "label smoothing (H without it, F: -5.7 points, two splits below the naive "
    "baseline); augmentation (H without it, G: -7.7 points, below the baseline on three "
    "splits).",
    "- **What did not pay: the linear-probe head (LP-FT).** With a random head (C), "
    "83.0 ± 4.7 % against 82.4 ± 3.6 %, the same macro AUC (93.3); on the 28 px binary "
    "set, AUC 0.869 against 0.819, and there the probe-started model fell below the "
    "feature pipeline (82.0 % and AUC 0.819 against 82.9 % and 0.838). A probe fitted "
    "on 546 images at low resolution is a starting point that early stopping on 117 "
    "validation images does not leave. C is therefore today's default.",
    "- **Today's defaults (C) against the targets of issue 17**: +6.8 points over the "
    "naive features on average (target +5), no split below them (the worst +3.4; target "
    "no split more than 2 below), macro AUC 0.933 (target 0.93), fit ratio 20.3 (target "
    "at most 30); on the 28 px binary set, accuracy +0.6 and AUC +3.1 points over the "
    "feature pipeline (target: at least its figures minus 1 point).",
    "- **Speed.** The cached views used to run through the frozen layers as one batch of "
    "192 (32 images x 6 views): 18 views/s on 2 cores against 130 in chunks of 8, so a "
    "fit spent two thirds of its time there (125 of 188 s, seed 4). They now run in "
    "chunks (`cpu_chunk_size`); the same seeds give the same models, fits are 15 to 42 % "
    "shorter.",
    "- **Not measured here** (each row is about 12 minutes of fits on this machine): "
    "head-only training (B), fewer views (K), patience 3 (E), LP-FT on every layer (I), "
    "Lite2 at 260 px (J), progressive resizing, refitting on train+val, EMA/SWA and "
    "snapshot ensembles, mixup and layer-wise learning-rate decay.",
]


if __name__ == "__main__":
    main()
