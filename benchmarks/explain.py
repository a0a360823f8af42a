"""Do the heat maps point at the lesion? The pointing game on BUSI's test lesion images.

For each benign and malignant image of the test part (stratified 70:15:15 split,
random_state=0), the heat map of skconv.explain.heatmaps is a hit when its maximum
falls inside the lesion mask (strict), or within TOLERANCE_PX pixels of it (the
tolerance of the original pointing game, Zhang et al. 2016). Maps are explained for
the true class and for the predicted class. Also reported: the mean heat inside and
outside the mask, and the share of the heat that lies inside it.

Two pillars:

* features: Pipeline([ConvFeatureTransformer(), LogisticRegression(max_iter=2000)])
  fitted here on train+val (exact CAM);
* finetune: a fitted FineTuneClassifier loaded with joblib (Grad-CAM), measured when
  --finetuned PATH (default /tmp/busi_finetune_seed0.joblib) exists. benchmarks/busi.py
  saves one as benchmarks/.cache/finetune_image_0.joblib (FineTuneClassifier(
  random_state=0) fitted on the train part, the validation part for early stopping).

Run from the project root:

    .venv/bin/python benchmarks/explain.py [--finetuned PATH] [--only features|finetune|report]

--only features measures the feature pipeline alone (about 10 minutes on 2 CPUs): the
finetune pillar only loads a saved model, it never fits one, and keeps its earlier rows.

Writes benchmarks/results/explain.md and explain.json, and explain_<pillar>.png (a grid
of overlays). A pillar that is not run keeps its earlier results from explain.json; --only report
rewrites explain.md from explain.json alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import distance_transform_edt

from skconv import ConvFeatureTransformer, __version__
from skconv._io import atomic_write, write_json, write_text
from skconv.datasets import load_image_folder
from skconv.explain import heatmaps, overlay
from skconv.model_selection import train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "benchmarks" / "results"
SEED = 0
TOLERANCE_PX = 15  # original-image pixels; images are 256 px on the shorter side
LESION_CLASSES = ("benign", "malignant")
GRID_IMAGES = 18  # overlays in each figure
# heatmaps() as it comes, the defaults before issue 19 (no smoothing, no trim), and
# those with 8 more crops shifted by half a feature-grid cell (16 px of the 224-px
# crop, whose cells are 32 px), and the parts of the new defaults one at a time.
# The new defaults were chosen on the validation part (benchmarks/explain_settings.py).
BEFORE = {"shift": 0, "smooth": 0, "trim": 0}
VARIANTS = {
    "default": ({}, "defaults"),
    "before": (BEFORE, "shift=0, smooth=0, trim=0 (defaults before issue 19)"),
    "shift16": ({**BEFORE, "shift": 16}, "shift=16, smooth=0, trim=0"),
    "smooth_only": ({"trim": 0}, "defaults but trim=0"),
    "trim_only": ({"smooth": 0}, "defaults but smooth=0"),
    "shift16_default": ({"shift": 16}, "defaults and shift=16"),
}
# Results measured before issue 19 named the defaults of then "default".
LEGACY = {"default": "before", "shift16": "shift16"}
PILLARS = {
    "features": "EfficientNet-Lite0 features + LogisticRegression (CAM)",
    "finetune": "FineTuneClassifier (Grad-CAM)",
}


# --------------------------------------------------------------------------- data


def mask_of(path: str, masks: Path) -> np.ndarray:
    p = Path(path)
    with Image.open(masks / p.parent.name / f"{p.stem}_mask.png") as m:
        return np.asarray(m.convert("L")) > 127


def crop_box(shape: tuple, preprocessing) -> tuple:
    """(top, bottom, left, right) of the network's center crop in original pixels."""
    height, width = shape
    resized_w, resized_h = preprocessing.resized_size(width, height)
    left, top, right, bottom = preprocessing.crop_box(width, height)
    sx, sy = width / resized_w, height / resized_h
    return top * sy, bottom * sy, left * sx, right * sx


# --------------------------------------------------------------------------- metrics


