"""Feature extraction throughput: skconv's two engines against a plain user loop, from files.

Run from the project root:
    .venv/bin/python benchmarks/throughput.py [BUSI_DIR] [--quick]
Writes benchmarks/results/throughput.md and .json.

Per backbone (EfficientNet-Lite0, Lite2, the Caffe SqueezeNet), on the same BUSI PNGs:

(a) plain loop: PIL decode, timm's eval transform, eager NCHW model under no_grad, batch 32;
(b) forward only, torch engine: skconv's folded channels-last network, in its CPU chunks, on
    tensors decoded beforehand;
(b') forward only, ONNX Runtime engine: the exported graph on uint8 crops decoded beforehand,
    in its CPU chunks, one thread per run and as many runs at once as threads;
(c) end to end, ConvFeatureTransformer().transform(paths): the default, engine="auto", which
    on this CPU is ONNX Runtime;
(c_torch) end to end, ConvFeatureTransformer(engine="torch").transform(paths);
(d) end to end, compile=True (Lite0 only), compile time in its own column;
(e) decoding alone: the uint8 crops transform makes for ONNX Runtime, with as many threads as
    torch uses; in (c) the same cores decode and compute every image, so e / (b' + e) is the
    ceiling of (c)/(b').

All columns of a backbone run in turn, REPEATS times (alternating, so that the VM's drifts hit
every column alike); images/s of the best and the median run. (b') and (c) run back to back,
and the median of their per-repetition ratio is reported beside the ratio of the best runs.
(c) and (c_torch) are measured once more with each engine alone in a fresh process, as a user
runs transform, alternating.
Features of the two engines are compared on the same images. Peak RSS of transforming 500 vs
5,000 paths is measured in fresh subprocesses.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A fresh inductor cache, so that the compile column is the cost a user pays the first time
# (torch.compile otherwise reuses code compiled by earlier runs on this machine).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="skconv-inductor-"))

import numpy as np
import onnxruntime
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder
from skconv.engine.run import _Batches
from skconv.images import crop_batch, load_batch
from skconv.zoo import load_backbone

ROOT = Path(__file__).resolve().parents[1]
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUSI = Path(ARGS[0]) if ARGS else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
N_IMAGES = 96 if QUICK else 256
REPEATS = 2 if QUICK else 5
BATCH = 32
TARGETS = {"efficientnet_lite0": 1.8, "efficientnet_lite2": 1.5, "squeezenet1_1_caffe": 1.5}


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_loop(paths, backbone):
    """What a user writes by hand with timm's transform and the same network."""
    bb = load_backbone(backbone)
    model = bb.module.eval()  # same weights; NCHW, eager, no_grad
    p = bb.preprocessing
    transform = create_transform(
        **resolve_data_config(
            {
                "input_size": (3, p.image_size, p.image_size),
                "crop_pct": p.crop_pct,
                "interpolation": p.interpolation,
                "mean": p.mean,
                "std": p.std,
            }
        )
    )

    def run():
        with torch.no_grad():
            for start in range(0, len(paths), BATCH):
                batch = torch.stack(
                    [transform(Image.open(f).convert("RGB")) for f in paths[start : start + BATCH]]
                )
                (fmap,) = model(batch)
                fmap.mean(dim=(2, 3)).numpy()

    return run


def forward_only(paths, transformer):
    """(b) or (b'): the transformer's engine on batches decoded before timing."""
    engine = transformer._engine.get()
    prep = transformer.preprocessing_
    decode = crop_batch if engine.pixels == "uint8" else load_batch
    batches = [
        decode(paths, range(s, min(s + BATCH, len(paths))), prep, n_threads=2)
        for s in range(0, len(paths), BATCH)
    ]
    if engine.pixels != "uint8":
        batches = [b.clone(memory_format=torch.channels_last) for b in batches]

    def run():
        for batch in batches:
            engine(batch)

    return run


def decode_only(paths, transformer):
    """(e): the decoding steps of transform, as the ONNX Runtime engine takes them."""
    dataset = _Batches(
        paths,
        transformer.preprocessing_,
        BATCH,
        pixels="uint8",
        n_threads=torch.get_num_threads(),
        reuse=True,
        jpeg_draft=transformer.jpeg_draft,
    )

    def run():
        for i in range(len(dataset)):
            dataset[i]

    return run


