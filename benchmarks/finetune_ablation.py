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
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv.datasets import load_image_folder
from skconv.model_selection import find_near_duplicates, train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache" / "finetune_ablation"

# The rows: label, description, and what FineTuneClassifier is given (None: a baseline).
# Everything not named takes FineTuneClassifier's defaults of this version.
PREVIOUS = dict(
    train_layers="all",
    head_init="random",
    label_smoothing=0.0,
    freeze_epochs=1,
    backbone_lr_scale=0.1,
    max_epochs=15,
    patience=4,
)
ROWS = {
    "naive": ("naive features: Lite0 features + `LogisticRegression()` on train+val", None),
    "A": (
        "previous defaults: every layer, random head, 1 head-only epoch, early stopping",
        PREVIOUS,
    ),
    "B": ("head only on cached views (`train_layers='head'`)", dict(train_layers="head")),
    "C": ("last two stages on cached views, random head", dict(head_init="random")),
    "D": ("last two stages + head from the linear probe (LP-FT)", dict()),
    "E": ("D + early stopping (patience 3)", dict(patience=3)),
    "F": ("D without label smoothing", dict(label_smoothing=0.0)),
    "G": ("D without augmentation (one plain view)", dict(augment=None)),
    "H": ("D + mirror test-time augmentation", dict(tta=True)),
    "I": ("D on every layer (LP-FT, no cache)", dict(train_layers="all")),
    "J": ("D with EfficientNet-Lite2 at 260 px", dict(backbone="efficientnet_lite2")),
}


def _scores(proba, y_true, classes) -> dict:
    codes = np.searchsorted(classes, y_true)
    malignant = int(np.flatnonzero(classes == "malignant")[0])
    predicted = proba.argmax(axis=1)
    return {
        "accuracy": float(np.mean(predicted == codes)),
        "macro_auc": float(
            np.mean([roc_auc_score(codes == k, proba[:, k]) for k in range(len(classes))])
        ),
        "malignant_recall": float(np.mean(predicted[codes == malignant] == malignant)),
    }


def run(row: str, seed: int, data, groups) -> dict:
    path = CACHE / f"{row}_{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    _, params = ROWS[row]
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
        proba = model.predict_proba(features.transform(paths[test]))
        classes = model.classes_
    else:
        model = FineTuneClassifier(
            **params,
            train_split=predefined_split(Dataset(paths[val], labels[val])),
            random_state=seed,
        )
        model.fit(paths[train], labels[train])
        fit_s = time.perf_counter() - start
        proba = model.predict_proba(paths[test])
        classes = model.classes_
    result = {
        "row": row,
        "seed": seed,
        "fit_s": fit_s,
        "transform_s": transform_s,
        "ratio": fit_s / transform_s,
        "epochs": None if params is None else len(model.history),
        **_scores(proba, labels[test], np.asarray(classes)),
        "proba": proba.tolist(),
        "test": test.tolist(),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


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
    parser.add_argument("--rows", default=",".join(ROWS))
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
    (OUT / "finetune_ablation.json").write_text(
        json.dumps({"rows": {r: ROWS[r][0] for r in results}, "summary": table}, indent=1)
    )
    naive = table.get("naive")
    lines = [
        "# Fine-tuning recipes on BUSI (duplicate-aware splits)",
        "",
        "Made by `python benchmarks/finetune_ablation.py` on a 2-core CPU machine (no GPU). "
        "Each row: train part of the duplicate-aware 70:15:15 split of seeds "
        f"0..{len(next(iter(results.values()))) - 1}, validation part as the validation set, "
        "scored on the test part; mean ± std over seeds, in percent. Fit ratio: fit seconds "
        "over the seconds `ConvFeatureTransformer().transform` takes on the same training "
        "images in the same process.",
        "",
        "| row | recipe | accuracy | vs naive, per seed | macro AUC | malignant recall "
        "| fit s | fit ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, s in table.items():
        gap = "-"
        if naive is not None and row != "naive":
            diffs = 100 * (np.array(s["per_seed_accuracy"]) - naive["per_seed_accuracy"])
            gap = " ".join(f"{d:+.1f}" for d in diffs)
        lines.append(
            f"| {row} | {ROWS[row][0]} | {100 * s['accuracy'][0]:.1f} ± "
            f"{100 * s['accuracy'][1]:.1f} | {gap} | {100 * s['macro_auc'][0]:.1f} "
            f"| {100 * s['malignant_recall'][0]:.1f} | {s['fit_s'][0]:.0f} "
            f"| {s['ratio'][0]:.1f} |"
        )
    (OUT / "finetune_ablation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
