"""Feature extraction throughput: skconv's two engines against a plain user loop, from files.

Run from the project root:
    .venv/bin/python benchmarks/throughput.py [BUSI_DIR] [--quick]
Writes benchmarks/results/throughput.md and .json.
    .venv/bin/python benchmarks/throughput.py [BUSI_DIR] --engines
Writes benchmarks/results/throughput_engines.md and .json: the engines a user can pick,
by hand (ONNX Runtime, OpenVINO) and through skconv (default, engine="onnxruntime",
precision="int8"), first call and steady state, with the fraction of the CPU's fp32 peak
(see engines_main; about 20 minutes).

Per backbone (EfficientNet-Lite0, Lite2, the Caffe SqueezeNet), on the same BUSI PNGs:

(a) plain loop: PIL decode, timm's eval transform, eager NCHW model under no_grad, batch 32;
(b) forward only, torch engine: skconv's folded channels-last network, in its CPU chunks, on
    tensors decoded beforehand;
(b') forward only, ONNX Runtime engine: the exported graph on uint8 crops decoded beforehand,
    in its CPU chunks, one thread per run and as many runs at once as threads;
(c) end to end, ConvFeatureTransformer(engine="onnxruntime").transform(paths) (the default
    until OpenVINO became auto's first choice; --engines compares the two);
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


def timm_transform(p):
    """timm's eval transform for skconv's preprocessing ``p``: what a user's loop applies."""
    return create_transform(
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


def plain_loop(paths, backbone):
    """What a user writes by hand with timm's transform and the same network."""
    bb = load_backbone(backbone)
    model = bb.module.eval()  # same weights; NCHW, eager, no_grad
    transform = timm_transform(bb.preprocessing)

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
    rates: dict = {"torch": [], "onnxruntime": []}
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
        "c_default_images_per_s": rates["onnxruntime"],
        "c/c_torch": max(rates["onnxruntime"]) / max(rates["torch"]),
        "c/c_torch_paired_median": statistics.median(
            a / t for a, t in zip(rates["onnxruntime"], rates["torch"])
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
    default = ConvFeatureTransformer(backbone=backbone, engine="onnxruntime").fit(paths[:1])
    by_torch = ConvFeatureTransformer(backbone=backbone, engine="torch").fit(paths[:1])
    start = time.perf_counter()
    default._engine.get()  # export, ONNX Runtime session, probe check
    build_seconds = time.perf_counter() - start
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
        '| (c_torch) transform, engine="torch" | (c) transform, engine="onnxruntime" '
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


# --------------------------------------------------------------------------- --engines
# The engines a user can pick side by side, by hand and through skconv, in one alternating
# run per backbone; writes throughput_engines.md and .json.

ENGINE_IMAGES = 32 if QUICK else 256
ENGINE_REPEATS = 1 if QUICK else 3
ENGINE_BACKBONES = ("efficientnet_lite0",) if QUICK else (
    "efficientnet_lite0", "efficientnet_lite2", "squeezenet1_1_caffe"
)  # fmt: skip


class _Pooled(torch.nn.Module):
    """The network and its global average pooling, as a user exports it: floats in."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        (fmap,) = self.net(x)
        return fmap.mean(dim=(2, 3))


def exported_by_hand(backbone):
    """The ONNX bytes a user exports once beforehand, and the timm transform."""
    from skconv.engine import export_onnx_bytes

    bb = load_backbone(backbone)
    side = bb.preprocessing.image_size
    model = _Pooled(bb.module.eval()).eval()
    graph = export_onnx_bytes(model, torch.zeros(2, 3, side, side), "x", ["features"])
    return graph, timm_transform(bb.preprocessing), model


def _decoded_batches(paths, transform):
    for start in range(0, len(paths), BATCH):
        images = [transform(Image.open(f).convert("RGB")) for f in paths[start : start + BATCH]]
        yield start, torch.stack(images).numpy()


def ort_by_hand(paths, graph, transform):
    """ONNX Runtime with default session options, batches of 32 decoded by PIL + timm."""
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    out = np.empty((len(paths), session.get_outputs()[0].shape[1] or 0), np.float32)

    def run():
        for start, batch in _decoded_batches(paths, transform):
            out[start : start + len(batch)] = session.run(None, {"x": batch})[0]
        return out

    return run


def ov_by_hand(paths, graph, transform, precision_f32=True):
    """OpenVINO with PERFORMANCE_HINT=THROUGHPUT and an AsyncInferQueue, one image a request.

    ``precision_f32`` pins INFERENCE_PRECISION_HINT to f32, as skconv does: on a CPU with
    bfloat16 units OpenVINO would otherwise compute in bfloat16 (other features).
    """
    import io

    import openvino as ov

    core = ov.Core()
    model = ov.convert_model(io.BytesIO(graph))
    side = model.inputs[0].partial_shape[2].get_length()
    model.reshape([1, 3, side, side])
    config = {"PERFORMANCE_HINT": "THROUGHPUT"}
    if precision_f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(model, "CPU", config)
    queue = ov.AsyncInferQueue(compiled)
    out = {}

    def keep(request, index):
        out[index] = request.get_output_tensor(0).data[0].copy()

    queue.set_callback(keep)

    def run():
        for start, batch in _decoded_batches(paths, transform):
            for i in range(len(batch)):
                queue.start_async({0: batch[i : i + 1]}, userdata=start + i)
        queue.wait_all()
        return np.stack([out[i] for i in range(len(paths))])

    return run, len(queue)


def flops_per_image(model, side):
    """Floating-point operations of one forward pass (a multiply-add counts 2), by torch's
    FlopCounterMode: convolutions and matrix products, not the element-wise layers."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    return counter.get_total_flops()


def fp32_peak():
    """This CPU's fp32 peak in FLOP/s, and how it was counted."""
    info = Path("/proc/cpuinfo").read_text()
    flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    mhz = float(
        next(line for line in info.splitlines() if line.startswith("cpu MHz")).split(":")[1]
    )
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = torch.get_num_threads()
    peak = cores * mhz * 1e6 * 2 * lanes * 2  # two FMA units, two FLOPs per lane
    how = (
        f"{cores} cores x {mhz / 1000:.2f} GHz (cpu MHz of /proc/cpuinfo, no turbo) x 2 FMA "
        f"units x {lanes} fp32 lanes ({'AVX-512' if lanes == 16 else 'AVX2'}) x 2 FLOPs = "
        f"{peak / 1e9:.0f} GFLOP/s"
    )
    return peak, how


def bench_engines(backbone, paths):
    """Every path of one backbone, alternating ENGINE_REPEATS times; images/s per run."""
    from skconv import ConvFeatureTransformer

    graph, transform, model = exported_by_hand(backbone)
    side = load_backbone(backbone).preprocessing.image_size
    runs = {"ort_by_hand": ort_by_hand(paths, graph, transform)}
    runs["ov_by_hand_f32"], n_requests = ov_by_hand(paths, graph, transform)
    runs["ov_by_hand_default"], _ = ov_by_hand(paths, graph, transform, precision_f32=False)
    kinds = {
        "default": dict(),
        "onnxruntime": dict(engine="onnxruntime"),
        "int8": dict(precision="int8"),
    }
    fitted = {}
    refused = {}

    def first_call(name, params):
        def run():
            # int8 calibrates on the images of fit; the fp32 engines need one image.
            transformer = ConvFeatureTransformer(backbone, **params)
            transformer.fit(paths if name == "int8" else paths[:1])
            fitted[name] = transformer
            return transformer.transform(paths)

        return run

    for name, params in kinds.items():
        runs[f"{name}_first"] = first_call(name, params)
        runs[f"{name}_steady"] = lambda name=name: fitted[name].transform(paths)
    seconds: dict = {}
    features = {}
    for repeat in range(ENGINE_REPEATS):
        for name, run in runs.items():
            kind = name.rsplit("_", 1)[0]
            if kind in refused:
                continue
            start = time.perf_counter()
            try:
                features[name] = run()
            except ValueError as exc:  # int8 refused on this backbone
                refused[kind] = str(exc)
                continue
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            print(f"{backbone} {repeat + 1} {name}: {len(paths) / seconds[name][-1]:.1f} img/s",
                  flush=True)  # fmt: skip
    with torch.no_grad():
        reference = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in paths]))
    reference = reference.numpy()
    result = {"refused": refused, "ov_requests": n_requests}
    flops = flops_per_image(model, side)
    peak, _ = fp32_peak()
    for name, t in seconds.items():
        got = features[name]
        rel = np.abs(got - reference).max() / np.abs(reference).max()
        cos = np.sum(got * reference, 1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
        )
        rate = len(paths) / min(t)
        result[name] = {
            "seconds": t,
            "images_per_s_best": rate,
            "images_per_s_median": len(paths) / statistics.median(t),
            "images_per_s_first_repeat": len(paths) / t[0],
            "max_relative_difference_from_torch": float(rel),
            "mean_cosine_to_torch": float(cos.mean()),
            "fraction_of_fp32_peak": rate * flops / peak,
        }
    result["gflops_per_image"] = flops / 1e9
    return result