# VmHWM, not getrusage's ru_maxrss: a child started by (v)fork + exec inherits the parent's
# maximum in ru_maxrss, which would report this benchmark's own peak, not the child's.
RSS_CHILD = """
import sys, numpy as np
from skconv import ConvFeatureTransformer
paths = np.load(sys.argv[1])
t = ConvFeatureTransformer(backbone=sys.argv[2]).fit(paths)
t.transform(paths)
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


# One engine in a process of its own, as a user runs transform: no second runtime's threads
# beside it. Best of two transforms after a warm-up batch; prints images/s.
FRESH_CHILD = """
import sys, time, numpy as np
from skconv import ConvFeatureTransformer
paths = np.load(sys.argv[1])
t = ConvFeatureTransformer(backbone=sys.argv[2], engine=sys.argv[3]).fit(paths[:1])
t.transform(paths[:32])
seconds = []
for _ in range(2):
    start = time.perf_counter()
    t.transform(paths)
    seconds.append(time.perf_counter() - start)
print(len(paths) / min(seconds))
"""


def fresh_process_rates(paths, backbone, tmp):
    """(c_torch) and (c), each in fresh processes, alternating REPEATS times: images/s."""
    np.save(tmp, paths)
    rates: dict = {"torch": [], "auto": []}
    for _ in range(REPEATS):
        for engine in rates:
            out = subprocess.run(
                [sys.executable, "-c", FRESH_CHILD, tmp, backbone, engine],
                check=True,
                capture_output=True,
                text=True,
            )
            rates[engine].append(float(out.stdout.strip().splitlines()[-1]))
    return {
        "c_torch_images_per_s": rates["torch"],
        "c_default_images_per_s": rates["auto"],
        "c/c_torch": max(rates["auto"]) / max(rates["torch"]),
        "c/c_torch_paired_median": statistics.median(
            a / t for a, t in zip(rates["auto"], rates["torch"])
        ),
    }


def peak_rss_mib(paths, backbone, tmp):
    np.save(tmp, paths)
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, tmp, backbone],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench_backbone(backbone, paths, with_compile):
    n = len(paths)
    default = ConvFeatureTransformer(backbone=backbone).fit(paths[:1])
    by_torch = ConvFeatureTransformer(backbone=backbone, engine="torch").fit(paths[:1])
    start = time.perf_counter()
    default._engine.get()  # export, ONNX Runtime session, probe check
    build_seconds = time.perf_counter() - start
    assert default._engine.get().kind == "onnxruntime", "auto did not choose ONNX Runtime"
    runs = {
        "a_plain": plain_loop(paths, backbone),
        "b_forward_torch": forward_only(paths, by_torch),
        "e_decode_only": decode_only(paths, default),
        "c_torch": lambda: by_torch.transform(paths),
        "b_forward_onnxruntime": forward_only(paths, default),
        "c_default": lambda: default.transform(paths),  # right after (b'): paired
    }
    if with_compile:
        fast = ConvFeatureTransformer(backbone=backbone, compile=True).fit(paths[:1])
        compile_and_first = timed(lambda: fast.transform(paths))
        runs["d_compile"] = lambda: fast.transform(paths)
    rows: dict = {}
    for _ in range(REPEATS):  # alternate so that drifts in machine load hit every method
        for name, run in runs.items():
            rows.setdefault(name, []).append(timed(run))
    result = {
        name: {
            "seconds": t,
            "images_per_s_best": n / min(t),
            "images_per_s_median": n / statistics.median(t),
        }
        for name, t in rows.items()
    }
    result["engine_build_seconds"] = build_seconds
    if with_compile:
        result["d_compile"]["compile_seconds"] = compile_and_first - min(rows["d_compile"])
    agree_onnx = default.transform(paths[:64])
    agree_torch = by_torch.transform(paths[:64])
    result["engines_max_abs_difference"] = float(np.abs(agree_onnx - agree_torch).max())
    result["largest_feature"] = float(np.abs(agree_torch).max())
    best = {k: v["images_per_s_best"] for k, v in result.items() if isinstance(v, dict)}
    b, e = best["b_forward_onnxruntime"], best["e_decode_only"]
    result["ratios"] = {
        "c/c_torch": best["c_default"] / best["c_torch"],
        "c/c_torch_paired_median": statistics.median(
            tt / tc for tt, tc in zip(rows["c_torch"], rows["c_default"])
        ),
        "forward_onnxruntime/forward_torch": b / best["b_forward_torch"],
        "c/forward_onnxruntime": best["c_default"] / b,
        "c/forward_onnxruntime_paired_median": statistics.median(
            tb / tc for tb, tc in zip(rows["b_forward_onnxruntime"], rows["c_default"])
        ),
        "c/forward_onnxruntime_ceiling": e / (b + e),
        "c/a": best["c_default"] / best["a_plain"],
    }
    if with_compile:
        result["ratios"]["d/a"] = best["d_compile"] / best["a_plain"]
    return result


def _runs(kind, engine, x, size):
    """The network on ``x``, ``size`` images per run: torch's one after the other on all
    threads, ONNX Runtime's ``engine.n_threads`` at a time on one thread each."""
    if kind == "torch":
        return lambda: [engine.model(x[i : i + size]) for i in range(0, len(x), size)]
    return lambda: list(engine.map_chunks(lambda rows: engine.run(x[rows]), len(x), most=size))


