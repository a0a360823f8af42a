"""OpenVINO against ONNX Runtime as ConvFeatureTransformer's engine, side by side.

Run from the project root (about 2 minutes on a 2-core CPU machine):
    .venv/bin/python benchmarks/engine_choice.py [BUSI_DIR] [--quick]
Writes benchmarks/results/engine_choice.md and .json.

The first 512 BUSI PNGs (sorted paths), default ConvFeatureTransformer (EfficientNet-Lite0)
with engine="onnxruntime" and engine="openvino", alternating, best of 3, in one process:
- first call: a fresh transformer's fit(X[:1]) and transform(X), so the export, the
  engine's build and the probe are paid, as a new fit pays them; three ways: with an
  empty engine cache (the first repeat, in a new cache folder), with the disk cache warm
  (a new process, as a second script run), and in-process (the best of the later
  repeats: a clone in a GridSearchCV);
- steady state: a second transform(X) of the same transformer;
- agreement: the largest difference of each engine's features from engine="torch"'s,
  relative to the largest feature.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder

ROOT = Path(__file__).resolve().parents[1]
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUSI = Path(ARGS[0]) if ARGS else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
N_IMAGES = 128 if QUICK else 512
REPEATS = 2 if QUICK else 3
ENGINES = ("onnxruntime", "openvino")


def first_call(engine: str, paths) -> float:
    start = time.perf_counter()
    ConvFeatureTransformer(engine=engine).fit(paths[:1]).transform(paths)
    return time.perf_counter() - start


def main():
    if "--first" in sys.argv:  # the child: one first call, in a fresh process
        print(first_call(ARGS[-1], load_image_folder(BUSI).paths[:N_IMAGES]))
        return
    os.environ["SKCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="skconv-engine-cache-")
    paths = load_image_folder(BUSI).paths[:N_IMAGES]
    reference = ConvFeatureTransformer(engine="torch").fit(paths[:1]).transform(paths)
    first, steady, gaps = {}, {}, {}
    for _ in range(REPEATS):
        for engine in ENGINES:
            start = time.perf_counter()
            transformer = ConvFeatureTransformer(engine=engine).fit(paths[:1])
            features = transformer.transform(paths)
            first.setdefault(engine, []).append(time.perf_counter() - start)
            start = time.perf_counter()
            transformer.transform(paths)
            steady.setdefault(engine, []).append(time.perf_counter() - start)
            gaps[engine] = float(np.abs(features - reference).max() / np.abs(reference).max())
    disk = {}
    for _ in range(REPEATS):
        for engine in ENGINES:
            child = [sys.executable, __file__, str(BUSI), "--first", engine]
            child += ["--quick"] if QUICK else []
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
            disk.setdefault(engine, []).append(float(out.split()[-1]))
    auto = ConvFeatureTransformer().fit(paths[:1])
    auto.transform(paths[:8])
    results = {
        "n_images": len(paths),
        "torch_threads": torch.get_num_threads(),
        "repeats": REPEATS,
        "auto_engine": auto._engine.get().kind,
        "first_call_cold_cache_images_per_s": {e: len(paths) / s[0] for e, s in first.items()},
        "first_call_disk_cache_images_per_s": {e: len(paths) / min(s) for e, s in disk.items()},
        "first_call_in_process_images_per_s": {
            e: len(paths) / min(s[1:]) for e, s in first.items()
        },
        "steady_images_per_s": {e: len(paths) / min(s) for e, s in steady.items()},
        "max_relative_difference_from_torch": gaps,
    }
    print(json.dumps(results, indent=1), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine_choice.json").write_text(json.dumps(results, indent=1))
    cold = results["first_call_cold_cache_images_per_s"]
    warm = results["first_call_disk_cache_images_per_s"]
    f = results["first_call_in_process_images_per_s"]
    s, g = results["steady_images_per_s"], gaps
    lines = [
        "# OpenVINO and ONNX Runtime as the feature engine",
        "",
        f"Made by `python benchmarks/engine_choice.py` on a CPU machine with "
        f"{results['torch_threads']} torch threads, no GPU. The first {len(paths)} BUSI "
        "PNGs, default `ConvFeatureTransformer()` (EfficientNet-Lite0), images/s end to end "
        f"(decoding included), best of {REPEATS}, the engines alternating in one process. "
        f"`engine='auto'` chose: {results['auto_engine']}.",
        "",
        "| engine | first call, empty cache | first call, new process, disk cache "
        "| first call, same process (a clone) | steady state (a second transform) "
        "| max difference from torch |",
        "|---|---|---|---|---|---|",
        *(
            f"| {e} | {cold[e]:.1f} | {warm[e]:.1f} | {f[e]:.1f} | {s[e]:.1f} | {g[e]:.1e} |"
            for e in ENGINES
        ),
        "",
        "First call: a fresh transformer's `fit(X[:1])` and `transform(X)`. Empty cache: "
        "the first repeat (one run, so noisier); new process: best of "
        f"{REPEATS} child processes on the warm disk cache (includes no interpreter start, "
        "but a fresh process's first backbone load and first torch forward, the probe, "
        "which the same-process columns do not pay: compare the engines within a column).",
        "",
        "OpenVINO / ONNX Runtime: first call "
        + ", ".join(
            f"{name} {d['openvino'] / d['onnxruntime']:.2f}x"
            for name, d in [("empty cache", cold), ("disk cache", warm), ("same process", f)]
        )
        + f"; steady state {s['openvino'] / s['onnxruntime']:.2f}x.",
    ]
    (OUT / "engine_choice.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
