"""Outputs that a refactor must leave as they are, saved before and compared after.

What it records on BUSI (``../shared/datasets/busi``):

* the features of the default pipeline's transformer, ``ConvFeatureTransformer()``, for
  every image, with ``engine="torch"`` and with ``engine="onnxruntime"``;
* ``FineTuneClassifier(random_state=0)``'s test probabilities and labels on the
  duplicate-aware 70:15:15 split of seed 0, fitted as ``benchmarks/busi.py`` fits it
  (the train part, the validation part for early stopping), and its epoch count.

Usage::

    .venv/bin/python benchmarks/refactor_check.py --save /tmp/before     # old code
    .venv/bin/python benchmarks/refactor_check.py --against /tmp/before  # new code

``--against`` writes ``benchmarks/results/refactor_check.md`` and ``.json``: the largest
relative feature difference of each engine, and whether the predictions are identical.
The saved arrays stay outside the repository (they are derived from BUSI).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUSI = Path(os.environ.get("SKCONV_BUSI", ROOT.parent / "shared" / "datasets" / "busi"))
OUT = ROOT / "benchmarks" / "results"


def compute() -> dict:
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    from skconv import ConvFeatureTransformer, FineTuneClassifier
    from skconv.datasets import load_image_folder
    from skconv.model_selection import find_near_duplicates, train_val_test_split

    data = load_image_folder(BUSI)
    out = {}
    for engine in ("torch", "onnxruntime"):
        start = time.perf_counter()
        out[f"features_{engine}"] = (
            ConvFeatureTransformer(engine=engine).fit(data.paths).transform(data.paths)
        )
        print(f"features ({engine}): {time.perf_counter() - start:.1f} s", flush=True)
    groups = find_near_duplicates(data.paths)
    tr, va, te = train_val_test_split(
        np.arange(len(data.target)), stratify=data.target, groups=groups, random_state=0
    )
    clf = FineTuneClassifier(
        random_state=0,
        train_split=predefined_split(Dataset(data.paths[va], data.target[va])),
    )
    start = time.perf_counter()
    clf.fit(data.paths[tr], data.target[tr])
    out["fit_seconds"] = np.array(time.perf_counter() - start)
    out["epochs"] = np.array(len(clf.history))
    out["proba"] = clf.predict_proba(data.paths[te])
    out["labels"] = clf.classes_[out["proba"].argmax(axis=1)]
    out["accuracy"] = np.array(np.mean(out["labels"] == data.target[te]))
    print(
        f"fine-tuning: {float(out['fit_seconds']):.0f} s, {int(out['epochs'])} epochs, "
        f"test accuracy {float(out['accuracy']):.4f}",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--save", type=Path, help="folder to save today's outputs in")
    where.add_argument("--against", type=Path, help="folder of outputs saved earlier")
    args = parser.parse_args()
    if not BUSI.is_dir():
        sys.exit(f"BUSI not found at {BUSI}")
    now = compute()
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        np.savez(args.save / "refactor_check.npz", **now)
        return
    before = dict(np.load(args.against / "refactor_check.npz", allow_pickle=False))
    result = {}
    for engine in ("torch", "onnxruntime"):
        old, new = before[f"features_{engine}"], now[f"features_{engine}"]
        scale = np.maximum(np.abs(old), 1e-3)
        result[f"features_{engine}_max_rel_diff"] = float(np.max(np.abs(new - old) / scale))
        result[f"features_{engine}_max_abs_diff"] = float(np.max(np.abs(new - old)))
    result["finetune_labels_identical"] = bool(np.array_equal(before["labels"], now["labels"]))
    result["finetune_proba_max_abs_diff"] = float(np.max(np.abs(before["proba"] - now["proba"])))
    for key in ("epochs", "accuracy", "fit_seconds"):
        result[f"finetune_{key}_before"] = before[key].item()
        result[f"finetune_{key}_after"] = now[key].item()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "refactor_check.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Refactor check: outputs before and after",
        "",
        f"Command: `.venv/bin/python benchmarks/refactor_check.py --against DIR` "
        f"({time.strftime('%Y-%m-%d')}), DIR saved by `--save` on the code before.",
        "",
        "| what | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in result.items()),
        "",
    ]
    (OUT / "refactor_check.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