def pointing(maps: list, masks: list) -> dict:
    """Pointing game and heat statistics of maps against lesion masks."""
    strict, tolerant, empty, inside_means, outside_means, shares = [], [], 0, [], [], []
    peaks, distances = [], []
    for heat, mask in zip(maps, masks):
        distance = distance_transform_edt(~mask)  # px to the nearest lesion pixel
        if heat.max() <= 0:  # no positive evidence anywhere: it points nowhere, a miss
            empty += 1
            strict.append(False)
            tolerant.append(False)
            peaks.append(None)
            distances.append(float("inf"))
        else:
            y, x = np.unravel_index(np.argmax(heat), heat.shape)
            strict.append(bool(mask[y, x]))
            tolerant.append(bool(distance[y, x] <= TOLERANCE_PX))
            peaks.append((int(y), int(x)))
            distances.append(float(distance[y, x]))
        inside_means.append(float(heat[mask].mean()))
        outside_means.append(float(heat[~mask].mean()))
        total = float(heat.sum())
        shares.append(float(heat[mask].sum()) / total if total > 0 else 0.0)
    return {
        "n": len(maps),
        "pointing_strict": float(np.mean(strict)),
        f"pointing_{TOLERANCE_PX}px": float(np.mean(tolerant)),
        "hits_strict": int(np.sum(strict)),
        f"hits_{TOLERANCE_PX}px": int(np.sum(tolerant)),
        "empty_maps": empty,
        "pointing_30px": float(np.mean(np.asarray(distances) <= 30)),
        "median_miss_distance_px": float(np.median([d for d in distances if d > TOLERANCE_PX]))
        if not all(tolerant)
        else 0.0,
        "mean_heat_inside": float(np.mean(inside_means)),
        "mean_heat_outside": float(np.mean(outside_means)),
        "heat_share_inside": float(np.mean(shares)),
        "peaks": peaks,
        "hit": tolerant,
        "hit_strict": strict,
    }


def baselines(masks: list, crops: list) -> dict:
    """What a map that knows nothing scores on the same masks."""
    centre_strict, centre_tol, reachable, reachable_tol = [], [], [], []
    for mask, (top, bottom, left, right) in zip(masks, crops):
        h, w = mask.shape
        distance = distance_transform_edt(~mask)
        cy, cx = (h - 1) // 2, (w - 1) // 2
        centre_strict.append(bool(mask[cy, cx]))
        centre_tol.append(bool(distance[cy, cx] <= TOLERANCE_PX))
        inside = np.zeros_like(mask)
        inside[int(np.ceil(top)) : int(bottom), int(np.ceil(left)) : int(right)] = True
        reachable.append(bool((mask & inside).any()))
        reachable_tol.append(bool(((distance <= TOLERANCE_PX) & inside).any()))
    return {
        "random_pixel": float(np.mean([m.mean() for m in masks])),
        "image_centre_strict": float(np.mean(centre_strict)),
        f"image_centre_{TOLERANCE_PX}px": float(np.mean(centre_tol)),
        "lesion_reaches_crop": float(np.mean(reachable)),
        f"lesion_reaches_crop_{TOLERANCE_PX}px": float(np.mean(reachable_tol)),
        "mean_lesion_area_share": float(np.mean([m.mean() for m in masks])),
    }


