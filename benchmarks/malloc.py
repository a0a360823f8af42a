"""How much of the CPU time of a fresh process goes to glibc's malloc giving memory back?

Run from the project root:
    .venv/bin/python benchmarks/malloc.py [BUSI_DIR] [--quick]
Writes benchmarks/results/malloc.md and .json.

glibc serves large blocks (above M_MMAP_THRESHOLD, 128 KiB at first, raised as such blocks
are freed, up to 32 MiB) with mmap, and hands the top of its heap back to the kernel once
more than M_TRIM_THRESHOLD is free. Eager torch on a CPU allocates and frees each layer's
activations (megabytes per chunk of 8 images), so a fresh process keeps asking the kernel
for new zeroed pages; ONNX Runtime keeps its own arena and does not. A long-lived process
whose heap has already grown does not pay it either, which is why the torch engine ran
faster in throughput.py's own process than in the fresh processes a user starts.

Each configuration runs in a fresh process, the configurations alternating, REPEATS times:
`ConvFeatureTransformer(engine=...).transform` of 256 BUSI PNGs (EfficientNet-Lite0, best of
two transforms after a warm-up batch), and one epoch of `FineTuneClassifier()` on 128 of
them (its own default recipe, no validation split), with glibc's defaults and with
`MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` raised so that freed memory stays in
the heap for reuse. Peak RSS (VmHWM) of each child is recorded beside its speed.

Then the whole `skconv fit BUSI --mode finetune` (split, near-duplicates, fine-tuning with
early stopping, evaluation, reports), once as the `skconv` command, which keeps freed
memory for reuse (skconv.engine.reuse_freed_memory), and once through `skconv.cli.main`
called from Python, which leaves glibc's defaults: wall-clock seconds of each and their
test accuracy, which must be the same.
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

import numpy as np

from skconv.datasets import load_image_folder

ROOT = Path(__file__).resolve().parents[1]
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUSI = Path(ARGS[0]) if ARGS else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
REPEATS = 1 if QUICK else 3
N_IMAGES = 64 if QUICK else 256
N_FINETUNE = 32 if QUICK else 128

#: Freed memory stays in the heap: no mmap below 1 GB, no trimming below 4 GB free.
TUNED = {"MALLOC_MMAP_THRESHOLD_": str(10**9), "MALLOC_TRIM_THRESHOLD_": str(4 * 10**9)}

CHILD = """
import sys, time, numpy as np
paths = np.load(sys.argv[1])
labels = np.load(sys.argv[2])
task = sys.argv[3]
if task == "finetune":
    from skconv import FineTuneClassifier
    net = FineTuneClassifier(max_epochs=1, train_split=None, random_state=0)
    start = time.perf_counter()
    net.fit(paths[: len(labels)], labels)
    rate = len(labels) / (time.perf_counter() - start)
else:
    from skconv import ConvFeatureTransformer
    t = ConvFeatureTransformer(engine=task).fit(paths[:1])
    t.transform(paths[:32])
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        t.transform(paths)
        seconds.append(time.perf_counter() - start)
    rate = len(paths) / min(seconds)
with open("/proc/self/status") as status:
    hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(rate, int(hwm) / 1024)
