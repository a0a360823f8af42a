"""Feature extraction throughput: a plain user loop against skconv, end to end from files.

Run from the project root:
    .venv/bin/python benchmarks/throughput.py [BUSI_DIR] [--quick]
Writes benchmarks/results/throughput.md and .json.

(a) plain loop: PIL decode, timm's eval transform, eager NCHW model under no_grad, batch 32;
(b) raw forward: skconv's network settings (channels_last, inference_mode, batch norms
    folded into the convolutions) on tensors decoded beforehand, so decoding is excluded;
    also without the folding, to show what it brings;
(c) ConvFeatureTransformer().transform(paths), the default path;
(d) ConvFeatureTransformer(compile=True).transform(paths), compile time in its own column;
(e) decoding alone: skconv.images.load_batch over the same files with as many threads as torch
    uses, i.e. (c) without the network. (c) runs (e) then (b) step after step, so
    1 / (1/b + 1/e) is the most (c) can reach on this machine, and e / (b + e) the ceiling of
    (c)/(b).
(c') the ablation of a design choice: (c) with the next batch decoded by a background thread
    while the network computes (what skconv does with a GPU) instead of decode-then-compute.
(b) and (c) run back to back in every repetition; besides the ratio of their best runs, the
median of the per-repetition ratios is reported, which the VM's speed drifts affect less.
Peak RSS of transforming 500 vs 5,000 paths is measured in fresh subprocesses.
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
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder
from skconv.features import _Batches, _prefetched
from skconv.images import load_image
from skconv.zoo import load_backbone

ROOT = Path(__file__).resolve().parents[1]
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUSI = Path(ARGS[0]) if ARGS else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
N_IMAGES = 96 if QUICK else 256
REPEATS = 2 if QUICK else 5
BATCH = 32


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_loop(paths, backbone):
    """What a user writes by hand with timm (for packaged lite weights) or torchvision."""
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


def raw_forward(paths, transformer, fold=True):
    batches = []
    for start in range(0, len(paths), BATCH):
        batches.append(
            torch.stack(
                [transformer.preprocessing_(load_image(f)) for f in paths[start : start + BATCH]]
            ).contiguous(memory_format=torch.channels_last)
        )

    def run():
        folded = transformer._inference_module()
        if not fold:  # the same path, with the network as loaded
            transformer._inference_net = transformer.module_
        try:
            with torch.inference_mode():
                for batch in batches:
                    transformer._pooled(batch, ["final"]).numpy()
        finally:
            transformer._inference_net = folded

    return run


def decode_only(paths, transformer):
    """(c) without the network: the decoding steps of transform on a CPU, as it sets them."""
    dataset = _Batches(
        paths,
        transformer.preprocessing_,
        BATCH,
        n_threads=torch.get_num_threads(),
        reuse=True,
        jpeg_draft=transformer.jpeg_draft,
    )

    def run():
        for i in range(len(dataset)):
            dataset[i]

    return run


def overlapped(paths, transformer):
    """(c') skconv's GPU schedule on this CPU: decode batch i+1 while batch i computes."""
    dataset = _Batches(paths, transformer.preprocessing_, BATCH, n_threads=1)

    def run():
        with torch.inference_mode():
            for batch in _prefetched(dataset):
                transformer._pooled(batch, ["final"]).numpy()

    return run


def png_decoders(paths):
    """ms per file on one thread, from bytes in memory: Pillow (skconv's decoder) against
    torchvision's libpng decoder, and what the PNGs hold (share of rows by PNG filter type)."""
    import io
    import zlib

    from torchvision.io import ImageReadMode, decode_png

    blobs = [Path(f).read_bytes() for f in paths]
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {
            "pillow": lambda: [Image.open(io.BytesIO(b)).load() for b in blobs],
            "torchvision_decode_png": lambda: [
                decode_png(d, ImageReadMode.UNCHANGED) for d in datas
            ],
        }
        times: dict = {}
        for _ in range(REPEATS):
            for name, run in runs.items():
                times.setdefault(name, []).append(timed(run))
    finally:
        torch.set_num_threads(threads)
    filters = np.zeros(5)
    for blob in blobs:  # IHDR, then IDAT chunks; rows start with their filter type byte
        width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
        depth, color = blob[24], blob[25]
        channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color, 1)
        pos, idat = 8, b""
        while pos < len(blob):
            length = int.from_bytes(blob[pos : pos + 4], "big")
            if blob[pos + 4 : pos + 8] == b"IDAT":
                idat += blob[pos + 8 : pos + 8 + length]
            pos += 12 + length
        stride = 1 + width * channels * depth // 8
        rows = np.frombuffer(zlib.decompress(idat), np.uint8)[::stride][:height]
        filters += np.bincount(rows, minlength=5)[:5]
    return {
        "ms_per_file": {k: 1e3 * min(t) / len(paths) for k, t in times.items()},
        "filter_share": dict(
            zip(["none", "sub", "up", "average", "paeth"], (filters / filters.sum()).tolist())
        ),
    }


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


def peak_rss_mib(paths, backbone, tmp):
    np.save(tmp, paths)
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, tmp, backbone],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench_backbone(backbone, paths, with_fast):
    n = len(paths)
    rows = {}
    default = ConvFeatureTransformer(backbone=backbone).fit(paths[:1])
    runs = {
        "a_plain": plain_loop(paths, backbone),
        "b_raw_forward_unfolded": raw_forward(paths, default, fold=False),
        "e_decode_only": decode_only(paths, default),
        "c_overlapped": overlapped(paths, default),
        "b_raw_forward": raw_forward(paths, default),
        "c_skconv_default": lambda: default.transform(paths),  # right after (b): paired
    }
    if with_fast:
        fast = ConvFeatureTransformer(backbone=backbone, compile=True).fit(paths[:1])
        compile_and_first = timed(lambda: fast.transform(paths))
        runs["d_skconv_compile"] = lambda: fast.transform(paths)
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
    if with_fast:
        steady = min(rows["d_skconv_compile"])
        result["d_skconv_compile"]["compile_seconds"] = compile_and_first - steady
        np.testing.assert_allclose(
            fast.transform(paths[:40]), default.transform(paths[:40]), atol=1e-4, rtol=1e-4
        )
    best = {k: v["images_per_s_best"] for k, v in result.items()}
    b, e = best["b_raw_forward"], best["e_decode_only"]
    result["ratios"] = {
        "c/a": best["c_skconv_default"] / best["a_plain"],
        "c/b": best["c_skconv_default"] / b,
        "c/b_paired_median": statistics.median(
            tb / tc for tb, tc in zip(rows["b_raw_forward"], rows["c_skconv_default"])
        ),
        "c/b_ceiling": e / (b + e),
    }
    if with_fast:
        result["ratios"]["d/a"] = best["d_skconv_compile"] / best["a_plain"]
    return result


