"""Fine-tuning epoch time: FineTuneClassifier against a plain PyTorch training loop on the
same images, model, batch size and augmentation.

Run from the project root:  .venv/bin/python benchmarks/finetune_speed.py [BUSI_DIR]
Writes benchmarks/results/finetune_speed.md and .json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skconv import FineTuneClassifier
from skconv.datasets import load_image_folder
from skconv.finetune import FineTuneNet, TrainAugmentation
from skconv.images import load_image
from skconv.model_selection import train_val_test_split

ROOT = Path(__file__).resolve().parents[1]
BUSI = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "datasets" / "busi"
OUT = ROOT / "benchmarks" / "results"
SEED = 0


def plain_epoch(paths, labels, batch_size):
    """What a user writes by hand: Dataset + DataLoader + AdamW loop, same model and data."""
    torch.manual_seed(SEED)
    model = FineTuneNet("efficientnet_lite0", n_classes=3)
    augment = TrainAugmentation(model.preprocessing)
    classes = np.unique(labels)
    codes = np.searchsorted(classes, labels)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return augment(load_image(paths[i])), int(codes[i])

    loader = torch.utils.data.DataLoader(Images(), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def skconv_epoch(paths, labels, batch_size):
    clf = FineTuneClassifier(
        max_epochs=1,
        freeze_epochs=0,
        train_split=None,
        patience=None,
        batch_size=batch_size,
        random_state=SEED,
    )
    clf.fit(paths, labels)
    return float(clf.history[-1, "dur"])


def main():
    data = load_image_folder(BUSI)
    X_tr, X_va, X_te, y_tr, y_va, y_te = train_val_test_split(
        data.paths, data.target, stratify=data.target, random_state=SEED
    )
    load_before = os.getloadavg()[0]
    results = {
        "split": {"train": len(X_tr), "val": len(X_va), "test": len(X_te)},
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor(),
    }

    # Epoch time, side by side: the same 192 training images, model, batch size and
    # augmentation; the backbone fully trainable in both.
    subset = np.random.default_rng(SEED).permutation(len(X_tr))[:192]
    timing = {"plain": [], "skconv": []}
    for _ in range(3):
        timing["plain"].append(plain_epoch(X_tr[subset], y_tr[subset], 32))
        timing["skconv"].append(skconv_epoch(X_tr[subset], y_tr[subset], 32))
    results["epoch_seconds_192_images"] = timing
    results["speed_ratio_skconv_over_plain"] = min(timing["plain"]) / min(timing["skconv"])
    results["load_average_before_after"] = [load_before, os.getloadavg()[0]]
    print(json.dumps(results, indent=1), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "finetune_speed.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Fine-tuning epoch time: FineTuneClassifier against a plain PyTorch loop",
        "",
        f"Made by `python benchmarks/finetune_speed.py` on a {os.cpu_count()}-core CPU machine "
        f"(no GPU, torch {torch.__version__}, {torch.get_num_threads()} threads). Load average "
        f"before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}.",
        "",
        "Same 192 BUSI training images (stratified 70:15:15 split, random_state=0), "
        "EfficientNet-Lite0 + linear head, batch 32, the same augmentation, every layer "
        "trainable, AdamW; three repetitions each, alternating. The plain loop is what a user "
        "writes by hand: a Dataset, a DataLoader and a zero_grad/forward/backward/step loop.",
        "",
        "| loop | epoch seconds (each run) | best |",
        "|---|---|---|",
        f"| plain PyTorch | {', '.join(f'{s:.1f}' for s in timing['plain'])} | "
        f"{min(timing['plain']):.1f} |",
        f"| FineTuneClassifier | {', '.join(f'{s:.1f}' for s in timing['skconv'])} | "
        f"{min(timing['skconv']):.1f} |",
        "",
        "skconv speed relative to the plain loop (best of each): "
        f"{results['speed_ratio_skconv_over_plain']:.2f}x (target >= 0.9x).",
        "",
        "Test accuracy, macro AUC and malignant recall of `FineTuneClassifier()` next to the "
        "feature pipeline on one split are in busi.md (image-level split, seed 0).",
    ]
    (OUT / "finetune_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