def evaluate(model, name: str, X: np.ndarray, y: np.ndarray, masks: list, preprocessing) -> dict:
    start = time.perf_counter()
    predicted = model.predict(X)
    result = {
        "pillar": name,
        "accuracy_on_lesion_images": float(np.mean(predicted == y)),
        "predicted": predicted.tolist(),
        "image_size": preprocessing.image_size,
        "resize_size": preprocessing.resize_size,
        "grid": _grid(model, preprocessing),
        "_crops": [crop_box(m.shape, preprocessing) for m in masks],
        "_maps": {},
    }
    result["variants"] = {}
    for variant, (options, label) in VARIANTS.items():
        result["variants"][variant] = label
        result[variant] = {}
        targets = [("true_class", y)]
        if variant in ("default", "before"):
            targets.append(("predicted_class", None))
        for target_name, target in targets:
            t0 = time.perf_counter()
            maps = heatmaps(model, X, target=target, **options)
            seconds = time.perf_counter() - t0
            scores = pointing(maps, masks)
            scores["heatmap_seconds"] = round(seconds, 1)
            scores["per_class"] = {}
            for cls in LESION_CLASSES:
                keep = y == cls
                sub = pointing(
                    [m for m, k in zip(maps, keep) if k], [m for m, k in zip(masks, keep) if k]
                )
                scores["per_class"][cls] = {
                    k: v for k, v in sub.items() if k not in ("peaks", "hit", "hit_strict")
                }
            correct = predicted == y
            hits = np.asarray(scores["hit"])
            scores[f"pointing_{TOLERANCE_PX}px_correct"] = float(hits[correct].mean())
            scores[f"pointing_{TOLERANCE_PX}px_wrong"] = (
                float(hits[~correct].mean()) if (~correct).any() else None
            )
            result[variant][target_name] = scores
            if target_name == "true_class":
                result["_maps"][variant] = maps
            print(f"  {name} {variant} {target_name}: {seconds:.0f} s", flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


# --------------------------------------------------------------------------- figure


def grid_figure(path: Path, X, y, masks, result: dict, variant: str, title: str) -> None:
    from matplotlib.figure import Figure

    n = len(X)
    picks = np.unique(np.linspace(0, n - 1, min(GRID_IMAGES, n)).round().astype(int))
    cols = 6
    rows = int(np.ceil(len(picks) / cols))
    fig = Figure(figsize=(cols * 2.6, rows * 2.7))
    axes = fig.subplots(rows, cols, squeeze=False)
    maps, crops = result["_maps"][variant], result["_crops"]
    target = result[variant]["true_class"]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks):
        ax.imshow(overlay(X[i], maps[i], alpha=0.45))
        ax.contour(masks[i], levels=[0.5], colors="white", linewidths=1.0)
        top, bottom, left, right = crops[i]
        ax.add_patch(_rectangle(left, top, right - left, bottom - top))
        peak = target["peaks"][i]
        if peak is not None:
            ax.plot(peak[1], peak[0], marker="x", color="white", markersize=9, mew=2.5)
            ax.plot(peak[1], peak[0], marker="x", color="black", markersize=7, mew=1.2)
        verdict = (
            "hit"
            if target["hit_strict"][i]
            else f"hit (<= {TOLERANCE_PX} px)"
            if target["hit"][i]
            else "miss"
        )
        ax.set_title(
            f"{Path(X[i]).stem} ({y[i][0].upper()}), pred {result['predicted'][i]}\n{verdict}",
            fontsize=7.5,
        )
    fig.suptitle(
        f"{title}, heatmaps() {result['variants'][variant]}: map of the true "
        "class; white line: lesion mask; x: maximum; dashed: the network's crop",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_write(path, "wb", overwrite=True) as handle:
        fig.savefig(handle, format="png", dpi=90)


def _rectangle(x, y, w, h):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor="white", linestyle="--", linewidth=0.8)