def engines_main():
    import openvino

    cache = tempfile.mkdtemp(prefix="skconv-engine-cache-")
    os.environ["SKCONV_CACHE_DIR"] = cache  # first repeats pay every export and quantization
    data = load_image_folder(BUSI)
    paths = np.sort(data.paths)[:ENGINE_IMAGES]
    load_before = os.getloadavg()[0]
    peak, how = fp32_peak()
    results = {
        "n_images": ENGINE_IMAGES,
        "repeats": ENGINE_REPEATS,
        "torch_threads": torch.get_num_threads(),
        "cpu": next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "fp32_peak_flops": peak,
        "fp32_peak_how": how,
        "backbones": {},
    }
    for backbone in ENGINE_BACKBONES:
        results["backbones"][backbone] = bench_engines(backbone, paths)
    small, big = (100, 200) if QUICK else (500, 5000)
    many = np.resize(data.paths, big)
    tmp = str(OUT / ".paths.npy")
    try:
        results["peak_rss_mib"] = {
            str(n): peak_rss_mib(many[:n], "efficientnet_lite0", tmp) for n in (small, big)
        }
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    results["load_average_before_after"] = [load_before, os.getloadavg()[0]]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "throughput_engines.json").write_text(json.dumps(results, indent=1))
    write_engines_markdown(results)


