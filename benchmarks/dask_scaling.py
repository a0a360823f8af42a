"""Features/s on BUSI: skconv.distributed.transform_blockwise on 1 and 2 local worker processes,
against the in-process transform with 2 torch threads, and the ParallelPostFit pitfall.

Run from the project root, at normal priority on an otherwise idle machine (it is a timing):
    .venv/bin/python benchmarks/dask_scaling.py [BUSI_DIR [N_IMAGES]]
Writes benchmarks/results/dask.md and .json.

Every configuration transforms the same N_IMAGES BUSI paths (default 300, a seeded sample)
with the default backbone (efficientnet_lite0, 224 px). Files are read once beforehand so that
all runs see a warm page cache. Each Dask worker is a process with one Dask thread and one
torch thread. A Dask run is timed from the call to ``transform_blockwise`` to the computed
array: pickling and scattering the model and building it on the workers are included in the
first call; the second call finds the model built in each worker (only the bytes are
scattered again). Cluster start-up is reported apart. Backbone builds are counted in each
worker by wrapping ``skconv.zoo.load_backbone`` there.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import sys
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import distributed
import numpy as np
import torch
from dask_ml.wrappers import ParallelPostFit
from distributed import Client, LocalCluster

from skconv import ConvFeatureTransformer
from skconv.datasets import load_image_folder
from skconv.distributed import configure_workers, transform_blockwise

ROOT = Path(__file__).resolve().parents[1]
BUSI = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "datasets" / "busi"
N_IMAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 300
OUT = ROOT / "benchmarks" / "results"
CHUNK = 32  # paths per block = the transformer's batch_size
SEED = 0


def install_build_counter():
    """Run on each worker: count skconv.zoo.load_backbone calls in that process."""
    import skconv.zoo as zoo

    if not hasattr(zoo, "_bench_builds"):
        original = zoo.load_backbone

        def counted(*args, **kwargs):
            zoo._bench_builds += 1
            return original(*args, **kwargs)

        zoo.load_backbone = counted
    zoo._bench_builds = 0


def read_build_counter():
    import skconv.zoo as zoo

    return zoo._bench_builds


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def row(name, seconds, features, reference, builds=None, **extra):
    return {
        "config": name,
        "seconds": round(seconds, 2),
        "features_per_s": round(len(features) / seconds, 1),
        "max_abs_diff_vs_in_process": float(np.abs(features - reference).max()),
        "builds_per_worker": None if builds is None else sorted(builds.values()),
        **extra,
    }


def dask_runs(transformer, paths, reference, n_workers):
    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        startup = time.perf_counter() - start
        configure_workers(client, threads=1)
        client.run(install_build_counter)
        rows = []
        for call in ("first call", "second call"):
            feats, seconds = timed(
                lambda: transform_blockwise(transformer, paths, chunk_size=CHUNK).compute()
            )
            rows.append(
                row(
                    f"transform_blockwise, {n_workers} worker(s), {call}",
                    seconds,
                    feats,
                    reference,
                    client.run(read_build_counter),
                    workers=n_workers,
                    cluster_startup_s=round(startup, 1),
                )
            )
        if n_workers == 2:
            rows.append(parallel_post_fit(client, transformer, paths, reference))
    return rows


def parallel_post_fit(client, transformer, paths, reference):
    """The pitfall: dask-ml's wrapper puts the estimator (and its weights) in every task."""
    client.run(install_build_counter)
    n_out = transformer.n_features_out_
    wrapper = ParallelPostFit(transformer, transform_meta=np.empty((0, n_out), np.float32))
    X = da.from_array(paths[:, None], chunks=(CHUNK, 1))  # it expects 2-D input
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lazy = wrapper.transform(X)
        feats, seconds = timed(lazy.compute)
    return row(
        "ParallelPostFit(transformer).transform, 2 workers",
        seconds,
        feats,
        reference,
        client.run(read_build_counter),
        workers=2,
        declared_shape=list(lazy.shape),
        warnings=sorted({str(w.message).splitlines()[0].rstrip(".") for w in caught}),
    )


