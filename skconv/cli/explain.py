"""``skconv explain MODEL IMAGES --out DIR``: one heat-map PNG per image, and a CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ._common import (
    UsageError,
    add_model_and_images,
    expand_images,
    fraction_closed,
    int_at_least,
    load_model,
    model_file,
    new_dir,
    one_line,
)

EXPLAIN_CHUNK = 16  # images explained and written at a time: memory stays flat


def register(verbs, parents) -> None:
    """Add the ``explain`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "explain",
        parents=parents,
        help="heat maps of where the model looked",
        description="Write one PNG per image into --out: the image with a heat map blended "
        "in of the regions that raised the score of the predicted class (or of "
        "--target), and explain.csv, which lists them. The maps are class "
        "activation maps for a 'fit --mode features' model and Grad-CAM for "
        "'--mode finetune' (skconv.explain.heatmaps). The network sees a center "
        "crop of each image; what the crop left out gets the colour of zero. "
        "Only load models you trust: a .joblib file can run code when loaded.",
    )
    add_model_and_images(p, onnx=False)
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="new folder for the PNGs; must not exist or be empty",
    )
    p.add_argument(
        "--target",
        metavar="CLASS",
        help="explain this class for every image (default: the predicted class)",
    )
    p.add_argument(
        "--shift",
        type=int_at_least(0),
        default=0,
        metavar="PX",
        help="also explain 8 crops shifted by PX pixels and average the maps: "
        "finer maps at 9 times the cost; about half a feature cell, e.g. "
        "16 for a 224-px input, works well (default: 0, off)",
    )
    p.add_argument(
        "--alpha",
        type=fraction_closed,
        default=0.5,
        metavar="A",
        help="weight of the heat map's colours, from 0 (image only) to 1 (map "
        "only) (default: 0.5)",
    )
    p.add_argument(
        "--colormap",
        default="jet",
        metavar="NAME",
        help="matplotlib colormap of the heat map (default: jet)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Check the command line, write the overlays with :mod:`skconv.explain`, print."""
    import matplotlib

    from .._io import atomic_dir, atomic_write
    from ..explain import explainer, heatmaps, overlay
    from ..report import text_table

    model_path = model_file(args.model)
    if args.colormap not in matplotlib.colormaps:
        raise UsageError(
            f"--colormap {args.colormap!r} is not a matplotlib colormap; try "
            "jet, inferno or viridis."
        )
    files = expand_images(args.images)
    out = new_dir(args.out, "--out")

    model = load_model(model_path)
    try:
        explainer(model)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"MODEL {os.fspath(model_path)!r}: {one_line(exc)}") from None
    classes = [str(c) for c in model.classes_]
    target = None
    if args.target is not None:
        if args.target not in classes:
            raise UsageError(
                f"--target {args.target!r} is not a class of MODEL; its classes "
                f"are {', '.join(classes)}."
            )
        target = model.classes_[classes.index(args.target)]

    names = _overlay_names(files)
    rows = []
    with atomic_dir(out, what="--out") as staging:
        for start in range(0, len(files), EXPLAIN_CHUNK):
            chunk = np.asarray(files[start : start + EXPLAIN_CHUNK])
            predicted = model.predict(chunk)
            explained = predicted if target is None else [target] * len(chunk)
            maps = heatmaps(model, chunk, target=explained, shift=args.shift)
            for f, heat, name, p, e in zip(chunk, maps, names[start:], predicted, explained):
                image = overlay(f, heat, alpha=args.alpha, colormap=args.colormap)
                with atomic_write(staging / name, "wb") as handle:
                    image.save(handle, format="PNG")
                rows.append([str(f), str(p), str(e), name])
        with atomic_write(staging / "explain.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "predicted", "explained", "heatmap"])
            writer.writerows(rows)
    print("\n".join(text_table(["file", "predicted", "explained", "heat map"], rows)))
    print(f"\nWrote {os.fspath(out)}{os.sep}: {len(rows)} heat map PNG(s) and explain.csv")
    return 0


def _overlay_names(files: Sequence[str]) -> list[str]:
    """``<stem>_heatmap.png`` per image; same stems from different folders get -2, -3..."""
    names: list[str] = []
    used: set = set()
    for f in files:
        stem = Path(f).stem
        name, k = f"{stem}_heatmap.png", 2
        while name in used:
            name, k = f"{stem}_heatmap-{k}.png", k + 1
        used.add(name)
        names.append(name)
    return names
