"""``skconv fit DATA``: fit a classifier, evaluate it, save the model and its report.

The work is :func:`skconv.experiment.fit_folder`; this module checks the command line
(status 2 before any work), chooses the default ``--out`` and prints where things went.
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime
from pathlib import Path

from ..experiment import DEFAULT_BACKBONE
from ._common import (
    PROG,
    UsageError,
    add_split_options,
    check_backbone,
    existing_dir,
    group_duplicates,
    int_at_least,
    new_dir,
    part_sizes,
)


def register(verbs, parents) -> None:
    """Add the ``fit`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "fit",
        parents=parents,
        help="fit a classifier, evaluate it, save model and report",
        description="Fit an image classifier on DATA, evaluate it on the validation and test "
        "parts, and save model.joblib, metrics.json, report.md, report.html (one "
        "self-contained page: metrics with bootstrap intervals, curves, activation "
        "maps, model card) and confusion_matrix.png (and learning_curves.png for "
        "--mode finetune) into --out. DATA is either one folder of images per class, "
        "which is split here (70:15:15 by default, stratified by class, near-duplicate "
        "images kept in one part), or a folder with train/, val/ and test/ "
        "sub-folders, each with one folder per class (as 'skconv split' makes).",
    )
    p.add_argument(
        "data",
        metavar="DATA",
        help="folder of class folders, or of train/val/test folders of class folders",
    )
    p.add_argument(
        "--mode",
        choices=("features", "finetune"),
        default="features",
        help="features: the pretrained network as a fixed feature extractor with "
        "a logistic-regression head (fast, works well on a few hundred "
        "images); finetune: FineTuneClassifier's defaults, the network's last "
        "layers trained further, stopping early on the validation part (minutes "
        "rather than seconds on a CPU; more accurate on BUSI) (default: features)",
    )
    p.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        metavar="NAME",
        help=f"pretrained network, see 'skconv backbones' (default: "
        f"{DEFAULT_BACKBONE}, which works offline)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="new folder for the results; must not exist or be empty (default: "
        "skconv-out/<date-time> in the current folder)",
    )
    p.add_argument(
        "--epochs",
        type=int_at_least(1),
        metavar="N",
        help="most training epochs for --mode finetune (default: "
        "FineTuneClassifier's, 15, with early stopping)",
    )
    p.add_argument(
        "--image-size",
        type=int_at_least(16),
        metavar="N",
        help="side in pixels of the square input to the network (default: the "
        "size the backbone's weights were trained at, e.g. 224)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="put the three ways side by side on one split: fixed features of every "
        "offline backbone, fine-tuning of --backbone (at most --epochs) and their "
        "ensemble; write leaderboard.csv and a leaderboard in report.md, and save the "
        "model with the best validation score (not test score)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="precision of the feature extractor for --mode features: int8 quantizes it "
        "(calibrated on the training images) and runs it on OpenVINO, about 2x faster "
        "on a CPU with VNNI; needs pip install 'skconv[openvino]' (default: fp32)",
    )
    add_split_options(p, "size when DATA is split here")
    p.set_defaults(func=run)


#: What the command says when fit_folder's recipe check fails, by the rule broken.
_USAGE = {
    "compare": "--compare fits both modes; leave out --mode.",
    "epochs": "--epochs applies to --mode finetune only; the features mode has no epochs.",
    "precision": "--precision int8 applies to --mode features without --compare; "
    "fine-tuning trains in fp32.",
    "int8_missing": "--precision int8 needs OpenVINO and NNCF, which are not installed: "
    "pip install 'skconv[openvino]'.",
}


def run(args) -> int:
    """Check the command line, run :func:`skconv.experiment.fit_folder`, print."""
    from ..experiment import RecipeError, check_recipe, fit_folder, presplit_layout

    root = existing_dir(args.data, "DATA")
    backbone = check_backbone(args.backbone)
    out = new_dir(args.out if args.out else _default_out(), "--out")
    if root.resolve() in out.resolve().parents:
        # A folder written into DATA would read as one more class on the next fit.
        raise UsageError(
            f"--out {os.fspath(out)!r} lies inside DATA {args.data!r}; choose a folder outside it."
        )
    val, test = part_sizes(args)
    try:  # the library's check, said in the command's flags
        check_recipe(args.mode, compare=args.compare, epochs=args.epochs, precision=args.precision)
    except RecipeError as exc:
        raise UsageError(_USAGE.get(exc.rule, str(exc))) from None
    given = [
        flag
        for flag, on in (
            ("--val", args.val is not None),
            ("--test", args.test is not None),
            (
                "--group-duplicates" if args.group_duplicates else "--no-group-duplicates",
                args.group_duplicates is not None,
            ),
        )
        if on
    ]
    if presplit_layout(root, what="DATA") and given:
        raise UsageError(
            f"{' and '.join(given)} apply when DATA is split here, but "
            f"{args.data!r} already has train, val and test folders."
        )

    result = fit_folder(
        root,
        out,
        mode=args.mode,
        backbone=backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        val_size=val,
        test_size=test,
        group_duplicates=group_duplicates(args),
        random_state=args.seed,
        command=shlex.join([PROG, *args.argv]),
        compare=args.compare,
        precision=args.precision,
    )
    print(f"\nWrote {os.fspath(out)}{os.sep}: {'  '.join(result.files)}")
    print(f"Predict with: {PROG} predict {os.fspath(out / 'model.joblib')} IMAGES...")
    return 0


def _default_out() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("skconv-out") / stamp
    k = 2
    while out.exists():
        out = Path("skconv-out") / f"{stamp}-{k}"
        k += 1
    return out