def main():
    load_before = os.getloadavg()
    data = load_image_folder(BUSI)
    rng = np.random.default_rng(SEED)
    paths = np.sort(rng.choice(data.paths, size=min(N_IMAGES, len(data.paths)), replace=False))
    paths = paths.astype(object)
    sizes = [len(Path(path).read_bytes()) for path in paths]  # warm the page cache for all

    torch.set_num_threads(2)
    transformer = ConvFeatureTransformer().fit(paths)
    reference, seconds = timed(lambda: transformer.transform(paths))
    rows = [row("in-process transform, 2 torch threads", seconds, reference, reference)]
    rows += dask_runs(transformer, paths, reference, n_workers=1)
    rows += dask_runs(transformer, paths, reference, n_workers=2)
    load_after = os.getloadavg()

    info = {
        "images": len(paths),
        "backbone": transformer.backbone_["name"],
        "image_size": transformer.preprocessing_.image_size,
        "chunk_size": CHUNK,
        "batch_size": transformer.batch_size,
        "model_pickle_mb": round(len(pickle.dumps(transformer)) / 1e6, 1),
        "mean_image_kb": round(float(np.mean(sizes)) / 1e3, 1),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "command": "python benchmarks/dask_scaling.py",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dask.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    (OUT / "dask.md").write_text(render(info, rows))
    print(render(info, rows))


def render(info, rows):
    lines = [
        "# Scaling out: features/s with Dask on one machine",
        "",
        f"Made by `{info['command']}` ({info['images']} BUSI images, "
        f"{info['backbone']} at {info['image_size']} px, blocks of {info['chunk_size']} "
        f"paths, batch size {info['batch_size']}; pickled model {info['model_pickle_mb']} MB) "
        f"on {info['cpus']} CPUs, {info['platform']}, Python {info['python']}, "
        f"torch {info['torch']}, dask/distributed {info['dask']}/{info['distributed']}.",
        f"Load average (1, 5, 15 min) before: {info['load_average_before']}, "
        f"after: {info['load_average_after']}.",
        "",
        "| configuration | s | features/s | builds per worker, so far | max abs diff |",
        "|---|---:|---:|---|---:|",
    ]
    for r in rows:
        builds = "-" if r["builds_per_worker"] is None else str(r["builds_per_worker"])
        lines.append(
            f"| {r['config']} | {r['seconds']} | {r['features_per_s']} | {builds} | "
            f"{r['max_abs_diff_vs_in_process']:.1e} |"
        )
    startups = {r["workers"]: r["cluster_startup_s"] for r in rows if "cluster_startup_s" in r}
    lines += [
        "",
        "Cluster start-up (not in the times above): "
        + ", ".join(f"{n} worker(s) {s} s" for n, s in sorted(startups.items()))
        + ".",
    ]
    rate = {r["config"]: r["features_per_s"] for r in rows}
    secs = {r["config"]: r["seconds"] for r in rows}
    one = rate["transform_blockwise, 1 worker(s), second call"]
    two = rate["transform_blockwise, 2 worker(s), second call"]
    inproc = rate["in-process transform, 2 torch threads"]
    overhead = (
        secs["transform_blockwise, 2 worker(s), first call"]
        - secs["transform_blockwise, 2 worker(s), second call"]
    )
    lines += [
        "",
        f"Two worker processes give {two / one:.2f}x the features/s of one (second calls), "
        f"and {two / inproc:.2f}x the in-process transform with 2 torch threads. The first "
        f"call costs {overhead:.1f} s more than the second: pickling and scattering the "
        f"{info['model_pickle_mb']} MB model and building it once in each worker.",
    ]
    n_blocks = -(-info["images"] // info["chunk_size"])
    for r in rows:
        if "declared_shape" in r:
            lines += [
                "",
                f"The pitfall: ParallelPostFit puts the estimator in every task, so the "
                f"{n_blocks} blocks built the backbone {sum(r['builds_per_worker'])} times "
                f"(per worker: {r['builds_per_worker']}) and it declared the shape "
                f"{tuple(r['declared_shape'])} for the {info['images']} x N result; "
                "warnings: " + ("; ".join(r["warnings"]) or "none") + ".",
            ]
    mb_per_s = two * info["mean_image_kb"] / 1e3
    lines += [
        "",
        "## What to expect on N machines",
        "",
        "Close to N times one machine's rate, minus fixed costs. The blocks are independent, "
        "each worker reads its own files, and what every worker shares is small: the paths "
        "and the model, shipped and built once per worker (the seconds above, paid in "
        "parallel, not per block). Here two processes reach less than 2x because they share "
        "two cores with the operating system, the scheduler and the client; separate "
        "machines do not. What stays serial: starting the workers (importing torch), the "
        "tail of the last blocks (keep blocks to a few batches), and the scheduler's "
        "overhead of about a millisecond per block. The limit is the shared storage: "
        f"images here average {info['mean_image_kb']} KB, so a machine at "
        f"{two:.0f} images/s reads {mb_per_s:.1f} MB/s, and a filesystem serving 1 GB/s "
        f"feeds about {1000 / mb_per_s:.0f} such machines (a GPU worker, several times "
        "faster, proportionally fewer).",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
