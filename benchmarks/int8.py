"""Is int8 worth an option? ONNX Runtime static quantization of the feature network, measured.

Run from the project root:
    .venv/bin/python benchmarks/int8.py [BUSI_DIR] [--seeds 5] [--markdown-only]
Writes benchmarks/results/int8.md and .json.

The ONNX Runtime engine's graph of EfficientNet-Lite0 (uint8 pixels in, pooled features out)
is quantized with onnxruntime.quantization.quantize_static, calibrated on the training
images of each split (what `fit` would see), in two variants:

* "all": every operator ONNX Runtime quantizes, QDQ format, per-channel weights;
* "conv, first/last/depthwise kept": only the convolutions, leaving in float the first and
  the last convolution and the depthwise ones (the layers known to suffer most).

For each: the forward pass and the end-to-end transform speed against the fp32 graph (same
images, alternating repetitions), the relative change of the features, and the test accuracy
of the default pipeline (features + LogisticRegression(max_iter=2000)) on the duplicate-aware
70:15:15 BUSI splits (train+val fit, test scored), against fp32 features. The issue's rule:
keep int8 only if it is at least 1.3x the fp32 engine end to end and moves accuracy by at most
1 point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.linear_model import LogisticRegression

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder
from skconv.images import crop_batch
from skconv.model_selection import find_near_duplicates, train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
BATCH = 32
N_CALIBRATION = 128
REPEATS = 5


class _Reader(CalibrationDataReader):
    def __init__(self, pixels):
        self.batches = iter([{"image": pixels[i : i + 16]} for i in range(0, len(pixels), 16)])

    def get_next(self):
        return next(self.batches, None)


def _quantized(fp32_path: Path, calibration: np.ndarray, variant: str, folder: Path) -> bytes:
    pre = folder / "pre.onnx"
    quant_pre_process(str(fp32_path), str(pre))
    model = onnx.load(pre)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    options = dict(
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    if variant != "all":
        options["op_types_to_quantize"] = ["Conv"]
        options["nodes_to_exclude"] = depthwise + [convs[0].name, convs[-1].name]
    out = folder / f"{variant.split(',')[0]}.onnx"
    quantize_static(str(pre), str(out), _Reader(calibration), **options)
    return out.read_bytes()


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _features(session, paths, prep) -> np.ndarray:
    rows = []
    for start in range(0, len(paths), BATCH):
        pixels = crop_batch(paths, range(start, min(start + BATCH, len(paths))), prep, n_threads=2)
        rows.append(session.run(["features"], {"image": pixels})[0])
    return np.concatenate(rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("busi", nargs="?", default=ROOT.parent / "shared" / "datasets" / "busi")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite int8.md from int8.json"
    )
    args = parser.parse_args()
    if args.markdown_only:
        results = json.loads((OUT / "int8.json").read_text())
        decide(results)
        write_markdown(results)
        return
    data = load_image_folder(args.busi)
    paths, labels = data.paths, data.target
    groups = find_near_duplicates(paths)
    transformer = ConvFeatureTransformer().fit(paths[:1])
    engine = transformer._engine.get()
    prep = transformer.preprocessing_
    variants = ["all", "conv, first/last/depthwise kept"]
    results = {"variants": {}, "n_images": len(paths), "seeds": args.seeds}

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32_path = folder / "fp32.onnx"
        fp32_path.write_bytes(engine.model_bytes)
        sessions = {"fp32": _session(engine.model_bytes)}
        features = {"fp32": _features(sessions["fp32"], paths, prep)}
        accuracy: dict = {name: [] for name in ["fp32", *variants]}
        for seed in range(args.seeds):
            train, val, test = train_val_test_split(
                np.arange(len(paths)), stratify=labels, groups=groups, random_state=seed
            )
            fit_part = np.concatenate([train, val])
            rng = np.random.default_rng(seed)
            calibration = crop_batch(
                paths, rng.choice(train, N_CALIBRATION, replace=False), prep, n_threads=2
            )
            for variant in variants:
                start = time.perf_counter()
                model = _quantized(fp32_path, calibration, variant, folder)
                quantize_seconds = time.perf_counter() - start
                session = _session(model)
                feats = _features(session, paths, prep)
                if seed == 0:
                    sessions[variant], features[variant] = session, feats
                    results["variants"][variant] = {"quantize_seconds": quantize_seconds}
                head = LogisticRegression(max_iter=2000).fit(feats[fit_part], labels[fit_part])
                accuracy[variant].append(head.score(feats[test], labels[test]))
            head = LogisticRegression(max_iter=2000).fit(
                features["fp32"][fit_part], labels[fit_part]
            )
            accuracy["fp32"].append(head.score(features["fp32"][test], labels[test]))
            print("seed", seed, {k: round(v[-1], 4) for k, v in accuracy.items()}, flush=True)

        # Speed on the same 256 images, alternating: forward on decoded crops, and end to end.
        sample = paths[np.random.default_rng(0).permutation(len(paths))[:256]]
        pixels = crop_batch(sample, range(len(sample)), prep, n_threads=2)
        forward: dict = {}
        end_to_end: dict = {}
        for _ in range(REPEATS):
            for name, session in sessions.items():
                start = time.perf_counter()
                for i in range(0, len(pixels), BATCH):
                    session.run(["features"], {"image": pixels[i : i + BATCH]})
                forward.setdefault(name, []).append(len(pixels) / (time.perf_counter() - start))
                start = time.perf_counter()
                _features(session, sample, prep)
                end_to_end.setdefault(name, []).append(len(sample) / (time.perf_counter() - start))

    base = features["fp32"]
    for name in ["fp32", *variants]:
        entry = results["variants"].setdefault(name, {})
        change = np.linalg.norm(features[name] - base, axis=1) / np.linalg.norm(base, axis=1)
        entry.update(
            forward_images_per_s_best=max(forward[name]),
            forward_images_per_s_median=statistics.median(forward[name]),
            end_to_end_images_per_s_best=max(end_to_end[name]),
            end_to_end_images_per_s_median=statistics.median(end_to_end[name]),
            feature_change_median=float(np.median(change)),
            feature_change_max=float(change.max()),
            accuracy=accuracy[name],
        )
    decide(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "int8.json").write_text(json.dumps(results, indent=1))
    write_markdown(results)


def decide(results) -> None:
    """The issue's rule, read split by split: a user fits on one split, not on the mean.

    int8 is kept only if it is at least 1.3x fp32 end to end and the test accuracy moves
    by at most 1 point on every split (the mean's change is reported too).
    """
    fp32 = results["variants"]["fp32"]
    for name, entry in results["variants"].items():
        if name == "fp32":
            continue
        entry["speedup_end_to_end"] = (
            entry["end_to_end_images_per_s_best"] / fp32["end_to_end_images_per_s_best"]
        )
        change = 100 * (np.asarray(entry["accuracy"]) - np.asarray(fp32["accuracy"]))
        entry["accuracy_change_points"] = float(change.mean())
        entry["accuracy_change_points_per_seed"] = change.round(2).tolist()
        entry["kept"] = bool(
            entry["speedup_end_to_end"] >= 1.3 and np.abs(change).max() <= 1 + 1e-9
        )


def write_markdown(results):
    lines = [
        "# int8: ONNX Runtime static quantization of the feature network",
        "",
        "Made by `python benchmarks/int8.py` on a 2-core CPU machine (no GPU): "
        "EfficientNet-Lite0's ONNX Runtime graph (uint8 pixels in, pooled features out), "
        f"quantized with `quantize_static` (QDQ, per-channel int8 weights, uint8 activations) "
        f"and calibrated on {N_CALIBRATION} training images of each split. Accuracy: the "
        "default pipeline (features + `LogisticRegression(max_iter=2000)`) fitted on train+val "
        f"of the duplicate-aware 70:15:15 BUSI splits, seeds 0..{results['seeds'] - 1}, scored "
        "on test. Speed: 256 BUSI PNGs, batch 32, best of "
        f"{REPEATS} alternating repetitions (median in brackets).",
        "",
        "| graph | forward images/s | end to end images/s | end to end vs fp32 | feature change "
        "median / max | test accuracy % (mean ± std) | change, points: mean (per seed) | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        acc = 100 * np.asarray(v["accuracy"])
        speed = f"{v['speedup_end_to_end']:.2f}x" if "speedup_end_to_end" in v else "1.00x"
        change = "-"
        if "accuracy_change_points" in v:
            per_seed = ", ".join(f"{c:+.1f}" for c in v["accuracy_change_points_per_seed"])
            change = f"{v['accuracy_change_points']:+.1f} ({per_seed})"
        kept = ("yes" if v["kept"] else "no") if "kept" in v else "-"
        lines.append(
            f"| {name} | {v['forward_images_per_s_best']:.1f} "
            f"({v['forward_images_per_s_median']:.1f}) "
            f"| {v['end_to_end_images_per_s_best']:.1f} "
            f"({v['end_to_end_images_per_s_median']:.1f}) | {speed} "
            f"| {v['feature_change_median']:.1%} / {v['feature_change_max']:.1%} "
            f"| {acc.mean():.1f} ± {acc.std():.1f} | {change} | {kept} |"
        )
    lines += [
        "",
        'Rule (from the issue): keep `precision="int8"` only if it is at least 1.3x the fp32 '
        "engine end to end and moves the test accuracy by at most 1 point. Read split by "
        "split, since a user fits on one split: the quantized graph that is fast enough "
        '("all") keeps the mean but moves single splits by up to '
        f"{max(abs(c) for c in results['variants']['all']['accuracy_change_points_per_seed']):.1f}"
        " points, because it changes the features themselves by about half their size "
        "(feature change: the median over images of |int8 - fp32| / |fp32|); the variant that "
        'keeps the features closer is no faster. `precision="int8"` is therefore not offered.',
    ]
    (OUT / "int8.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