# --------------------------------------------------------------------------- report


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def write_report(results: dict, out: Path) -> None:
    pillars = results["pillars"]
    base = results["baselines"]
    tol = TOLERANCE_PX
    lines = [
        "# Heat maps on BUSI: do they point at the lesion?",
        "",
        "Made by, from the project root (each pillar's latest run):",
        "",
        *(
            f"- {key}: `{pillars[key]['command']}` ({pillars[key]['created']}, skconv "
            f"{pillars[key]['skconv']}, {pillars[key]['machine']})"
            for key in PILLARS
            if key in pillars
        ),
        "",
        f"- Data: BUSI ({results['data']}), lesion masks from `busi_masks/`.",
        f"- Split: `train_val_test_split(paths, target, stratify=target, random_state={SEED})`"
        f" ({results['split']}); evaluated on the {base['n']} benign and malignant images "
        "of the test part (normal images have no lesion).",
        f"- Pointing game: a hit when the heat map's maximum (on the original image, "
        f"{results['image_px']}) lies inside the mask (strict) or within {tol} px of it "
        f"(the original game's tolerance; about {100 * tol / 256:.0f} % of the 256-px "
        "shorter side). An all-zero map (no positive evidence) is a miss.",
        "- Heat: maps normalised to [0, 1] per image; mean heat inside and outside the "
        "mask, averaged over images; heat share = heat inside / all heat.",
        "- Maps are computed on the network's center crop and mapped back; outside the crop "
        'they are 0 (`outside="zero"`).',
        "",
        "## Pointing game, test lesion images",
        "",
        "The defaults (`smooth` and `trim`) were chosen on the validation part's lesion "
        "images (below); the test part was measured with them once, after the choice.",
        "",
        f"| model | heatmaps() | map of | pointing (strict) | pointing ({tol} px) | heat "
        "inside | heat outside | heat share inside |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in PILLARS.items():
        if key not in pillars:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        p = pillars[key]
        for variant, call in p["variants"].items():
            for target, what in (
                ("true_class", "true class"),
                ("predicted_class", "predicted class"),
            ):
                if target not in p[variant]:
                    continue
                r = p[variant][target]
                lines.append(
                    f"| {label} | {call} | {what} | {_pct(r['pointing_strict'])} | "
                    f"{_pct(r[f'pointing_{tol}px'])} | {r['mean_heat_inside']:.3f} | "
                    f"{r['mean_heat_outside']:.3f} | {_pct(r['heat_share_inside'])} |"
                )
    lines += [
        f"| baseline: random pixel | | | {_pct(base['random_pixel'])} | | "
        f"| | {_pct(base['mean_lesion_area_share'])} |",
        f"| baseline: image centre | | | {_pct(base['image_centre_strict'])} | "
        f"{_pct(base[f'image_centre_{tol}px'])} | | | |",
        "",
        "Accuracy on these lesion images: "
        + "; ".join(
            f"{PILLARS[k].split(' (')[0]} {_pct(pillars[k]['accuracy_on_lesion_images'])}"
            for k in PILLARS
            if k in pillars
        )
        + ".",
        "",
        f"Upper bound set by the crop: {_pct(base['lesion_reaches_crop'])} of these lesions "
        f"have a pixel inside the network's crop ({_pct(base[f'lesion_reaches_crop_{tol}px'])} "
        f"within {tol} px); a map that is 0 outside the crop cannot point at the rest.",
        "(The issue's baselines over all BUSI masks: random pixel 9.4 %, image centre 26.3 %.)",
        "",
        "### By class (map of the true class)",
        "",
        f"| model | heatmaps() | class | n | pointing (strict) | pointing ({tol} px) | heat "
        "share inside |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in PILLARS:
        if key not in pillars:
            continue
        for variant in ("default", "before"):
            if variant not in pillars[key]:
                continue
            for cls, r in pillars[key][variant]["true_class"]["per_class"].items():
                lines.append(
                    f"| {key} | {variant} | {cls} | {r['n']} | "
                    f"{_pct(r['pointing_strict'])} | {_pct(r[f'pointing_{tol}px'])} "
                    f"| {_pct(r['heat_share_inside'])} |"
                )
    lines += ["", "## What limits it", ""]
    for key in PILLARS:
        if key not in pillars:
            continue
        p = pillars[key]
        if "default" not in p:  # measured before issue 19 only
            continue
        d, s16 = p["before"]["true_class"], p["default"]["true_class"]
        wrong = d[f"pointing_{tol}px_wrong"]
        cell = p["image_size"] / p["grid"][0]
        before, after = np.asarray(d["hit"]), np.asarray(s16["hit"])
        gained, lost = int((after & ~before).sum()), int((before & ~after).sum())
        low, high = wilson(s16[f"hits_{tol}px"], s16["n"])
        lines.append(
            f"- {key}: the last feature map is {p['grid'][0]} x {p['grid'][1]}, one cell per "
            f"{cell:.0f} px of the {p['image_size']}-px crop ({cell * 256 / p['resize_size']:.0f}"
            " px of a 256-px image), and a bilinear map peaks at a cell centre. Pointing "
            f"within 30 px instead of {tol}: {_pct(d['pointing_30px'])} (before issue 19), "
            f"{_pct(s16['pointing_30px'])} (defaults); median distance of a miss to the "
            f"lesion: {d['median_miss_distance_px']:.0f} px (before), "
            f"{s16['median_miss_distance_px']:.0f} px (defaults). Pointing ({tol} px, before) "
            f"on images the model classifies correctly: {_pct(d[f'pointing_{tol}px_correct'])}"
            f"; on misclassified ones: {'-' if wrong is None else _pct(wrong)}. The defaults "
            f"turn {gained} misses ({tol} px) into hits and {lost} hits into misses; 95 % "
            f"interval of their pointing share ({tol} px): {low:.0%}-{high:.0%} (Wilson, "
            f"n={s16['n']}); strict: {s16['hits_strict']} of {s16['n']} against "
            f"{d['hits_strict']} before."
        )
    for key in PILLARS:
        if key in pillars and "default" not in pillars[key]:
            lines.append(
                f"- {key}: not measured with the defaults of issue 19; its rows are from "
                f"{pillars[key]['created'][:10]}, with the defaults of then. Rerun with "
                "`--only finetune --finetuned PATH` once a fitted model is saved at PATH."
            )
    lines += _settings_section(out)
    lines += ["", "## Settings", ""]
    for key in PILLARS:
        if key in pillars:
            lines.append(f"- {key}: {pillars[key]['settings']}")
    lines += [
        "",
        "## Figures",
        "",
        f"The same {GRID_IMAGES} test lesion images, spread evenly over the sorted list; "
        "heat map of the true class, heatmaps() defaults. White line: the lesion mask; x: the "
        "map's maximum; dashed: the network's crop; B/M: benign/malignant.",
        "",
    ]
    for key in PILLARS:
        if key in pillars:
            lines.append(f"![{key}](explain_{key}.png)")
            lines.append("")
    write_text(out / "explain.md", "\n".join(lines).rstrip() + "\n", overwrite=True)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busi", default=os.fspath(DATA / "busi"))
    parser.add_argument("--masks", default=os.fspath(DATA / "busi_masks"))
    parser.add_argument(
        "--finetuned",
        default="/tmp/busi_finetune_seed0.joblib",
        help="a fitted FineTuneClassifier saved with joblib (skipped when "
        "the file does not exist)",
    )
    parser.add_argument("--only", choices=("features", "finetune", "report"))
    parser.add_argument(
        "--results", default=os.fspath(OUT), help="folder for explain.md, .json and the figures"
    )
    args = parser.parse_args(argv)
    out = Path(args.results)
    command = shlex.join(
        ["python", "benchmarks/explain.py", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.only == "report":
        results = json.loads((out / "explain.json").read_text())
        results["pillars"] = {k: _upgraded(p) for k, p in results["pillars"].items()}
        write_report(results, out)
        print(f"Wrote {os.fspath(out / 'explain.md')}", flush=True)
        return 0
    masks_root = Path(args.masks)
    data = load_image_folder(args.busi)
    X_tr, X_va, X_te, y_tr, y_va, y_te = train_val_test_split(
        data.paths, data.target, stratify=data.target, random_state=SEED
    )
    lesion = np.isin(y_te, LESION_CLASSES)
    X, y = X_te[lesion], y_te[lesion]
    masks = [mask_of(p, masks_root) for p in X]
    shapes = sorted({m.shape for m in masks})
    previous = {}
    if (out / "explain.json").is_file():
        previous = json.loads((out / "explain.json").read_text()).get("pillars", {})
    pillars = {key: _upgraded(p) for key, p in previous.items()}
    crops_for_baseline = None

    if args.only in (None, "features"):
        import sklearn
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        start = time.perf_counter()
        model = Pipeline(
            [("features", ConvFeatureTransformer()), ("head", LogisticRegression(max_iter=2000))]
        )
        model.fit(np.concatenate([X_tr, X_va]), np.concatenate([y_tr, y_va]))
        fit_s = time.perf_counter() - start
        prep = model.named_steps["features"].preprocessing_
        result = evaluate(model, "features", X, y, masks, prep)
        result["settings"] = (
            f"Pipeline([('features', ConvFeatureTransformer()), ('head', LogisticRegression("
            f"max_iter=2000))]) fitted on train+val ({len(X_tr) + len(X_va)} images, "
            f"{fit_s:.0f} s); efficientnet_lite0, {prep.image_size}-px crop of a "
            f"{prep.resize_size}-px resize; heatmaps(model, X, "
            f"target, **options) for the options of each row; scikit-learn {sklearn.__version__}"
        )
        result["fit_seconds"] = round(fit_s, 1)
        result.update(_provenance(command))
        grid_figure(
            out / "explain_features.png",
            X,
            y,
            masks,
            result,
            "default",
            "EfficientNet-Lite0 features + LogisticRegression (CAM)",
        )
        crops_for_baseline = result["_crops"]
        pillars["features"] = _public(result)
        _print(pillars["features"])

    finetuned = Path(args.finetuned)
    if args.only in (None, "finetune"):
        if finetuned.is_file():
            import joblib

            model = joblib.load(finetuned)
            prep = model.preprocessing_
            result = evaluate(model, "finetune", X, y, masks, prep)
            result["settings"] = (
                f"{type(model).__name__} loaded from {os.fspath(finetuned)} (backbone "
                f"{model.backbone}, {len(model.history)} epochs, {prep.image_size}-px crop "
                f"of a {prep.resize_size}-px resize); heatmaps(model, X, target, **options) "
                "for the options of each row"
            )
            grid_figure(
                out / "explain_finetune.png",
                X,
                y,
                masks,
                result,
                "default",
                "FineTuneClassifier (Grad-CAM)",
            )
            crops_for_baseline = crops_for_baseline or result["_crops"]
            result.update(_provenance(command))
            pillars["finetune"] = _public(result)
            _print(pillars["finetune"])
        else:
            print(
                f"No fine-tuned model at {os.fspath(finetuned)}; the finetune pillar is "
                "not measured. Once it exists, run: .venv/bin/python benchmarks/explain.py "
                f"--only finetune --finetuned {shlex.quote(os.fspath(finetuned))}",
                flush=True,
            )

    if crops_for_baseline is None:
        from skconv.zoo import load_backbone

        prep = load_backbone("efficientnet_lite0", weights=None).preprocessing
        crops_for_baseline = [crop_box(m.shape, prep) for m in masks]
    base = {"n": len(X), **baselines(masks, crops_for_baseline)}
    results = {
        "data": os.fspath(Path(args.busi).resolve()),
        "split": f"{len(X_tr)}/{len(X_va)}/{len(X_te)} train/val/test images",
        "image_px": f"{min(s[1] for s in shapes)}-{max(s[1] for s in shapes)} x "
        f"{min(s[0] for s in shapes)}-{max(s[0] for s in shapes)} px (w x h)",
        "tolerance_px": TOLERANCE_PX,
        "test_lesion_images": [Path(p).name for p in X],
        "baselines": base,
        "pillars": pillars,
    }
    write_json(out / "explain.json", results, overwrite=True)
    write_report(results, out)
    print(f"Wrote {os.fspath(out / 'explain.md')}", flush=True)
    return 0


def _provenance(command: str) -> dict:
    return {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "skconv": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, "
        f"{'GPU' if torch.cuda.is_available() else 'no GPU'}",
    }


def wilson(hits: int, n: int, z: float = 1.96) -> tuple:
    """95 % Wilson interval of a share."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _grid(model, preprocessing) -> list:
    """Height and width of the map on the feature grid, from a blank crop-sized image."""
    blank = np.zeros((1, preprocessing.image_size, preprocessing.image_size), dtype=np.uint8)
    return list(heatmaps(model, blank, normalize=False, resize=False)[0].shape)


def _settings_section(out: Path) -> list:
    """The tables of settings tried on the validation part, from explain_settings*.json."""
    lines = []
    for name, title in (
        ("explain_settings.json", "How the defaults were chosen: the validation part"),
        ("explain_settings_finetune.json", "The same settings for the fine-tuned model"),
    ):
        path = out / name
        if path.is_file():
            lines += _settings_table(json.loads(path.read_text()), title)
    return lines


def _settings_table(chosen: dict, title: str) -> list:
    tol = TOLERANCE_PX
    if chosen["model"].startswith("FineTuneClassifier"):
        rows = chosen["rows"]
        default = next(
            (r for r in rows if (r["crops"], r["smooth"], r["trim"]) == ("centre", 24, 16)), None
        )
        best = max(rows, key=lambda r: (r["strict"], -r["n_crops"]))
        reading = (
            f" The defaults' row (centre, smooth 24, trim 16): {_pct(default['strict'])} "
            f"strict; the best row: {_pct(best['strict'])} ({best['crops']}, smooth "
            f"{best['smooth']}, trim {best['trim']})."
            if default
            else ""
        )
        if chosen.get("tta"):
            reading += (
                " The model predicts with `tta=True`, so each crop's map already averages "
                "its mirror's, and the '+ mirror' rows repeat those without."
            )
        return [
            "",
            f"## {title}",
            "",
            f"`{chosen['command']}`: Grad-CAM of that {chosen['model']} (fitted on the train "
            f"part, the validation part for early stopping), the {chosen['n']} validation "
            "lesion images, crops of the final feature map only. Not used to choose the "
            "defaults (which came first, above); it shows how they carry over." + reading,
            "",
            f"| crops | n crops | smooth | trim | pointing (strict) | pointing ({tol} px) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['crops']} | {r['n_crops']} | {r['smooth']} | {r['trim']} | "
                f"{_pct(r['strict'])} | {_pct(r[f'{tol}px'])} |"
                for r in chosen["rows"]
            ),
        ]
    lines = [
        "",
        f"## {title}",
        "",
        f"`{chosen['command']}` fits the same pipeline on the train part only and scores "
        f"the maps of the true class on the {chosen['n']} benign and malignant images of the "
        "validation part; the test part above played no role in the choice. Crops: the "
        "center crop, crops shifted on a lattice (px of the resized image; a feature cell "
        "is 32 px), their mirrors, the crop upsampled 2x before the network (a 14 x 14 "
        "CAM), or Grad-CAM of the head's score on the stride-16 stage (`blocks.4`, 14 x 14)."
        " smooth: Gaussian sigma and trim: border band, both in px of the resized image. "
        f"{chosen['note']}",
        "",
        f"| crops | n crops | smooth | trim | pointing (strict) | pointing ({tol} px) |",
        "|---|---|---|---|---|---|",
    ]
    for row in chosen["rows"]:
        mark = "**" if (row["crops"], row["smooth"], row["trim"]) == ("centre", 24, 16) else ""
        lines.append(
            f"| {mark}{row['crops']}{mark} | {row['n_crops']} | {row['smooth']} | "
            f"{row['trim']} | {mark}{_pct(row['strict'])}{mark} | {_pct(row[f'{tol}px'])} |"
        )
    return lines


def _upgraded(pillar: dict) -> dict:
    """A pillar measured before issue 19: its "default" was shift=0 without smoothing."""
    if "variants" in pillar:
        return pillar
    old = {
        "default": "shift=0 (defaults before issue 19; measured then)",
        "shift16": "shift=16 (before issue 19; measured then)",
    }
    out = {k: v for k, v in pillar.items() if k not in LEGACY}
    for name, new in LEGACY.items():
        out[new] = pillar[name]
    out["variants"] = {LEGACY[k]: label for k, label in old.items()}
    return out


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def _print(result: dict) -> None:
    for variant, target in ((v, t) for v in VARIANTS for t in ("true_class", "predicted_class")):
        if target not in result[variant]:
            continue
        r = result[variant][target]
        print(
            f"{result['pillar']} {variant} ({target}): pointing strict "
            f"{_pct(r['pointing_strict'])}, "
            f"{TOLERANCE_PX} px {_pct(r[f'pointing_{TOLERANCE_PX}px'])}, heat inside "
            f"{r['mean_heat_inside']:.3f} / outside {r['mean_heat_outside']:.3f}, share "
            f"{_pct(r['heat_share_inside'])}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
