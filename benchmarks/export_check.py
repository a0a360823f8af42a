"""Does the exported ONNX file predict what the fitted estimator predicts, on BUSI's test part?

Run from the project root:
    .venv/bin/python benchmarks/export_check.py [BUSI_DIR]
Writes benchmarks/results/export.md and .json.

The default feature pipeline (ConvFeatureTransformer() + LogisticRegression(max_iter=2000)) is
fitted on the training part of the duplicate-aware 70:15:15 split (seed 0), written with
skconv.export_onnx, loaded with skconv.export.OnnxClassifier (onnxruntime, NumPy and Pillow
only) and compared on the test part: labels, largest probability difference, and images/s of
both, alternating, best of 3.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from skconv import ConvFeatureTransformer, export_onnx
from skconv.datasets import load_image_folder
from skconv.export import OnnxClassifier
from skconv.model_selection import find_near_duplicates, train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
BUSI = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "datasets" / "busi"


def best_rate(predict, X, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(X)
        times.append(time.perf_counter() - start)
    return len(X) / min(times)


def main():
    data = load_image_folder(BUSI)
    groups = find_near_duplicates(data.paths)
    X_train, _, X_test, y_train, _, y_test = train_val_test_split(
        data.paths, data.target, stratify=data.target, groups=groups, random_state=0
    )
    model = Pipeline(
        [("features", ConvFeatureTransformer()), ("head", LogisticRegression(max_iter=2000))]
    ).fit(X_train, y_train)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, Path(folder) / "model.onnx")
        size = path.stat().st_size
        onnx_model = OnnxClassifier(path)
        proba = model.predict_proba(X_test)
        onnx_proba = onnx_model.predict_proba(X_test)
        labels_equal = bool((model.predict(X_test) == onnx_model.predict(X_test)).all())
        rates = {"estimator": [], "onnx": []}
        for _ in range(3):  # alternating, so that drifts of the machine hit both alike
            rates["estimator"].append(best_rate(model.predict_proba, X_test, 1))
            rates["onnx"].append(best_rate(onnx_model.predict_proba, X_test, 1))
    result = {
        "n_test": len(X_test),
        "labels_equal": labels_equal,
        "max_abs_proba_difference": float(np.abs(proba - onnx_proba).max()),
        "test_accuracy": float(np.mean(model.predict(X_test) == y_test)),
        "onnx_file_bytes": size,
        "images_per_s_estimator": max(rates["estimator"]),
        "images_per_s_onnx": max(rates["onnx"]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "export.json").write_text(json.dumps(result, indent=1))
    (OUT / "export.md").write_text(
        "# The exported ONNX file against the fitted estimator\n\n"
        "Made by `python benchmarks/export_check.py` on a 2-core CPU machine (no GPU). The "
        "default feature pipeline fitted on the training part of BUSI's duplicate-aware "
        "70:15:15 split (seed 0), exported with `skconv.export_onnx` and run by "
        "`skconv.export.OnnxClassifier`, on the test part "
        f"({result['n_test']} images):\n\n"
        "| labels equal | largest probability difference | test accuracy | file size | "
        "images/s, estimator | images/s, ONNX file |\n|---|---|---|---|---|---|\n"
        f"| {'yes' if labels_equal else 'no'} | {result['max_abs_proba_difference']:.1e} | "
        f"{result['test_accuracy']:.3f} | {size / 1e6:.1f} MB | "
        f"{result['images_per_s_estimator']:.1f} | {result['images_per_s_onnx']:.1f} |\n\n"
        "Target (issue 16): the same labels and probabilities within 1e-4. Speeds are the best "
        "of 3 alternating runs of `predict_proba` from the files.\n"
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