"""

TASKS = {
    "torch": 'transform, engine="torch"',
    "onnxruntime": 'transform, engine="onnxruntime"',
    "finetune": "FineTuneClassifier(), one epoch",
}


def run_child(paths_file, labels_file, task, malloc):
    env = dict(os.environ)
    for name in TUNED:
        env.pop(name, None)
    if malloc == "tuned":
        env.update(TUNED)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, paths_file, labels_file, task],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    rate, rss = out.stdout.split()[-2:]
    return float(rate), float(rss)


FIT_FROM_PYTHON = "import sys; from skconv.cli import main; sys.exit(main(sys.argv[1:]))"


def cli_finetune():
    """Seconds of `skconv fit BUSI --mode finetune`, glibc's defaults then the command's."""
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, start in (
            ("default", [sys.executable, "-c", FIT_FROM_PYTHON]),
            ("tuned", [sys.executable, "-m", "skconv"]),
        ):
            out = f"{folder}/{name}"
            env = {k: v for k, v in os.environ.items() if k not in TUNED}
            begin = time.perf_counter()
            subprocess.run(
                [*start, "fit", str(BUSI), "--mode", "finetune", "--out", out],
                check=True,
                capture_output=True,
                env=env,
            )
            seconds = time.perf_counter() - begin
            metrics = json.loads(Path(out, "metrics.json").read_text())
            rows[name] = {"seconds": seconds, "test_accuracy": metrics["test"]["accuracy"]}
            print("skconv fit --mode finetune", name, rows[name], flush=True)
    return rows


def main():
    data = load_image_folder(BUSI)
    order = np.random.default_rng(0).permutation(len(data.paths))
    paths, labels = data.paths[order][:N_IMAGES], data.target[order][:N_FINETUNE]
    results = {"n_images": N_IMAGES, "n_finetune": N_FINETUNE, "repeats": REPEATS, "tasks": {}}
    with tempfile.TemporaryDirectory() as folder:
        paths_file, labels_file = f"{folder}/paths.npy", f"{folder}/labels.npy"
        np.save(paths_file, paths)
        np.save(labels_file, labels)
        for _ in range(REPEATS):  # alternate, so that the VM's drifts hit every column alike
            for task in TASKS:
                for malloc in ("default", "tuned"):
                    rate, rss = run_child(paths_file, labels_file, task, malloc)
                    row = results["tasks"].setdefault(task, {}).setdefault(malloc, {})
                    row.setdefault("images_per_s", []).append(rate)
                    row.setdefault("peak_rss_mib", []).append(rss)
                    print(task, malloc, f"{rate:.1f} images/s, {rss:.0f} MiB", flush=True)
    if not QUICK:
        results["cli_finetune"] = cli_finetune()
    results["load_average_after"] = os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "malloc.json").write_text(json.dumps(results, indent=1))
    write_markdown(results)


def write_markdown(results):
    lines = [
        "# glibc malloc and the speed of a fresh process",
        "",
        f"Made by `python benchmarks/malloc.py` on a {os.cpu_count()}-core CPU machine (no "
        f"GPU). Each cell: a fresh process per run, {results['repeats']} runs alternating "
        "with the other cells; images/s of the best run (median in brackets), and the "
        "largest peak RSS. Transforms: EfficientNet-Lite0 on "
        f"{results['n_images']} BUSI PNGs, best of two after a warm-up batch; fine-tuning: "
        f"one epoch of `FineTuneClassifier()` on {results['n_finetune']} of them, fit "
        "included. Tuned: `"
        + " ".join(f"{k}={v}" for k, v in TUNED.items())
        + "` in the child's environment.",
        "",
        "| task | glibc defaults | tuned | tuned / defaults (best) | peak RSS, defaults "
        "| peak RSS, tuned |",
        "|---|---|---|---|---|---|",
    ]
    for task, rows in results["tasks"].items():
        d, t = rows["default"]["images_per_s"], rows["tuned"]["images_per_s"]
        lines.append(
            f"| {TASKS[task]} | {max(d):.1f} ({statistics.median(d):.1f}) "
            f"| {max(t):.1f} ({statistics.median(t):.1f}) | {max(t) / max(d):.2f} "
            f"| {max(rows['default']['peak_rss_mib']):.0f} MiB "
            f"| {max(rows['tuned']['peak_rss_mib']):.0f} MiB |"
        )
    cli = results.get("cli_finetune")
    if cli:
        d, t = cli["default"], cli["tuned"]
        lines += [
            "",
            "The whole `skconv fit BUSI --mode finetune` (split, near-duplicates, "
            "fine-tuning with early stopping, evaluation, reports), once each: through "
            "`skconv.cli.main` called from Python, which leaves glibc's defaults, "
            f"{d['seconds']:.0f} s; as the `skconv` command, which keeps freed memory, "
            f"{t['seconds']:.0f} s ({d['seconds'] / t['seconds']:.2f}x); test accuracy "
            f"{100 * d['test_accuracy']:.1f} % and {100 * t['test_accuracy']:.1f} %.",
        ]
    lines += [
        "",
        f"Load average after the run: {results['load_average_after']:.2f}.",
    ]
    (OUT / "malloc.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