ENGINE_ROWS = {
    "ort_by_hand": "ONNX Runtime by hand (default session options)",
    "ov_by_hand_f32": "OpenVINO by hand (THROUGHPUT hint, AsyncInferQueue, f32 pinned)",
    "ov_by_hand_default": "OpenVINO by hand, OpenVINO's default precision",
    "default": "`ConvFeatureTransformer()` (OpenVINO, auto's choice where installed)",
    "onnxruntime": '`ConvFeatureTransformer(engine="onnxruntime")`',
    "openvino": '`ConvFeatureTransformer(engine="openvino")` (before it was the default)',
    "int8": '`ConvFeatureTransformer(precision="int8")`',
}


def write_engines_markdown(results):
    lines = [
        "# The engines side by side: by hand and through skconv",
        "",
        f"Made by `python benchmarks/throughput.py --engines` on one machine ({results['cpu']}, "
        f"{results['torch_threads']} threads, no GPU; torch {results['torch']}, onnxruntime "
        f"{results['onnxruntime']}, openvino {results['openvino']}), the first "
        f"{results['n_images']} BUSI PNGs (sorted paths), every path of a backbone in turn, "
        f"{results['repeats']} rounds, in one process with an empty engine cache at the start. "
        "Images/s end to end from the files, best round (median; first round in brackets "
        "after it: it pays the export, and for int8 the quantization). Load average "
        f"before/after: {results['load_average_before_after'][0]:.2f} / "
        f"{results['load_average_before_after'][1]:.2f}.",
        "",
        "By hand: the network with its average pooling exported to ONNX once beforehand, "
        "each batch of 32 decoded by PIL and timm's eval transform, then run. skconv's first "
        "call: a new transformer's `fit` (one image; int8: all of them, its calibration) and "
        "`transform`; steady: a second `transform`. % of peak: GFLOPs per image (torch's "
        "FlopCounterMode: convolutions and matrix products, a multiply-add counted as 2) "
        f"times images/s over the fp32 peak, {results['fp32_peak_how']}.",
        "",
    ]
    for backbone, r in results["backbones"].items():
        lines += [
            f"## {backbone} ({r['gflops_per_image']:.2f} GFLOPs per image)",
            "",
            "| path | first call | steady state | % of fp32 peak (best) | largest difference "
            "from torch (relative) | mean cosine to torch |",
            "|---|---|---|---|---|---|",
        ]
        for key, label in ENGINE_ROWS.items():
            if key in r.get("refused", {}):
                lines.append(f"| {label} | refused: {r['refused'][key]} | | | | |")
                continue
            first = r.get(key) or r.get(f"{key}_first")
            steady = r.get(f"{key}_steady")
            if first is None:
                continue

            def rate(m):
                return (
                    f"{m['images_per_s_best']:.1f} ({m['images_per_s_median']:.1f}; "
                    f"{m['images_per_s_first_repeat']:.1f})"
                )

            best = steady or first
            lines.append(
                f"| {label} | {rate(first)} | {rate(steady) if steady else '-'} "
                f"| {100 * best['fraction_of_fp32_peak']:.1f} "
                f"| {best['max_relative_difference_from_torch']:.1e} "
                f"| {best['mean_cosine_to_torch']:.4f} |"
            )
        default = r.get("default_first")
        by_hand = r.get("ov_by_hand_f32")
        int8 = r.get("int8_first")
        if default and by_hand:
            lines += [
                "",
                f"Default first call / OpenVINO by hand (f32): "
                f"{default['images_per_s_best'] / by_hand['images_per_s_best']:.2f}"
                + (
                    f"; int8 first call / default first call: "
                    f"{int8['images_per_s_best'] / default['images_per_s_best']:.2f}"
                    if int8
                    else ""
                )
                + ".",
            ]
        lines.append("")
    (small, small_mib), (big, big_mib) = results["peak_rss_mib"].items()
    lines += [
        "Peak RSS of `ConvFeatureTransformer().fit(paths).transform(paths)` in a fresh process "
        f"(VmHWM): {small_mib:.0f} MiB for {small} paths, {big_mib:.0f} MiB for {big} "
        f"(ratio {big_mib / small_mib:.2f}; target at most 1.2).",
        "",
    ]
    (OUT / "throughput_engines.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if "--engines" in sys.argv and "--markdown-only" in sys.argv:  # the tables again
        write_engines_markdown(json.loads((OUT / "throughput_engines.json").read_text()))
    elif "--engines" in sys.argv:
        engines_main()
    else:
        main()