def forward_batch_sweep(backbone, sizes=(4, 8, 16, 32, 64), n=64):
    """Images/s (best of REPEATS) of the folded network alone, by images per forward pass."""
    transformer = ConvFeatureTransformer(backbone=backbone).fit(np.zeros((1, 8, 8), np.uint8))
    side = transformer.preprocessing_.image_size
    x = torch.randn(n, 3, side, side).contiguous(memory_format=torch.channels_last)
    net = transformer._inference_module()
    times: dict = {}
    with torch.inference_mode():
        net(x[:4], ["final"])  # warm-up
        for _ in range(REPEATS):
            for size in sizes:
                times.setdefault(str(size), []).append(
                    timed(lambda s=size: [net(x[i : i + s], ["final"]) for i in range(0, n, s)])
                )
            # The same chunks on one thread: how fully the network's threads use the cores,
            # i.e. whether idle core time is left for decoding to hide in.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                times.setdefault("8, 1 thread", []).append(
                    timed(lambda: [net(x[i : i + 8], ["final"]) for i in range(0, n, 8)])
                )
            finally:
                torch.set_num_threads(threads)
    return {key: n / min(t) for key, t in times.items()}


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
        "timm": timm.__version__,
        "backbones": {},
    }
    plan = [("efficientnet_lite0", True)] + (
        [] if QUICK else [("efficientnet_lite2", False), ("squeezenet1_1_caffe", False)]
    )
    for backbone, with_fast in plan:
        results["backbones"][backbone] = bench_backbone(backbone, paths, with_fast)
        print(backbone, json.dumps(results["backbones"][backbone]["ratios"]), flush=True)
    results["forward_batch_sweep"] = {
        backbone: forward_batch_sweep(backbone) for backbone, _ in plan
    }
    results["png_decoders"] = png_decoders(paths)
    print("png decoders", json.dumps(results["png_decoders"]), flush=True)
    print("forward batch sizes", json.dumps(results["forward_batch_sweep"]), flush=True)
    small, big = (100, 1000) if QUICK else (500, 5000)
    many = np.resize(data.paths, big)  # BUSI has 780 images: cycle through them
    tmp = str(OUT / ".rss_paths.npy")
    OUT.mkdir(parents=True, exist_ok=True)
    try:
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
        f"(no GPU, torch {results['torch']}, {results['torch_threads']} torch threads), "
        f"{results['n_images']} BUSI PNGs end to end from files, batch {results['batch_size']}, "
        f"{results['repeats']} alternating repetitions; images/s of the best and the median run. "
        f"Load average before/after: {results['load_average_before_after'][0]:.2f} / "
        f"{results['load_average_before_after'][1]:.2f}.",
        "",
        "| backbone | (a) plain loop | (b) raw forward | (b) without BN folding "
        "| (c) skconv default | (c') decoding overlapped | (d) skconv compile | compile s "
        "| (e) decoding alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["backbones"].items():

        def cell(key, r=r):
            if key not in r:
                return "-"
            return f"{r[key]['images_per_s_best']:.1f} ({r[key]['images_per_s_median']:.1f})"

        fast = r.get("d_skconv_compile", {})
        compile_s = f"{fast['compile_seconds']:.0f}" if fast else "-"
        lines.append(
            f"| {name} | {cell('a_plain')} | {cell('b_raw_forward')} "
            f"| {cell('b_raw_forward_unfolded')} | {cell('c_skconv_default')} "
            f"| {cell('c_overlapped')} | {cell('d_skconv_compile')} | {compile_s} "
            f"| {cell('e_decode_only')} |"
        )
    lines += [
        "",
        "Ratios (of the best runs; (c)/(b) also as the median of the ratios of the back-to-back "
        "runs; the ceiling e/(b+e) is the most (c)/(b) can be when every step decodes, then "
        "computes, on the same cores):",
        "",
        "| backbone | (c)/(a) | (d)/(a) | (c)/(b) | (c)/(b) paired median "
        "| (c)/(b) ceiling e/(b+e) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["backbones"].items():
        ratios = r["ratios"]
        fast_ratio = f"{ratios['d/a']:.2f}" if "d/a" in ratios else "-"
        lines.append(
            f"| {name} | {ratios['c/a']:.2f} | {fast_ratio} | {ratios['c/b']:.2f} "
            f"| {ratios['c/b_paired_median']:.2f} | {ratios['c/b_ceiling']:.2f} |"
        )
    rss = results["peak_rss_mib"]
    png = results["png_decoders"]
    lines += [
        "",
        f"Decoding one of these PNGs on one thread, from bytes in memory: Pillow (what skconv "
        "uses) "
        f"{png['ms_per_file']['pillow']:.2f} ms, torchvision's `decode_png` (libpng) "
        f"{png['ms_per_file']['torchvision_decode_png']:.2f} ms (best of {results['repeats']}). "
        "Rows by PNG filter type: "
        + ", ".join(f"{k} {v:.0%}" for k, v in png["filter_share"].items())
        + ".",
        "",
        "Targets: (c)/(a) >= 1.5, (c)/(b) >= 0.9, (d)/(a) >= 2.2.",
        "",
        "Forward pass alone (folded network, channels-last, 64 random images), images/s by "
        f"images per forward pass, best of {results['repeats']}; on a CPU skconv runs "
        f"chunks of max(8, 4 x torch threads) = {max(8, 4 * results['torch_threads'])} "
        "images whatever `batch_size`; the last column runs chunks of 8 on one thread "
        f"instead of {results['torch_threads']}:",
        "",
        "| backbone | " + " | ".join(next(iter(results["forward_batch_sweep"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(results["forward_batch_sweep"].values()))),
        *(
            f"| {name} | " + " | ".join(f"{v:.1f}" for v in sweep.values()) + " |"
            for name, sweep in results["forward_batch_sweep"].items()
        ),
        "",
        f"Peak RSS of `ConvFeatureTransformer().fit(paths).transform(paths)` in a fresh process: "
        f"{rss[str(small)]:.0f} MiB for {small} paths, {rss[str(big)]:.0f} MiB for {big} paths "
        f"(ratio {rss[str(big)] / rss[str(small)]:.2f}; target <= 1.2; the child's own "
        "high-water mark, VmHWM).",
        "",
        "(a) decodes with PIL, applies timm's eval transform and runs the same network in NCHW "
        "under `no_grad`; (b) runs skconv's network set-up (channels_last, inference_mode, batch "
        "norms folded into the convolutions) on tensors decoded before timing, and once more "
        "without the folding; (c) and (d) are end to end from the files (on this CPU each step "
        f"decodes with {results['torch_threads']} threads, then computes); (c') decodes the "
        "next batch in one background thread while the network computes, as skconv does with "
        "a GPU; (e) is (c)'s decoding alone. (a) runs batches of 32 images; (b), (c) "
        "and (d) use skconv's default `batch_size=32` (images decoded per step), which on a CPU "
        "the network takes in the chunks above.",
    ]
    (OUT / "throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
