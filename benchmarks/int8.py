"""precision="int8" against the fp32 engines, side by side: speed, features, BUSI accuracy.

Run from the project root (about 15 minutes on a 2-core CPU machine):
    .venv/bin/python benchmarks/int8.py [BUSI_DIR] [--seeds 5] [--quick] [--markdown-only]
Writes benchmarks/results/int8.md and .json.

Three transformers, all EfficientNet-Lite0 with the default preprocessing and pooling:
``ConvFeatureTransformer()`` (the default: ONNX Runtime, fp32), ``engine="openvino"``
(fp32) and ``precision="int8"`` (NNCF's post-training quantization, run by OpenVINO).

- Speed: the first 512 BUSI PNGs (sorted paths), in one process, the three alternating,
  best of 3 (median in brackets). First call: a fresh transformer's ``fit(X)`` and
  ``transform(X)``; for int8 ``fit`` decodes its 300 calibration images, and the
  quantized graph comes from the engine cache (the cold quantization is timed apart, in
  the first repetition, on an empty cache folder). Steady state: a second
  ``transform(X)``.
- Features: per-image cosine similarity of the int8 features to the default's, on the
  same 512 images.
- Accuracy: the default pipeline (features, ``LogisticRegression(max_iter=2000)``) and
  the tuned-features head (``StandardScaler``, ``LogisticRegressionCV``) fitted on
  train+val of the 5 duplicate-aware 70:15:15 BUSI splits (``train_val_test_split`` with
  ``find_near_duplicates`` groups), scored on test; the int8 transformer is fitted, so
  calibrated, on that split's train+val images. A control moves the fp32 features in
  random directions by as much as int8 moved them, image by image.

The issue's targets: int8 at least 1.8x the fp32 default end to end, mean cosine at least
0.99, test accuracy within 1 point of fp32 on each seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder
from skconv.engine.quantize import CALIBRATION_IMAGES
from skconv.model_selection import find_near_duplicates, train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
CONTENDERS = {
    "fp32, ONNX Runtime (default)": {},
    "fp32, OpenVINO": {"engine": "openvino"},
    "int8, OpenVINO": {"precision": "int8"},
}
DEFAULT, INT8 = "fp32, ONNX Runtime (default)", "int8, OpenVINO"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def speed(paths, repeats: int) -> dict:
    first: dict = {name: [] for name in CONTENDERS}
    steady: dict = {name: [] for name in CONTENDERS}
    fit: dict = {name: [] for name in CONTENDERS}
    transform: dict = {name: [] for name in CONTENDERS}
    features, cold = {}, {}
    for repeat in range(repeats):
        for name, params in CONTENDERS.items():
            if repeat == 0 and name == INT8:  # the quantization itself, on an empty cache
                start = time.perf_counter()
                ConvFeatureTransformer(**params).fit(paths)
                cold["quantize_fit_s"] = time.perf_counter() - start
            start = time.perf_counter()
            transformer = ConvFeatureTransformer(**params).fit(paths)
            fitted = time.perf_counter()
            features[name] = transformer.transform(paths)
            first[name].append(time.perf_counter() - start)
            fit[name].append(fitted - start)
            transform[name].append(time.perf_counter() - fitted)
            start = time.perf_counter()
            transformer.transform(paths)
            steady[name].append(time.perf_counter() - start)
            print(f"repeat {repeat} {name}: fit {fit[name][-1]:.1f} s, first transform "
                  f"{transform[name][-1]:.1f} s, second {steady[name][-1]:.1f} s")  # fmt: skip
    n = len(paths)

    def rates(seconds):
        return {"best": n / min(seconds), "median": n / statistics.median(seconds)}

    similarity = cosine(features[INT8], features[DEFAULT])
    return {
        "first_call": {name: rates(s) for name, s in first.items()},
        "first_transform": {name: rates(s) for name, s in transform.items()},
        "fit_s": {name: min(s) for name, s in fit.items()},
        "steady": {name: rates(s) for name, s in steady.items()},
        "cosine": {
            "mean": float(similarity.mean()),
            "min": float(similarity.min()),
            "p01": float(np.percentile(similarity, 1)),
        },
        "openvino_vs_default_max_relative": float(
            np.abs(features["fp32, OpenVINO"] - features[DEFAULT]).max()
            / np.abs(features[DEFAULT]).max()
        ),
        **cold,
    }


HEADS = {
    # The default pipeline (README, the mission's first way) and the tuned-features row of
    # benchmarks/finetune_ablation.py.
    "LogisticRegression": lambda: LogisticRegression(max_iter=2000),
    "StandardScaler + LogisticRegressionCV": lambda: make_pipeline(
        StandardScaler(), LogisticRegressionCV(max_iter=2000)
    ),
}
DEFAULT_HEAD = "LogisticRegression"


def accuracy(paths, labels, seeds: int) -> dict:
    groups = find_near_duplicates(paths)
    fp32 = ConvFeatureTransformer().fit(paths).transform(paths)
    norms = np.linalg.norm(fp32, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        train, val, test = train_val_test_split(
            np.arange(len(paths)), stratify=labels, groups=groups, random_state=seed
        )
        both = np.concatenate([train, val])
        start = time.perf_counter()
        int8 = ConvFeatureTransformer(precision="int8").fit(paths[both])
        fit_s = time.perf_counter() - start
        quantized = int8.transform(paths)
        # The control: fp32 features moved by random directions of the int8 error's size,
        # image by image. How far a test score moves for any change of that size.
        error = np.linalg.norm(quantized - fp32, axis=1, keepdims=True)
        direction = rng.standard_normal(fp32.shape)
        noisy = fp32 + direction / np.linalg.norm(direction, axis=1, keepdims=True) * error
        row = {"seed": seed, "n_test": len(test), "fit_s": fit_s}
        row["calibration_cosine"] = int8.int8_cosine_
        row["test_cosine"] = float(cosine(quantized[test], fp32[test]).mean())
        row["relative_error"] = float(np.median(error / norms))
        for head_name, head in HEADS.items():
            scores = {}
            for name, feats in (("fp32", fp32), ("int8", quantized), ("noise", noisy)):
                model = head().fit(feats[both], labels[both])
                scores[name] = float(model.score(feats[test], labels[test]))
            row[head_name] = scores
        rows.append(row)
        print("seed", seed, row, flush=True)
    return {"n_images": len(paths), "n_groups": int(len(np.unique(groups))), "seeds": rows}


def decide(results: dict) -> dict:
    s, a = results["speed"], results["accuracy"]["seeds"]
    ratio = s["first_transform"][INT8]["best"] / s["first_transform"][DEFAULT]["best"]
    changes = [100 * (row[DEFAULT_HEAD]["int8"] - row[DEFAULT_HEAD]["fp32"]) for row in a]
    checks = {
        "first transform at least 1.8x the fp32 default's": (ratio, ratio >= 1.8),
        "mean cosine at least 0.99": (s["cosine"]["mean"], s["cosine"]["mean"] >= 0.99),
        f"accuracy ({DEFAULT_HEAD}) within 1 point on each seed": (
            max(abs(c) for c in changes),
            all(abs(c) <= 1.0 for c in changes),
        ),
    }
    results["targets"] = {k: {"value": v, "met": bool(m)} for k, (v, m) in checks.items()}
    return results


def write_markdown(results: dict) -> None:
    s, acc = results["speed"], results["accuracy"]
    lines = [
        "# int8: NNCF post-training quantization on OpenVINO, against the fp32 engines",
        "",
        f"Made by `python benchmarks/int8.py` on a CPU machine with {results['threads']} "
        f"torch threads, no GPU ({results['cpu']}), {results['date']}. EfficientNet-Lite0, "
        "default preprocessing and pooling. Speed: the first "
        f"{results['n_speed']} BUSI PNGs, images/s end to end (decoding included), the three "
        "transformers alternating in one process, best of "
        f"{results['repeats']} (median in brackets). A fresh transformer's `fit(X)` (for "
        f"int8 it decodes its {CALIBRATION_IMAGES} calibration images and takes the quantized "
        "graph from the engine cache), its first `transform(X)` (which builds the engine), "
        "both together, and a second `transform(X)` (steady state).",
        "",
        "| transformer | fit, s | first transform | vs default | fit and first transform "
        "| vs default | steady state | vs default |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in CONTENDERS:
        cells = [f"{s['fit_s'][name]:.2f}"]
        for column in ("first_transform", "first_call", "steady"):
            rate, base = s[column][name], s[column][DEFAULT]["best"]
            cells += [f"{rate['best']:.1f} ({rate['median']:.1f})", f"{rate['best'] / base:.2f}x"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    c = s["cosine"]
    lines += [
        "",
        f"Quantizing (the first int8 `fit`, empty cache: decoding the calibration images, "
        f"NNCF's statistics and full bias correction): {s['quantize_fit_s']:.0f} s, once per "
        "network and calibration set; later fits on the same images load it from the cache.",
        "",
        f"Features: cosine similarity of int8 to the default's on the {results['n_speed']} "
        f"images: mean {c['mean']:.4f}, 1st percentile {c['p01']:.4f}, min {c['min']:.4f}. "
        "OpenVINO fp32 against the default: largest difference "
        f"{s['openvino_vs_default_max_relative']:.1e} of the largest feature.",
        "",
        f"Accuracy: test accuracy %, {len(acc['seeds'])} duplicate-aware 70:15:15 splits "
        f"of the {acc['n_images']} BUSI images ({acc['n_groups']} groups, about "
        f"{acc['seeds'][0]['n_test']} test images each, so one image is "
        f"{100 / acc['seeds'][0]['n_test']:.1f} points), a head fitted on train+val features; "
        "the int8 transformer fitted (calibrated) on each split's train+val images. "
        "Control: the fp32 features moved, image by image, in a random direction by as much "
        "as int8 moved them; its column says how far a score moves for any change of the "
        "features of that size.",
        "",
        "| seed | head | fp32 | int8 | change, points | control change, points |",
        "|---|---|---|---|---|---|",
    ]
    for head in HEADS:
        for row in acc["seeds"]:
            r = row[head]
            lines.append(
                f"| {row['seed']} | {head} | {100 * r['fp32']:.1f} | {100 * r['int8']:.1f} | "
                f"{100 * (r['int8'] - r['fp32']):+.1f} | {100 * (r['noise'] - r['fp32']):+.1f} |"
            )
        fp, q, z = (np.array([100 * row[head][k] for row in acc["seeds"]]) for k in
                    ("fp32", "int8", "noise"))  # fmt: skip
        lines.append(
            f"| mean ± std | {head} | {fp.mean():.1f} ± {fp.std():.1f} | "
            f"{q.mean():.1f} ± {q.std():.1f} | {q.mean() - fp.mean():+.1f} "
            f"(largest {np.abs(q - fp).max():.1f}) | {z.mean() - fp.mean():+.1f} "
            f"(largest {np.abs(z - fp).max():.1f}) |"
        )
    lines += [
        "",
        "| seed | int8 fit s | cosine to fp32, calibration / test | median relative change |",
        "|---|---|---|---|",
    ]
    for row in acc["seeds"]:
        lines.append(
            f"| {row['seed']} | {row['fit_s']:.0f} | {row['calibration_cosine']:.4f} / "
            f"{row['test_cosine']:.4f} | {100 * row['relative_error']:.1f} % |"
        )
    lines += ["", "Targets (from the issue):", ""]
    for name, t in results["targets"].items():
        lines.append(f"- {name}: {t['value']:.3f}, {'met' if t['met'] else 'NOT met'}")
    lines += ["", READING, ""]
    (OUT / "int8.md").write_text("\n".join(lines))


READING = (
    "Reading (2026-12-07 run): int8 meets the speed and feature targets and not the per-seed "
    "accuracy one. Over the 5 splits its mean test accuracy is that of fp32 (+0.2 points "
    "with `LogisticRegression`, +1.2 with the scaled `LogisticRegressionCV`), but single "
    "splits move by up to 4.3 points (5 of 117 test images), both ways. The control moves "
    "single splits by up to 2.6 and 5.1 points: on about 117 test images any change of the "
    "features of this size (a median 12 % of their norm) moves a split's score by several "
    "images, so the 1-point rule asks for features closer than this recipe gets (keeping "
    "the last convolutions in fp32 too left the cosine at 0.993 in a by-hand run). "
    'Decision: `precision="int8"` is offered as an option for speed, not the default; '
    "its docstring says what it moves.\n\n"
    "How the recipe was found (by-hand NNCF runs on Lite0, 300 BUSI calibration images, "
    "256 others scored; `skconv/engine/quantize.py` keeps it): the 8-bit weights of "
    "NNCF's default saturate the 16-bit pair sums of OpenVINO's u8 x s8 CPU kernels "
    "(mean cosine 0.82 to 0.85); 7-bit weights on every layer (overflow fix on all) 0.980; "
    "the stem convolution in fp32 0.982; full bias correction 0.993. "
    "`quantize_with_accuracy_control` did not find it. The earlier attempt, ONNX Runtime's "
    "`quantize_static` (commit 1c978ca), moved the features by 60 % and was left out."
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("busi", nargs="?", default=ROOT.parent / "shared" / "datasets" / "busi")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="128 images, 2 repeats, 1 seed")
    parser.add_argument("--markdown-only", action="store_true", help="from int8.json")
    args = parser.parse_args()
    if args.markdown_only:
        write_markdown(decide(json.loads((OUT / "int8.json").read_text())))
        return
    os.environ["SKCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="skconv-int8-cache-")
    data = load_image_folder(args.busi)
    paths, labels = np.asarray(data.paths), np.asarray(data.target)
    n_speed, repeats = (128, 2) if args.quick else (512, 3)
    seeds = 1 if args.quick else args.seeds
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        sys.platform,
    )
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "n_speed": n_speed,
        "repeats": repeats,
        "speed": speed(paths[:n_speed], repeats),
        "accuracy": accuracy(paths, labels, seeds),
    }
    decide(results)
    if not args.quick:
        (OUT / "int8.json").write_text(json.dumps(results, indent=2))
        write_markdown(results)
    print(json.dumps(results["targets"], indent=2))


if __name__ == "__main__":
    main()
