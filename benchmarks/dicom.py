"""DICOM as X: BUSI written as DICOM, against its PNGs, through ConvFeatureTransformer.

Run from the project root (about 3 minutes on a 2-core CPU machine):
    .venv/bin/python benchmarks/dicom.py [BUSI_DIR] [--quick]
Writes benchmarks/results/dicom.md and .json.

BUSI ships as PNG; no DICOM data set is on this machine. So the first 512 BUSI images
(sorted paths) are written, in a temporary folder, as 8-bit DICOM secondary captures
(skconv._synthetic.write_dicom, the pixels as decoded from the PNG: grey where the PNG's
channels are equal, else RGB):
- uncompressed (explicit VR little endian), named ``.dcm``;
- the same, without an extension (found by the ``DICM`` marker);
- a MONOCHROME1 copy (inverted values, shown inverted back);
- baseline JPEG (quality 95, Pillow), the compression ultrasound scanners use most.
Speed: ``ConvFeatureTransformer().fit(X[:1])``, then ``transform(X)`` of each set,
alternating, best of 3 (images/s, end to end); decoding alone (``load_batch`` with the
transformer's preprocessing, its threads). Agreement: the largest relative difference
of each set's feature vectors from the PNGs' (||a - b|| / ||b||).
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

from skconv import ConvFeatureTransformer
from skconv._synthetic import write_dicom
from skconv.datasets import load_image_folder
from skconv.images import load_batch, load_image

ROOT = Path(__file__).resolve().parents[1]
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUSI = Path(ARGS[0]) if ARGS else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
N_IMAGES = 128 if QUICK else 512
REPEATS = 2 if QUICK else 3


def write_sets(paths, folder: Path) -> dict:
    sets = {"png": list(map(str, paths))}
    for name in ("dcm", "no_extension", "monochrome1", "jpeg"):
        (folder / name).mkdir(parents=True)
        sets[name] = []
    n_rgb = 0
    for index, path in enumerate(paths):
        pixels = np.asarray(load_image(path))
        if (pixels == pixels[..., :1]).all():
            pixels = np.ascontiguousarray(pixels[..., 0])
        else:
            n_rgb += 1
        stem = f"{index:04d}"
        sets["dcm"].append(str(write_dicom(pixels, folder / "dcm" / f"{stem}.dcm")))
        sets["no_extension"].append(str(write_dicom(pixels, folder / "no_extension" / stem)))
        if pixels.ndim == 2:
            mono1 = write_dicom(
                255 - pixels, folder / "monochrome1" / f"{stem}.dcm", photometric="MONOCHROME1"
            )
            jpeg = write_dicom(pixels, folder / "jpeg" / f"{stem}.dcm", compression="jpeg")
        else:  # an RGB image has no MONOCHROME1 form; the JPEG writer takes grey
            mono1 = jpeg = sets["dcm"][-1]
        sets["monochrome1"].append(str(mono1))
        sets["jpeg"].append(str(jpeg))
    return sets, n_rgb


def best_rate(runs: dict, n: int) -> dict:
    seconds: dict = {}
    for _ in range(REPEATS):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds.setdefault(name, []).append(time.perf_counter() - start)
    return {name: n / min(s) for name, s in seconds.items()}


def max_relative(features, reference) -> float:
    relative = np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)
    return float(relative.max())


def main():
    data = load_image_folder(BUSI)
    paths = data.paths[:N_IMAGES]
    tmp = Path(tempfile.mkdtemp(prefix="skconv-dicom-"))
    try:
        sets, n_rgb = write_sets(paths, tmp)
        sizes = {
            name: sum(Path(p).stat().st_size for p in files) / 2**20
            for name, files in sets.items()
        }
        transformer = ConvFeatureTransformer().fit(sets["png"][:1])
        prep = transformer.preprocessing_
        features = {name: transformer.transform(files) for name, files in sets.items()}
        threads = torch.get_num_threads()
        timed = ("png", "dcm", "jpeg")
        end_to_end = best_rate(
            {name: (lambda f=sets[name]: transformer.transform(f)) for name in timed}, len(paths)
        )
        decoding = best_rate(
            {
                name: (lambda f=sets[name]: load_batch(f, range(len(f)), prep, n_threads=threads))
                for name in timed
            },
            len(paths),
        )
    finally:
        shutil.rmtree(tmp)
    results = {
        "n_images": len(paths),
        "n_rgb": n_rgb,
        "backbone": transformer.backbone_["name"],
        "engine": type(transformer._engine.get()).__name__,
        "torch_threads": threads,
        "repeats": REPEATS,
        "megabytes": sizes,
        "transform_images_per_s": end_to_end,
        "decode_images_per_s": decoding,
        "max_relative_difference_from_png": {
            name: max_relative(features[name], features["png"]) for name in sets if name != "png"
        },
    }
    print(json.dumps(results, indent=1), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dicom.json").write_text(json.dumps(results, indent=1, default=str))
    write_markdown(results)


def write_markdown(r):
    t, d, m = r["transform_images_per_s"], r["decode_images_per_s"], r["megabytes"]
    diff = r["max_relative_difference_from_png"]
    labels = {
        "png": "PNG (as BUSI ships)",
        "dcm": "DICOM, uncompressed",
        "jpeg": "DICOM, baseline JPEG (quality 95)",
    }
    lines = [
        "# DICOM files as X: BUSI written as DICOM, against its PNGs",
        "",
        f"Made by `python benchmarks/dicom.py` on a CPU machine with {r['torch_threads']} "
        f"torch threads, no GPU. The first {r['n_images']} BUSI images (sorted paths; "
        f"{r['n_rgb']} of them RGB, the rest grey) written as 8-bit DICOM secondary "
        f"captures. Default `ConvFeatureTransformer()` ({r['backbone']}, engine "
        f"{r['engine']}), images/s, best of {r['repeats']}, the sets alternating.",
        "",
        "| files | MB | `transform` end to end | vs PNG | decoding alone (`load_batch`) "
        "| vs PNG |",
        "|---|---|---|---|---|---|",
        *(
            f"| {labels[name]} | {m[name]:.1f} | {t[name]:.1f} | {t[name] / t['png']:.2f}x "
            f"| {d[name]:.0f} | {d[name] / d['png']:.2f}x |"
            for name in labels
        ),
        "",
        "Largest relative difference of a feature vector from the PNG's "
        "(||a - b|| / ||b||, over all images):",
        "",
        "| files | max relative difference |",
        "|---|---|",
        *(f"| {name} | {value:.1e} |" for name, value in diff.items()),
        "",
        "`no_extension`: the uncompressed files without a name extension (recognised by "
        "the `DICM` marker); `monochrome1`: inverted values stored as MONOCHROME1 (grey "
        "images only; RGB ones kept as they are). JPEG is lossy, so its features differ by "
        "what the compression changed.",
    ]
    (OUT / "dicom.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
