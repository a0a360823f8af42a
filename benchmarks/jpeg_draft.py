"""Large JPEGs: decoding at a reduced scale (jpeg_draft=True, the default) against full size.

Run from the project root (about 3 minutes on a 2-core CPU machine):
    .venv/bin/python benchmarks/jpeg_draft.py [BUSI_DIR] [--quick]
Writes benchmarks/results/jpeg_draft.md and .json.

There is no data set of large photos on this machine, so BUSI's images (about 256 px) are
enlarged (bicubic) and saved as RGB JPEGs (quality 90) in a temporary folder:
- speed: 32 images at 3000 px on the shorter side (about 10 megapixels, a phone photo),
  ConvFeatureTransformer().transform with jpeg_draft True and False, alternating, best of 3;
  also decoding alone (load_batch, the torch threads);
- fidelity: every BUSI image at 1024 px (decoded at 1/2 for Lite0's 256 px resize), the
  relative difference of Lite0's features, beside two references for scale (the same
  JPEGs re-saved at quality 95; the resize with the other common filter, bilinear instead
  of Lite0's bicubic), and a LogisticRegression head on a stratified
  70:15:15 split (seed 0): test accuracy and agreement of predictions with either decoding.
Enlarged images lack the fine detail of real photos at those sizes, which is where the
reduced decode differs most; read the fidelity figures as a lower bound on the difference.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder
from skconv.images import load_batch
from skconv.model_selection import train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUSI = Path(ARGS[0]) if ARGS else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
BACKBONE = "efficientnet_lite0"
REPEATS = 2 if QUICK else 3


def enlarge(paths, shorter_side: int, folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    out = []
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        scale = shorter_side / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        out.append(str(folder / f"{i:04d}.jpg"))
        image.resize(size, Image.Resampling.BICUBIC).save(out[-1], quality=90)
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(paths) -> dict:
    runs = {}
    for draft in (False, True):
        transformer = ConvFeatureTransformer(backbone=BACKBONE, jpeg_draft=draft).fit(paths[:1])
        prep = transformer.preprocessing_
        runs[f"transform_draft_{draft}"] = lambda t=transformer: t.transform(paths)
        runs[f"decode_draft_{draft}"] = lambda p=prep, d=draft: load_batch(
            paths, range(len(paths)), p, n_threads=torch.get_num_threads(), jpeg_draft=d
        )
    seconds: dict = {}
    for _ in range(REPEATS):
        for name, run in runs.items():
            seconds.setdefault(name, []).append(timed(run))
    return {name: len(paths) / min(s) for name, s in seconds.items()}


def relative_difference(features, reference) -> dict:
    relative = np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)
    return {"median": float(np.median(relative)), "max": float(relative.max())}


def fidelity(paths, target) -> dict:
    transformers = {
        draft: ConvFeatureTransformer(backbone=BACKBONE, jpeg_draft=draft).fit(paths[:1])
        for draft in (False, True)
    }
    features = {draft: t.transform(paths) for draft, t in transformers.items()}
    full = transformers[False]
    resaved = []
    for path in paths:
        resaved.append(path[: -len(".jpg")] + "_q95.jpg")
        Image.open(path).save(resaved[-1], quality=95)
    prep = full.preprocessing_
    other_filter = {"bicubic": "bilinear"}.get(prep.interpolation, "bicubic")
    full.preprocessing_ = prep.replace(interpolation=other_filter)  # reference only
    refiltered = full.transform(paths)
    full.preprocessing_ = prep
    result = {
        "relative_feature_difference": relative_difference(features[True], features[False]),
        "reference_quality_95": relative_difference(full.transform(resaved), features[False]),
        f"reference_{other_filter}_resize": relative_difference(refiltered, features[False]),
        "resize_filter": prep.interpolation,
        "other_filter": other_filter,
    }
    index = np.arange(len(paths))
    train, _, test, y_train, _, y_test = train_val_test_split(
        index, target, stratify=target, random_state=0
    )
    predictions = {}
    for fit_on in (False, True):
        head = LogisticRegression(max_iter=2000).fit(features[fit_on][train], y_train)
        for test_on in (False, True):
            predicted = head.predict(features[test_on][test])
            predictions[(fit_on, test_on)] = predicted
            result[f"accuracy_fit_draft_{fit_on}_test_draft_{test_on}"] = float(
                np.mean(predicted == y_test)
            )
    result["agreement_full_head_full_vs_draft_test"] = float(
        np.mean(predictions[(False, False)] == predictions[(False, True)])
    )
    result["n_test"] = len(test)
    return result


def main():
    data = load_image_folder(BUSI)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="skconv-jpeg-"))
    try:
        photos = enlarge(data.paths[rng.permutation(len(data.paths))[:32]], 3000, tmp / "3000")
        results = {
            "backbone": BACKBONE,
            "torch_threads": torch.get_num_threads(),
            "repeats": REPEATS,
            "speed_3000px_images_per_s": speed(photos),
        }
        print(json.dumps(results), flush=True)
        keep = np.arange(len(data.paths))
        if QUICK:
            keep = np.sort(rng.permutation(len(keep))[:120])
        large = enlarge(data.paths[keep], 1024, tmp / "1024")
        results["fidelity_1024px"] = fidelity(large, data.target[keep])
        results["fidelity_1024px"]["n_images"] = len(large)
        print(json.dumps(results["fidelity_1024px"]), flush=True)
    finally:
        shutil.rmtree(tmp)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "jpeg_draft.json").write_text(json.dumps(results, indent=1))
    write_markdown(results)


def write_markdown(results):
    s = results["speed_3000px_images_per_s"]
    f = results["fidelity_1024px"]
    acc = "accuracy_fit_draft_{}_test_draft_{}"
    lines = [
        "# Large JPEGs: reduced-scale decoding (`jpeg_draft`)",
        "",
        f"Made by `python benchmarks/jpeg_draft.py` on a CPU machine with "
        f"{results['torch_threads']} torch threads, no GPU; backbone {results['backbone']}. "
        "BUSI images enlarged (bicubic) and saved as RGB JPEGs, quality 90: no large photos "
        "are available here, and enlarged images lack the fine detail of real photos, so the "
        "differences below are a lower bound.",
        "",
        f"Speed, 32 images of 3000 px on the shorter side (about 10 megapixels), images/s, "
        f"best of {results['repeats']}:",
        "",
        "| | full-size decoding (`jpeg_draft=False`) | reduced scale (`jpeg_draft=True`) "
        "| speed-up |",
        "|---|---|---|---|",
        f"| `transform` end to end | {s['transform_draft_False']:.1f} "
        f"| {s['transform_draft_True']:.1f} "
        f"| {s['transform_draft_True'] / s['transform_draft_False']:.1f}x |",
        f"| decoding alone (`load_batch`) | {s['decode_draft_False']:.1f} "
        f"| {s['decode_draft_True']:.1f} "
        f"| {s['decode_draft_True'] / s['decode_draft_False']:.1f}x |",
        "",
        f"Fidelity, {f['n_images']} BUSI images at 1024 px (decoded at 1/2), relative "
        "difference of the feature vectors from those of full-size decoding "
        "(||a - b|| / ||b||, median and max over images):",
        "",
        "| change | median | max |",
        "|---|---|---|",
        *(
            f"| {label} | {f[key]['median']:.1%} | {f[key]['max']:.1%} |"
            for label, key in [
                ("reduced-scale decoding (`jpeg_draft=True`)", "relative_feature_difference"),
                ("reference: the same JPEGs re-saved at quality 95", "reference_quality_95"),
                (
                    f"reference: {f['other_filter']} instead of {f['resize_filter']} resize",
                    f"reference_{f['other_filter']}_resize",
                ),
            ]
        ),
        "",
        "LogisticRegression head, stratified 70:15:15 split (seed 0, "
        f"{f['n_test']} test images), test accuracy:",
        "",
        "| head fitted on | tested on full-size decoding | tested on reduced scale |",
        "|---|---|---|",
        f"| full-size decoding | {f[acc.format(False, False)]:.1%} "
        f"| {f[acc.format(False, True)]:.1%} |",
        f"| reduced scale | {f[acc.format(True, False)]:.1%} | {f[acc.format(True, True)]:.1%} |",
        "",
        "The head fitted on full-size features predicts the same class for "
        f"{f['agreement_full_head_full_vs_draft_test']:.1%} of the test images with either "
        "decoding.",
    ]
    (OUT / "jpeg_draft.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
