"""How long does ``FineTuneClassifier().fit`` take on BUSI, against earlier versions?

Run from the project root (about 7 minutes a round on a 2-core CPU)::

    .venv/bin/python benchmarks/finetune_fit_time.py [--revs 50020f1^,62be1ea]
        [--repeats 2] [--seeds 0,1,2,3,4]

Each git revision in ``--revs`` is unpacked (``git archive``) into a temporary folder
and imported from there; the working tree is the last contender. Every fit runs in a
fresh child process of the same interpreter and environment, the contenders
alternating, so that all share the machine's state of the moment. Each child fits
``FineTuneClassifier(random_state=seed)`` (that version's defaults) on the train part of
BUSI's duplicate-aware 70:15:15 split of ``seed``, with the validation part for early
stopping (as ``benchmarks/busi.py`` and ``finetune_ablation.py`` fit it), and scores the
test part. Seed 0 is fitted ``--repeats`` times (the timed rounds), the other seeds once
(their scores). Finished fits are kept in benchmarks/.cache/finetune_fit_time/ by commit,
seed and round (the working tree only when skconv/ has no local change), so that a rerun
with more seeds fits only what is missing.

Writes benchmarks/results/finetune_fit_time.md and .json: fit seconds of each round, the
best, test accuracy and macro AUC per seed, epochs, and the ratios of the best fit times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUSI = Path(os.environ.get("SKCONV_BUSI", ROOT.parent / "shared" / "datasets" / "busi"))
OUT = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache" / "finetune_fit_time"
# 50020f1^: the defaults before the refit (the "today" of issues 26 and 28);
# 62be1ea: the refit on every image, before the trunk and training speed-ups.
DEFAULT_REVS = "50020f1^,62be1ea"


def child(split_file: str) -> None:
    """Fit and score one FineTuneClassifier; print one JSON line."""
    from sklearn.metrics import accuracy_score, roc_auc_score
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    import skconv
    from skconv import FineTuneClassifier

    split = json.loads(Path(split_file).read_text())
    paths, labels = np.asarray(split["paths"]), np.asarray(split["labels"])
    train, val, test = (np.asarray(split[k]) for k in ("train", "val", "test"))
    clf = FineTuneClassifier(
        random_state=split.get("seed", 0),
        train_split=predefined_split(Dataset(paths[val], labels[val])),
    )
    start = time.perf_counter()
    clf.fit(paths[train], labels[train])
    fit_s = time.perf_counter() - start
    proba = clf.predict_proba(paths[test])
    classes = np.asarray(clf.classes_)
    history = getattr(clf, "validation_history_", None) or clf.history
    result = {
        "skconv": str(Path(skconv.__file__).parent),
        "fit_s": fit_s,
        "accuracy": accuracy_score(labels[test], classes[proba.argmax(1)]),
        "auc": roc_auc_score(labels[test], proba, multi_class="ovr", labels=classes),
        "epochs": len(history),
        "refit_epochs": getattr(clf, "refit_epochs_", None),
    }
    print("RESULT " + json.dumps(result), flush=True)


def unpack(rev: str, folder: Path) -> Path:
    """The package of ``rev`` in ``folder``; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "skconv"], check=True, capture_output=True
    ).stdout
    target = folder / rev.replace("^", "_parent").replace("/", "_")
    target.mkdir()
    archive_path = target / "src.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target


