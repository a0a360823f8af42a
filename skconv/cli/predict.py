"""``skconv predict MODEL IMAGES``: the class and class probabilities of image files."""

from __future__ import annotations

import csv
import os

import numpy as np

from ._common import add_model_and_images, expand_images, load_model, model_file, new_file


def register(verbs, parents) -> None:
    """Add the ``predict`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "predict",
        parents=parents,
        help="predict the class of image files",
        description="Print the predicted class and the probability of each class for each "
        "image. MODEL is a model.joblib written by 'skconv fit', or an .onnx file written by "
        "'skconv export', which needs neither torch nor skorch. Only load .joblib models you "
        "trust: a .joblib file can run code when loaded.",
    )
    add_model_and_images(p, onnx=True)
    p.add_argument("--csv", metavar="OUT", help="also write the table to this CSV file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    p.set_defaults(func=run)


def run(args) -> int:
    """Check the paths, load MODEL, print (and write) its predictions for IMAGES."""
    from ..report import predict_with_proba, text_table

    model_path = model_file(args.model)
    files = expand_images(args.images)
    csv_path = new_file(args.csv, "--csv", args.overwrite) if args.csv else None

    model = load_model(model_path)
    classes = [str(c) for c in model.classes_]
    y_pred, proba = predict_with_proba(model, np.asarray(files))
    header = ["file", "class"] + ([] if proba is None else classes)
    rows = [
        [f, str(c)] + ([] if proba is None else [f"{p:.3f}" for p in probs])
        for f, c, probs in zip(files, y_pred, proba if proba is not None else y_pred)
    ]
    print("\n".join(text_table(header, rows)))

    if csv_path is not None:
        from .._io import atomic_write

        with atomic_write(csv_path, "w", newline="", overwrite=args.overwrite) as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["path", "class"] + ([] if proba is None else [f"proba_{c}" for c in classes])
            )
            for f, c, probs in zip(files, y_pred, proba if proba is not None else y_pred):
                writer.writerow(
                    [f, c] + ([] if proba is None else [repr(float(p)) for p in probs])
                )
        print(f"\nWrote {os.fspath(csv_path)} ({len(files)} rows)")
    return 0
