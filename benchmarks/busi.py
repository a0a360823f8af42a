"""The BUSI study: each way of transfer learning on duplicate-aware and image-level splits.

Run from the project root (26 minutes on a 2-core CPU machine, 2026-12-02):

    .venv/bin/python benchmarks/busi.py [BUSI_DIR] [--seeds 5] [--finetune-seeds 2]

Writes benchmarks/results/busi.md, busi.json and busi_confusion_matrix.png. Features are
computed once per configuration by ConvFeatureTransformer (with its per-image cache in
benchmarks/.cache/) and looked up by image index inside the scikit-learn pipelines, so
that GridSearchCV tries heads and configurations without re-running the network; the
numbers are those of the same pipelines run on the paths. Fine-tuned models are kept in
benchmarks/.cache/ too, so a rerun only trains what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from skconv import ConvFeatureTransformer, FineTuneClassifier
from skconv.datasets import load_image_folder
from skconv.model_selection import find_near_duplicates, train_val_test_split
from skconv.report import classification_metrics, plot_confusion_matrix

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"

# Offline backbones and transformer settings the tuned pipeline chooses among.
CONFIGS = {
    "lite0_avg": dict(backbone="efficientnet_lite0"),
    "lite0_gem": dict(backbone="efficientnet_lite0", pooling="gem"),
    "lite0_avgmax": dict(backbone="efficientnet_lite0", pooling="avgmax"),
    "lite0_avg_tta": dict(backbone="efficientnet_lite0", tta=True),
    "lite0_b4+final_avg": dict(backbone="efficientnet_lite0", layers=["blocks.4", "final"]),
    "lite1_avg": dict(backbone="efficientnet_lite1"),
    "lite2_avg": dict(backbone="efficientnet_lite2"),
    "lite2_gem": dict(backbone="efficientnet_lite2", pooling="gem"),
    "lite2_avg_tta": dict(backbone="efficientnet_lite2", tta=True),
    "squeezenet_avg": dict(backbone="squeezenet1_1_caffe"),
}
# Concatenations of the configurations above: several backbones' views of one image.
STACKED = {"lite0+lite1+lite2_avg": ["lite0_avg", "lite1_avg", "lite2_avg"]}
METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr_macro", "malignant_recall"]


class Bank(dict):
    """Feature matrices by configuration; shared, not copied, when sklearn clones."""

    def __deepcopy__(self, memo):
        return self


class FeatureLookup(TransformerMixin, BaseEstimator):
    """Rows of a precomputed feature matrix, selected by image index (X holds indices)."""

    def __init__(self, config: str = "lite0_avg", bank=None):
        self.config = config
        self.bank = bank

    def fit(self, X, y=None):
        self.n_features_in_ = 1
        return self

    def transform(self, X):
        return self.bank[self.config][np.asarray(X).ravel().astype(int)]


def _n_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def feature_bank(paths, memory=None):
    """Features of every configuration; seconds only for those computed, not read from cache."""
    bank, seconds = Bank(), {}
    memory = Path(memory or CACHE / "features")
    for name, params in CONFIGS.items():
        cached = _n_files(memory)
        start = time.perf_counter()
        transformer = ConvFeatureTransformer(**params, memory=str(memory), verbose=1)
        bank[name] = transformer.fit(paths).transform(paths)
        if _n_files(memory) > cached:  # a cache hit would time the cache, not the network
            seconds[name] = time.perf_counter() - start
        print(f"features {name}: {bank[name].shape} in {time.perf_counter() - start:.0f} s")
    for name, parts in STACKED.items():
        bank[name] = np.hstack([bank[part] for part in parts])
    return bank, seconds


def scores(y_true, proba, classes):
    pred = classes[proba.argmax(axis=1)]
    m = classification_metrics(y_true, pred, proba, labels=list(classes))
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "f1_macro": m["f1_macro"],
        "roc_auc_ovr_macro": m["roc_auc_ovr_macro"],
        "malignant_recall": m["per_class"]["malignant"]["recall"],
        "confusion_matrix": m["confusion_matrix"],
    }


def tuned_search(bank, grouped: bool, seed: int):
    pipe = Pipeline(
        [
            ("features", FeatureLookup(bank=bank)),
            ("scale", StandardScaler()),
            ("head", LogisticRegression(max_iter=2000)),
        ]
    )
    grid = [
        {
            "features__config": [*CONFIGS, *STACKED],
            "scale": [StandardScaler()],
            "head": [LogisticRegression(max_iter=2000)],
            "head__C": [0.01, 0.1],
        },
        {
            "features__config": [*CONFIGS, *STACKED],
            "scale": [StandardScaler()],
            "head": [CalibratedClassifierCV(SVC(random_state=seed), ensemble=False)],
            "head__estimator__C": [1.0, 10.0],
        },
    ]
    cv = (
        StratifiedGroupKFold(3, shuffle=True, random_state=seed)
        if grouped
        else StratifiedKFold(3, shuffle=True, random_state=seed)
    )
    return GridSearchCV(pipe, grid, cv=cv, scoring="accuracy", n_jobs=1)


def run_split(kind, seed, data, groups, bank, finetune: bool):
    y = data.target
    idx = np.arange(len(y))
    grouped = kind == "grouped"
    tr, va, te = train_val_test_split(
        idx, stratify=y, groups=groups if grouped else None, random_state=seed
    )
    trval = np.concatenate([tr, va])
    out = {"sizes": [len(tr), len(va), len(te)]}
    probas = {}

    def record(name, model, fit_seconds, proba, classes):
        out[name] = {**scores(y[te], proba, classes), "fit_seconds": fit_seconds}
        probas[name] = (proba, classes)
        return model

    # 1. naive baseline: pooled Lite0 features + LogisticRegression() as it comes
    for name, head in (
        ("1_naive", LogisticRegression()),
        ("2_skconv_defaults", LogisticRegression(max_iter=2000)),
    ):
        model = Pipeline([("features", FeatureLookup("lite0_avg", bank)), ("head", head)])
        start = time.perf_counter()
        model.fit(trval, y[trval])
        record(name, model, time.perf_counter() - start, model.predict_proba(te), model.classes_)

    # 3. tuned with GridSearchCV on train+val, refit, scored on test
    search = tuned_search(bank, grouped, seed)
    start = time.perf_counter()
    search.fit(trval, y[trval], groups=groups[trval] if grouped else None)
    record(
        "3_tuned_features",
        search,
        time.perf_counter() - start,
        search.predict_proba(te),
        search.classes_,
    )
    out["3_tuned_features"]["best_params"] = {
        k: (v if isinstance(v, (str, int, float)) else type(v).__name__)
        for k, v in search.best_params_.items()
    }

    # 4. fine-tuning with defaults; the validation part drives early stopping
    if finetune:
        path = CACHE / f"finetune_{kind}_{seed}.joblib"
        if path.exists():
            clf, fit_seconds = joblib.load(path), json.loads(path.with_suffix(".json").read_text())
        else:
            clf = FineTuneClassifier(
                random_state=seed,
                verbose=1,
                train_split=predefined_split(Dataset(data.paths[va], y[va])),
            )
            start = time.perf_counter()
            clf.fit(data.paths[tr], y[tr])
            fit_seconds = time.perf_counter() - start
            joblib.dump(clf, path)
            path.with_suffix(".json").write_text(json.dumps(fit_seconds))
        record("4_finetune", clf, fit_seconds, clf.predict_proba(data.paths[te]), clf.classes_)
        out["4_finetune"]["epochs"] = len(clf.history)
        # 5. ensemble of 3 and 4: mean of the two probability estimates
        p3, c3 = probas["3_tuned_features"]
        p4, c4 = probas["4_finetune"]
        assert list(c3) == list(c4)
        out["5_ensemble_3+4"] = {
            **scores(y[te], (p3 + p4) / 2, c3),
            "fit_seconds": out["3_tuned_features"]["fit_seconds"]
            + out["4_finetune"]["fit_seconds"],
        }
    return out


def summarise(runs):
    table = {}
    for kind in ("grouped", "image"):
        methods = sorted(
            {m for r in runs if r["kind"] == kind for m in r["result"] if m[0].isdigit()}
        )
        for method in methods:
            values = [
                r["result"][method] for r in runs if r["kind"] == kind and method in r["result"]
            ]
            row = {"n_seeds": len(values), "per_seed_accuracy": [v["accuracy"] for v in values]}
            for metric in METRICS + ["fit_seconds"]:
                xs = np.array([v[metric] for v in values], dtype=float)
                row[metric] = (float(xs.mean()), float(xs.std()))
            table[(kind, method)] = row
    return table


def write_markdown(args, runs, table, dup_info, bank_seconds, best_key, seconds_note=""):
    n_seeds = len({r["seed"] for r in runs})
    n_ft = sum(1 for r in runs if r["kind"] == "grouped" and "4_finetune" in r["result"])

    def fmt(pair, pct=True):
        mean, std = pair
        return f"{100 * mean:.1f} ± {100 * std:.1f}" if pct else f"{mean:.0f}"

    lines = [
        "# BUSI: the three ways of transfer learning, honestly measured",
        "",
        f"Made by `python benchmarks/busi.py --seeds {n_seeds} --finetune-seeds "
        f"{n_ft}` on a 2-core CPU machine with no GPU. BUSI: 780 images "
        "(437 benign, 210 malignant, 133 normal), 256 px grayscale copy.",
        "",
        f"Near-duplicate groups from `find_near_duplicates` (default threshold): "
        f"{dup_info['n_groups_multi']} groups of two or more covering {dup_info['n_in_groups']} "
        f"images, found in {dup_info['seconds']:.1f} s.",
        "",
        "Splits: 70:15:15 stratified, (a) **duplicate-aware** (`groups=` the near-duplicate "
        "groups: no group straddles train/val/test) and (b) image-level, for comparison; seeds "
        f"0..{n_seeds - 1}. Feature methods fit on train+val; fine-tuning trains on train and "
        f"stops early on val (seeds 0..{n_ft - 1} duplicate-aware, "
        f"seed 0 image-level, for time). Mean ± std over seeds, in percent.",
        "",
        "| split | method | seeds | accuracy | accuracy per seed | balanced acc. | macro-F1 "
        "| macro AUC (OvR) | malignant recall | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "1_naive": "1 naive: Lite0 avg features + `LogisticRegression()`",
        "2_skconv_defaults": "2 skconv defaults: `ConvFeatureTransformer()` + LR(max_iter=2000)",
        "3_tuned_features": "3 tuned features (GridSearchCV: backbone or a Lite0+1+2 "
        "concatenation, pooling, layers, tta, head, C)",
        "4_finetune": "4 `FineTuneClassifier()` defaults",
        "5_ensemble_3+4": "5 ensemble: mean probability of 3 and 4",
    }
    for (kind, method), row in table.items():
        label = "duplicate-aware" if kind == "grouped" else "image-level"
        per_seed = " ".join(f"{100 * a:.1f}" for a in row["per_seed_accuracy"])
        lines.append(
            f"| {label} | {names[method]} | {row['n_seeds']} | {fmt(row['accuracy'])} | "
            f"{per_seed} | "
            + " | ".join(fmt(row[m]) for m in METRICS[1:])
            + f" | {fmt(row['fit_seconds'], pct=False)} |"
        )
    lines += [
        "",
        "Feature extraction, once per configuration for all 780 images "
        f"(s; {seconds_note or 'timed when not cached'}): "
        + ", ".join(f"{k} {v:.0f}" for k, v in bank_seconds.items())
        + ".",
        "",
    ]
    chosen = [r["result"]["3_tuned_features"]["best_params"] for r in runs]
    lines += [
        "Configurations chosen by the grid search (one per split): "
        + "; ".join(
            f"{p['features__config']}/{p['head']}"
            f"(C={p.get('head__C', p.get('head__estimator__C'))})"
            for p in chosen
        )
        + ".",
        "",
    ]
    gap_lines = []
    for method in names:
        g, i = table.get(("grouped", method)), table.get(("image", method))
        if g and i:
            gap_lines.append(
                f"method {method.split('_')[0]}: "
                f"{100 * (i['accuracy'][0] - g['accuracy'][0]):+.1f} points"
            )
    lines += [
        "Image-level minus duplicate-aware test accuracy (the leak): "
        + "; ".join(gap_lines)
        + ".",
        "",
    ]
    lines += [
        f"Confusion matrix of the best method on the duplicate-aware splits "
        f"({names[best_key]}), summed over its seeds: `busi_confusion_matrix.png`.",
        "",
    ]
    ablation = OUT / "finetune_ablation.md"
    if ablation.exists():  # the fine-tuning recipes, measured by finetune_ablation.py
        lines += ["## Fine-tuning recipes", "", *ablation.read_text().splitlines()[2:], ""]
    lines += DISCUSSION
    (OUT / "busi.md").write_text("\n".join(lines) + "\n")


DISCUSSION = [
    "## Discussion",
    "",
    "Written after the run of 2026-12-07 with the default options, `--seeds 5 "
    "--finetune-seeds 2` (about 22 minutes from a cold cache on this 2-core machine; the "
    "numbers above are re-generated by the script, this reading is of that run).",
    "",
    "- **Image-level splits overstate accuracy.** The feature methods score 3 to 4 points "
    "higher on image-level splits than on duplicate-aware ones with the same seeds (naive "
    "79.5 vs 76.2, skconv defaults 79.5 vs 75.7, tuned 80.7 vs 76.4): the image-level test "
    "part holds re-crops and re-annotations of training scans, which a model recognises "
    "rather than diagnoses. Fine-tuning ran on one image-level seed only, too few to "
    "measure its gap.",
    "- **The split matters as much as the method.** A test part has 117 images (one image "
    "is 0.85 points), and the five duplicate-aware splits move the naive baseline from "
    "72.6 to 78.6 and fine-tuning from 77.8 to 88.9 on two of them. Read methods against "
    "each other split by split (the per-seed column), not by their means alone.",
    "- **Fine-tuning is the best method**: on the two duplicate-aware splits it ran here, "
    "88.9 and 77.8 against 78.6 and 72.6 for the naive baseline (+10.3 and +5.2 points), "
    "macro AUC 92.8, in 104 s per fit (glibc's default malloc: the `skconv` command, which "
    "keeps freed memory for reuse, fits faster, `malloc.md`). These are today's defaults, "
    "row C of the recipes table above (83.0 ± 4.7 over all five splits). The previous "
    "defaults (every layer trained) reached 77.9 ± 5.4 in 927 s per fit on the same "
    "splits (run of 2026-11-28).",
    "- **The ensemble with the tuned features does not help**: 80.3 against 83.3 for "
    "fine-tuning alone on the same two splits. With the previous, weaker fine-tuning it "
    "was the best method (79.8 over five splits).",
    "- **Tuning the feature pipeline helped little** (76.4 vs 76.2, AUC 89.1 vs 89.9). The "
    "grid picked the Lite0+Lite1+Lite2 concatenation or the packaged SqueezeNet in 7 of "
    "10 splits; three-fold grouped CV on about 660 images ranks 44 candidates by "
    "differences smaller than its own noise. The skconv defaults with a converged head "
    "(method 2) equal the naive baseline, as they should: the same features.",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "busi", nargs="?", default=str(ROOT.parent / "shared" / "datasets" / "busi")
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--finetune-seeds", type=int, default=2)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite busi.md and the confusion matrix from busi.json without computing",
    )
    parser.add_argument(
        "--time-features",
        action="store_true",
        help="extract every configuration's features into an empty cache, store the times "
        "in busi.json and rewrite busi.md (the main run reuses cached features)",
    )
    args = parser.parse_args()
    if args.time_features:
        import tempfile

        saved = json.loads((OUT / "busi.json").read_text())
        with tempfile.TemporaryDirectory(prefix="busi-features-") as cold:
            _, saved["feature_seconds"] = feature_bank(load_image_folder(args.busi).paths, cold)
        saved["feature_seconds_note"] = f"cold cache, {time.strftime('%Y-%m-%d')}"
        (OUT / "busi.json").write_text(json.dumps(saved, indent=1))
        args.report_only = True
    if args.report_only:
        saved = json.loads((OUT / "busi.json").read_text())
        report(
            args,
            saved["runs"],
            saved["duplicates"],
            saved["feature_seconds"],
            ["benign", "malignant", "normal"],
            saved.get("feature_seconds_note", ""),
        )
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)

    data = load_image_folder(args.busi)
    start = time.perf_counter()
    groups = find_near_duplicates(data.paths)
    sizes = np.bincount(groups)
    dup_info = {
        "seconds": time.perf_counter() - start,
        "n_groups_multi": int((sizes > 1).sum()),
        "n_in_groups": int(sizes[sizes > 1].sum()),
    }
    bank, bank_seconds = feature_bank(data.paths)
    seconds_note = "this run"
    if not bank_seconds and (OUT / "busi.json").exists():  # every configuration was cached
        earlier = json.loads((OUT / "busi.json").read_text())
        bank_seconds = earlier.get("feature_seconds", {})
        seconds_note = earlier.get("feature_seconds_note", "an earlier run")

    runs = []
    for seed in range(args.seeds):
        for kind in ("grouped", "image"):
            finetune = seed < args.finetune_seeds if kind == "grouped" else seed == 0
            result = run_split(kind, seed, data, groups, bank, finetune)
            runs.append({"kind": kind, "seed": seed, "result": result})
            print(
                kind,
                seed,
                {
                    m: round(v["accuracy"], 3)
                    for m, v in result.items()
                    if isinstance(v, dict) and "accuracy" in v
                },
                flush=True,
            )
            (OUT / "busi.json").write_text(
                json.dumps(
                    {
                        "duplicates": dup_info,
                        "feature_seconds": bank_seconds,
                        "feature_seconds_note": seconds_note,
                        "runs": runs,
                    },
                    indent=1,
                )
            )

    report(args, runs, dup_info, bank_seconds, list(np.unique(data.target)), seconds_note)


def report(args, runs, dup_info, bank_seconds, labels, seconds_note=""):
    table = summarise(runs)
    grouped_methods = [m for (k, m) in table if k == "grouped"]
    best_key = max(grouped_methods, key=lambda m: table[("grouped", m)]["accuracy"][0])
    matrices = [
        np.array(r["result"][best_key]["confusion_matrix"])
        for r in runs
        if r["kind"] == "grouped" and best_key in r["result"]
    ]
    plot_confusion_matrix(
        sum(matrices),
        labels,
        OUT / "busi_confusion_matrix.png",
        overwrite=True,
        title=f"BUSI, duplicate-aware test splits: {best_key}",
    )
    write_markdown(args, runs, table, dup_info, bank_seconds, best_key, seconds_note)
    print((OUT / "busi.md").read_text())


if __name__ == "__main__":
    main()