def run_child(source: Path, split_file: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(split_file)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"child for {source} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if Path(result["skconv"]).resolve() != (source / "skconv").resolve():
        raise RuntimeError(f"child imported {result['skconv']}, not {source / 'skconv'}")
    return result


def _split_file(folder: Path, data, groups, seed: int) -> Path:
    from skconv.model_selection import train_val_test_split

    train, val, test = train_val_test_split(
        np.arange(len(data.target)), stratify=data.target, groups=groups, random_state=seed
    )
    path = folder / f"split_{seed}.json"
    path.write_text(
        json.dumps(
            {
                "paths": [str(p) for p in data.paths],
                "labels": [str(t) for t in data.target],
                "train": train.tolist(),
                "val": val.tolist(),
                "test": test.tolist(),
                "seed": seed,
            }
        )
    )
    return path


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True)
    return done.stdout.decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revs", default=DEFAULT_REVS, help="comma-separated git revisions")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds on seed 0")
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds (scores)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    from skconv.datasets import load_image_folder
    from skconv.model_selection import find_near_duplicates

    data = load_image_folder(BUSI)
    groups = find_near_duplicates(data.paths)
    seeds = [int(s) for s in args.seeds.split(",")]
    revs = [r for r in args.revs.split(",") if r]
    # A finished fit is kept by commit, seed and round: a rerun with more seeds fits only
    # what is missing. The working tree is kept only when skconv/ has no local change.
    keys = {rev: _git("rev-parse", "--short", rev) for rev in revs}
    dirty = bool(_git("status", "--porcelain", "--", "skconv"))
    head = _git("rev-parse", "--short", "HEAD")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        splits = {seed: _split_file(tmp, data, groups, seed) for seed in seeds}
        sources = {f"{rev} ({keys[rev]})": (unpack(rev, tmp), keys[rev]) for rev in revs}
        label = f"working tree ({head}{', changed' if dirty else ''})"
        sources[label] = (ROOT, None if dirty else head)
        plan = [(0, r) for r in range(args.repeats)] + [(s, 0) for s in seeds if s != 0]
        runs: dict[str, dict] = {name: {} for name in sources}
        for seed, repeat in plan:
            for name, (source, key) in sources.items():
                cached = CACHE / f"{key}_{seed}_{repeat}.json"
                if key is not None and cached.exists():
                    result = json.loads(cached.read_text())
                else:
                    result = run_child(source, splits[seed])
                    if key is not None:
                        CACHE.mkdir(parents=True, exist_ok=True)
                        cached.write_text(json.dumps(result))
                runs[name][f"{seed}_{repeat}"] = result
                scores = f"accuracy {result['accuracy']:.3f}, AUC {result['auc']:.3f}"
                print(f"seed {seed} round {repeat + 1} {name}: {result['fit_s']:.1f} s, {scores}",
                      flush=True)  # fmt: skip
    write(runs, load_before, os.getloadavg()[0], args.repeats, seeds)


def write(runs: dict, load_before: float, load_after: float, repeats: int, seeds) -> None:
    import torch

    timed = {
        name: [r for k, r in results.items() if k.startswith("0_")]
        for name, results in runs.items()
    }
    best = {name: min(r["fit_s"] for r in results) for name, results in timed.items()}
    current = best[list(runs)[-1]]
    rows = []
    for name, results in timed.items():
        first = results[0]
        each = ", ".join(f"{r['fit_s']:.0f}" for r in results)
        rows.append(
            f"| {name} | {each} | {best[name]:.0f} "
            f"| {best[name] / current:.2f} | {100 * first['accuracy']:.1f} | "
            f"{100 * first['auc']:.1f} | {first['epochs']} | {first['refit_epochs'] or '-'} |"
        )
    score_rows = []
    for name, results in runs.items():
        per_seed = [results[f"{seed}_0"] for seed in seeds]
        acc = [100 * r["accuracy"] for r in per_seed]
        auc = [100 * r["auc"] for r in per_seed]
        seconds = " ".join(f"{r['fit_s']:.0f}" for r in per_seed)
        score_rows.append(
            f"| {name} | {np.mean(acc):.1f} ± {np.std(acc):.1f} | "
            f"{' '.join(f'{a:.1f}' for a in acc)} | {np.mean(auc):.1f} | "
            f"{' '.join(f'{a:.1f}' for a in auc)} | {seconds} |"
        )
    listed = ",".join(map(str, seeds))
    text = "\n".join(
        [
            "# FineTuneClassifier().fit on BUSI: this version against earlier ones",
            "",
            f"Made by `python benchmarks/finetune_fit_time.py --seeds {listed}` "
            f"on a {os.cpu_count()}-core CPU "
            f"machine (no GPU, torch {torch.__version__}, {torch.get_num_threads()} threads), "
            f"{repeats} alternating rounds on seed 0, each fit in a fresh process. Load average "
            f"before/after: {load_before:.2f} / {load_after:.2f}.",
            "",
            "`FineTuneClassifier(random_state=0)` with each version's defaults, fitted on the "
            "train part of BUSI's duplicate-aware 70:15:15 split of seed 0 with the validation "
            "part for early stopping, scored on the 117 test images. Accuracy and macro AUC "
            "of the first round (a seeded fit repeats itself on one machine).",
            "",
            "| version | fit s (each round) | best | best / the last row's best | "
            "accuracy % | AUC % | epochs | refit epochs |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Test scores over the splits of seeds {', '.join(map(str, seeds))} (one fit each, "
            "`random_state=seed`), mean ± std and per seed, in percent:",
            "",
            "| version | accuracy | per seed | macro AUC | per seed | fit s per seed |",
            "|---|---|---|---|---|---|",
            *score_rows,
            "",
        ]
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "finetune_fit_time.md").write_text(text)
    (OUT / "finetune_fit_time.json").write_text(json.dumps(runs, indent=1))
    print(text)


if __name__ == "__main__":
    main()
