"""``skconv demo``: the whole flow on a synthetic set, offline, in seconds."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..experiment import DEFAULT_BACKBONE
from ._common import new_dir

DEMO_PER_CLASS = 30
DEMO_IMAGE_SIZE = 128  # px of the synthetic images; the backbone resizes to its own 224


def register(verbs, parents) -> None:
    """Add the ``demo`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "demo",
        parents=parents,
        help="run the whole flow on a synthetic set, offline",
        description=f"Make {DEMO_PER_CLASS} synthetic ultrasound-like images per class "
        "(normal, benign, malignant) in a temporary folder, split them 70:15:15, "
        f"fit {DEFAULT_BACKBONE} features with a logistic-regression head, "
        "print the test report, save the model, reload it and predict three "
        "test images. Needs no network and no arguments; takes seconds.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="keep the model and report in this new folder (default: a temporary "
        "folder, removed at the end)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the synthetic images and the split (default: 0)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Make the synthetic set, run :func:`skconv.experiment.fit_folder`, predict."""
    import joblib

    from ..datasets import make_ultrasound_folder
    from ..experiment import fit_folder
    from ..report import predict_with_proba, text_table

    start = time.perf_counter()
    out = new_dir(args.out, "--out") if args.out else None
    with tempfile.TemporaryDirectory(prefix="skconv-demo-") as tmp:
        tmp = Path(tmp)
        print(
            f"skconv demo: {DEMO_PER_CLASS} synthetic ultrasound-like images per class, "
            f"{DEMO_IMAGE_SIZE} px (speckle on tissue layers; normal: no lesion, benign: a "
            "smooth oval, malignant: an irregular dark lesion), in a temporary folder.\n",
            flush=True,
        )
        src = make_ultrasound_folder(
            tmp / "images",
            n_per_class=DEMO_PER_CLASS,
            image_size=DEMO_IMAGE_SIZE,
            random_state=args.seed,
        )
        # What 'skconv fit' does: split 70:15:15 stratified by class, fit, evaluate, save.
        result = fit_folder(
            src,
            out if out is not None else tmp / "model",
            backbone=DEFAULT_BACKBONE,
            random_state=args.seed,
            command="skconv demo",
        )
        written = "  ".join(result.files)
        if out is None:
            print(f"\nWrote {written} to a temporary folder (--out DIR keeps them).")
        else:
            print(f"\nWrote {os.fspath(out)}{os.sep}: {written}")

        model = joblib.load(result.out / "model.joblib")
        # One test image of each class, so that the three predictions differ.
        X_test, y_test = result.paths["test"], result.target["test"]
        picks = [X_test[np.flatnonzero(y_test == c)[0]] for c in np.unique(y_test)][:3]
        print("\nReloaded model.joblib; predictions for three test images:", flush=True)
        y_pred, proba = predict_with_proba(model, np.asarray(picks))
        rows = [
            [Path(f).name, Path(f).parent.name, c, f"{p.max():.3f}"]
            for f, c, p in zip(picks, y_pred, proba)
        ]
        print("\n".join(text_table(["file", "true class", "predicted", "probability"], rows)))
    kept = f"; model and report kept in {os.fspath(out)}" if out is not None else ""
    print(f"\nDemo done in {time.perf_counter() - start:.1f} s{kept}.")
    return 0