def forward_batch_sweep(backbone, sizes=(4, 8, 16, 32, 64), n=64):
    """Images/s (best of REPEATS) of each engine's forward alone, by images per run.

    torch: one call of the network per ``size`` images, on all threads; ONNX Runtime: runs
    of ``size`` images on one thread each, as many at once as the engine has threads.
    """
    images = np.zeros((1, 8, 8), np.uint8)
    engines = {
        kind: ConvFeatureTransformer(backbone=backbone, engine=kind).fit(images)._engine.get()
        for kind in ("torch", "onnxruntime")
    }
    side = engines["torch"].preprocessing.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    normalized = engines["torch"].preprocessing.normalize(floats)
    normalized = normalized.contiguous(memory_format=torch.channels_last)
    inputs = {"torch": normalized, "onnxruntime": pixels}
    times: dict = {}
    with torch.inference_mode():
        for _ in range(REPEATS):
            for kind, engine in engines.items():
                for size in sizes:
                    run = _runs(kind, engine, inputs[kind], size)
                    times.setdefault(kind, {}).setdefault(str(size), []).append(timed(run))
    return {kind: {k: n / min(t) for k, t in sweep.items()} for kind, sweep in times.items()}


def main():
    data = load_image_folder(BUSI)
    order = np.random.default_rng(0).permutation(len(data.paths))
    paths = data.paths[order][:N_IMAGES]
    load_before = os.getloadavg()
    results = {
        "n_images": N_IMAGES,
        "repeats": REPEATS,
        "batch_size": BATCH,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "timm": timm.__version__,
        "backbones": {},
    }
    plan = [("efficientnet_lite0", True)] + (
        [] if QUICK else [("efficientnet_lite2", False), ("squeezenet1_1_caffe", False)]
    )
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = str(OUT / ".paths.npy")  # the paths a child process reads
    try:
        for backbone, with_compile in plan:
            result = bench_backbone(backbone, paths, with_compile)
            result["fresh_processes"] = fresh_process_rates(paths, backbone, tmp)
            results["backbones"][backbone] = result
            print(backbone, json.dumps(result["ratios"]), flush=True)
            print(backbone, json.dumps(result["fresh_processes"]), flush=True)
        results["forward_batch_sweep"] = {
            backbone: forward_batch_sweep(backbone) for backbone, _ in plan
        }
        print("forward batch sizes", json.dumps(results["forward_batch_sweep"]), flush=True)
        small, big = (100, 1000) if QUICK else (500, 5000)
        many = np.resize(data.paths, big)  # BUSI has 780 images: cycle through them
        results["peak_rss_mib"] = {
            str(small): peak_rss_mib(many[:small], "efficientnet_lite0", tmp),
            str(big): peak_rss_mib(many, "efficientnet_lite0", tmp),
        }
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    results["load_average_before_after"] = [load_before[0], os.getloadavg()[0]]
    (OUT / "throughput.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, small, big)


def write_markdown(results, small, big):
    lines = [
        "# Feature extraction throughput",
        "",
        f"Made by `python benchmarks/throughput.py` on a {results['cpus']}-core CPU machine "
        f"(no GPU, torch {results['torch']}, onnxruntime {results['onnxruntime']}, "
        f"{results['torch_threads']} threads), {results['n_images']} BUSI PNGs, batch "
        f"{results['batch_size']}, {results['repeats']} alternating repetitions; images/s of "
        "the best run (median in brackets). Load average before/after: "
        f"{results['load_average_before_after'][0]:.2f} / "
        f"{results['load_average_before_after'][1]:.2f}.",
        "",
        "| backbone | (a) plain loop | (b) forward, torch | (b') forward, ONNX Runtime "
        '| (c_torch) transform, engine="torch" | (c) transform, default (ONNX Runtime) '
        "| (d) compile=True | compile s | (e) decoding alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["backbones"].items():

        def cell(key, r=r):
            if key not in r:
                return "-"
            return f"{r[key]['images_per_s_best']:.1f} ({r[key]['images_per_s_median']:.1f})"

        fast = r.get("d_compile", {})
        compile_s = f"{fast['compile_seconds']:.0f}" if fast else "-"
        lines.append(
            f"| {name} | {cell('a_plain')} | {cell('b_forward_torch')} "
            f"| {cell('b_forward_onnxruntime')} | {cell('c_torch')} | {cell('c_default')} "
            f"| {cell('d_compile')} | {compile_s} | {cell('e_decode_only')} |"
        )
    lines += [
        "",
        "Ratios of the best runs (and the median of the per-repetition ratios of runs made back "
        "to back); the ceiling e/(b'+e) is the most (c)/(b') can be when the same cores both "
        "decode and compute every image:",
        "",
        "| backbone | (c)/(c_torch) | paired median | target | (b')/(b) | (c)/(b') "
        "| paired median | ceiling e/(b'+e) | (c)/(a) | (d)/(a) | engines' largest difference "
        "| ONNX engine built in |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["backbones"].items():
        q = r["ratios"]
        fast_ratio = f"{q['d/a']:.2f}" if "d/a" in q else "-"
        lines.append(
            f"| {name} | {q['c/c_torch']:.2f} | {q['c/c_torch_paired_median']:.2f} "
            f"| {TARGETS.get(name, 0):.1f} | {q['forward_onnxruntime/forward_torch']:.2f} "
            f"| {q['c/forward_onnxruntime']:.2f} "
            f"| {q['c/forward_onnxruntime_paired_median']:.2f} "
            f"| {q['c/forward_onnxruntime_ceiling']:.2f} | {q['c/a']:.2f} | {fast_ratio} "
            f"| {r['engines_max_abs_difference']:.1e} (features up to "
            f"{r['largest_feature']:.1f}) | {r['engine_build_seconds']:.1f} s |"
        )
    lines += [
        "",
        "End to end again, each engine in a fresh process of its own (as a user runs "
        "`transform`: one runtime's threads, not two), the two engines alternating, "
        f"{results['repeats']} processes each; images/s of the best of two transforms per "
        "process after a warm-up batch, best process (median in brackets), and the median of "
        "the ratios of processes run back to back:",
        "",
        '| backbone | (c_torch) engine="torch" | (c) default (ONNX Runtime) | (c)/(c_torch) '
        "| paired median | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["backbones"].items():
        f = r.get("fresh_processes")
        if not f:
            continue
        t, a = f["c_torch_images_per_s"], f["c_default_images_per_s"]
        lines.append(
            f"| {name} | {max(t):.1f} ({statistics.median(t):.1f}) "
            f"| {max(a):.1f} ({statistics.median(a):.1f}) | {f['c/c_torch']:.2f} "
            f"| {f['c/c_torch_paired_median']:.2f} | {TARGETS.get(name, 0):.1f} |"
        )
    rss = results["peak_rss_mib"]
    sweep = results["forward_batch_sweep"]
    sizes = list(next(iter(sweep.values()))["torch"])
    lines += [
        "",
        "Targets: (c)/(c_torch) >= 1.8 for Lite0 and >= 1.5 for Lite2 and SqueezeNet; "
        "(c)/(b') >= 0.85; peak RSS 5,000 / 500 paths <= 1.2.",
        "",
        "Forward pass alone, images/s by images per run (64 random images, best of "
        f"{results['repeats']}): torch runs the network on all {results['torch_threads']} "
        "threads, a chunk after the other, and calls it with chunks of max(8, 4 x threads) = "
        f"{max(8, 4 * results['torch_threads'])} images; ONNX Runtime runs on one thread per "
        f"run, {results['torch_threads']} runs at once, and the engine takes at most "
        "8 images per run:",
        "",
        "| backbone | engine | " + " | ".join(sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
        *(
            f"| {name} | {kind} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |"
            for name, kinds in sweep.items()
            for kind, row in kinds.items()
        ),
        "",
        "Peak RSS of `ConvFeatureTransformer().fit(paths).transform(paths)` in a fresh process: "
        f"{rss[str(small)]:.0f} MiB for {small} paths, {rss[str(big)]:.0f} MiB for {big} paths "
        f"(ratio {rss[str(big)] / rss[str(small)]:.2f}; the child's own high-water mark, "
        "VmHWM).",
        "",
        "(a) decodes with PIL, applies timm's eval transform and runs the same network in NCHW "
        "under `no_grad`; (b) runs skconv's torch engine (channels-last, inference_mode, batch "
        "norms folded into the convolutions, CPU chunks) and (b') the ONNX Runtime engine (the "
        "same network exported with its normalisation and pooling, uint8 pixels in), both on "
        "batches decoded before timing; (c), (c_torch) and (d) are end to end from the files: "
        f"(c_torch) and (d) decode each batch with {results['torch_threads']} threads, then "
        "compute it; in (c) each of the engine's threads decodes a chunk of 8 images, then "
        "runs the graph on it; (e) is the decoding alone, with "
        f"{results['torch_threads']} threads.",
    ]
    (OUT / "throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
