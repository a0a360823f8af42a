"""The ``skconv`` command: split image folders, fit, evaluate, predict, list backbones.

Verbs (``skconv VERB --help`` describes each)::

    skconv split SRC DST        copy a folder of class folders into train/val/test
    skconv fit DATA             fit a classifier, evaluate it, save model and report
    skconv predict MODEL IMAGES classes and probabilities of image files
    skconv explain MODEL IMAGES heat maps of where the model looked, one PNG per image
    skconv backbones            the model zoo
    skconv demo                 the whole flow on a synthetic set, offline, in seconds

Exit status: 0 on success; 2 when the command line is wrong (an unknown option, a path
that does not exist, an unknown backbone, an output that already exists); 1 when the
work fails (an empty image folder, an image that does not decode, a split that cannot be
made). Errors are one line on stderr, ``skconv: error: ...``; ``--traceback`` shows the
Python traceback instead. Nothing is written on failure: outputs are built under a
temporary name and renamed into place at the end, and input files are only read.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__

PROG = "skconv"
PARTS = ("train", "val", "test")
DEFAULT_PART = 0.15  # of each class, for validation and for test: the reference 70:15:15
DEFAULT_BACKBONE = "efficientnet_lite0"
DEMO_PER_CLASS = 30
DEMO_IMAGE_SIZE = 128  # px of the synthetic images; the backbone resizes to its own 224


class UsageError(Exception):
    """The command line is wrong: exit status 2."""


# --------------------------------------------------------------------------- parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # argparse would print the usage and exit; main() prints one line instead.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _fraction_or_count(text: str) -> float | int:
    """A part size: a fraction in (0, 1) such as 0.15, or a number of images such as 20."""
    try:
        count = int(text)
    except ValueError:
        pass
    else:
        if count < 1:
            raise argparse.ArgumentTypeError(
                f"must be a fraction in (0, 1) or a count >= 1, got {text!r}"
            )
        return count
    try:
        fraction = float(text)
    except ValueError:
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise argparse.ArgumentTypeError(
            f"must be a fraction in (0, 1) or a count >= 1, got {text!r}"
        )
    return fraction


def _fraction_closed(text: str) -> float:
    """A number in [0, 1] such as 0.5."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _add_split_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--val",
        type=_fraction_or_count,
        metavar="SIZE",
        help=f"validation part {what}: a fraction of each class, or a number "
        "of images (default: 0.15)",
    )
    parser.add_argument(
        "--test",
        type=_fraction_or_count,
        metavar="SIZE",
        help=f"test part {what}, as for --val (default: 0.15)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed of the split and the training (default: 0, so "
        "two runs give the same result)",
    )
    parser.add_argument(
        "--group-duplicates",
        action="store_true",
        help="keep near-duplicate images (the same scan re-cropped or "
        "re-saved, found by skconv.model_selection.find_near_duplicates) "
        "in one part, so that copies cannot leak into the test part",
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``skconv`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        One sub-parser per verb; each sets ``func``, the function that runs it. Usage
        errors raise :class:`UsageError` instead of exiting.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show the Python traceback (for bug reports)",
    )

    parser = _Parser(
        prog=PROG,
        description="Transfer learning with pretrained ConvNets on folders of images.",
        epilog="Exit status: 0 success, 1 failure, 2 wrong command line. "
        "Run 'skconv VERB --help' for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="VERB", parser_class=_Parser)

    p = verbs.add_parser(
        "split",
        parents=[common],
        help="copy an image folder into train/val/test folders",
        description="Copy SRC (one folder of images per class) into DST/train, DST/val and "
        "DST/test, each with one folder per class, stratified by class, and "
        "print how many images of each class went where. SRC is only read; "
        "DST/manifest.csv lists every copy.",
    )
    p.add_argument("src", metavar="SRC", help="folder with one folder of images per class")
    p.add_argument(
        "dst", metavar="DST", help="new folder for the copies (must not exist or be empty)"
    )
    _add_split_options(p, "size")
    p.set_defaults(func=_cmd_split)

    p = verbs.add_parser(
        "fit",
        parents=[common],
        help="fit a classifier, evaluate it, save model and report",
        description="Fit an image classifier on DATA, evaluate it on the validation and test "
        "parts, and save model.joblib, metrics.json, report.md and "
        "confusion_matrix.png (and learning_curves.png for --mode finetune) into "
        "--out. DATA is either one folder of images per class, which is split "
        "here (70:15:15 by default, stratified by class), or a folder with "
        "train/, val/ and test/ sub-folders, each with one folder per class (as "
        "'skconv split' makes).",
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
        "images); finetune: train every layer, stopping early on the "
        "validation part (slower; better with more data) (default: features)",
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
        type=_int_at_least(1),
        metavar="N",
        help="most training epochs for --mode finetune (default: "
        "FineTuneClassifier's, 15, with early stopping)",
    )
    p.add_argument(
        "--image-size",
        type=_int_at_least(16),
        metavar="N",
        help="side in pixels of the square input to the network (default: the "
        "size the backbone's weights were trained at, e.g. 224)",
    )
    _add_split_options(p, "size when DATA is split here")
    p.set_defaults(func=_cmd_fit)

    p = verbs.add_parser(
        "predict",
        parents=[common],
        help="predict the class of image files",
        description="Print the predicted class and the probability of each class for each "
        "image. Only load models you trust: a .joblib file can run code when "
        "loaded.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="model.joblib written by 'skconv fit' (or the folder holding it)",
    )
    p.add_argument(
        "images",
        metavar="IMAGES",
        nargs="+",
        help="image files or folders; folders are searched recursively for "
        "image files (sorted; hidden files and *_mask* files left out)",
    )
    p.add_argument("--csv", metavar="OUT", help="also write the table to this CSV file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser(
        "explain",
        parents=[common],
        help="heat maps of where the model looked",
        description="Write one PNG per image into --out: the image with a heat map blended "
        "in of the regions that raised the score of the predicted class (or of "
        "--target), and explain.csv, which lists them. The maps are class "
        "activation maps for a 'fit --mode features' model and Grad-CAM for "
        "'--mode finetune' (skconv.explain.heatmaps). The network sees a center "
        "crop of each image; what the crop left out gets the colour of zero. "
        "Only load models you trust: a .joblib file can run code when loaded.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="model.joblib written by 'skconv fit' (or the folder holding it)",
    )
    p.add_argument(
        "images",
        metavar="IMAGES",
        nargs="+",
        help="image files or folders; folders are searched recursively for "
        "image files (sorted; hidden files and *_mask* files left out)",
    )
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
        type=_int_at_least(0),
        default=0,
        metavar="PX",
        help="also explain 8 crops shifted by PX pixels and average the maps: "
        "finer maps at 9 times the cost; about half a feature cell, e.g. "
        "16 for a 224-px input, works well (default: 0, off)",
    )
    p.add_argument(
        "--alpha",
        type=_fraction_closed,
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
    p.set_defaults(func=_cmd_explain)

    p = verbs.add_parser(
        "backbones",
        parents=[common],
        help="list the pretrained networks",
        description="List the backbones skconv can build: their source, feature size "
        "(computed for the packaged ones; '-' for others, which would have to be "
        "built), input size and whether their weights are available offline "
        "(packaged, or already in the torchvision/timm cache).",
    )
    p.add_argument(
        "pattern",
        metavar="PATTERN",
        nargs="?",
        default="*",
        help="shell-style filter on the name, e.g. 'resnet*' or 'timm/convnext*' (default: all)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="also list every pretrained timm model as timm/<name> (about 1800)",
    )
    p.set_defaults(func=_cmd_backbones)

    p = verbs.add_parser(
        "demo",
        parents=[common],
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
    p.set_defaults(func=_cmd_demo)
    return parser


# --------------------------------------------------------------------------- main


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return text or type(exc).__name__


def _close_progress_bars() -> None:
    # A bar left open by an exception would redraw over the error line; closing it ends
    # its line first.
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _fail(exc: BaseException, status: int) -> int:
    _close_progress_bars()
    print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
    return status


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # One readable line per warning instead of Python's file:line: Category: ... form.
    print(
        f"{PROG}: warning: {_one_line(message) if isinstance(message, Warning) else message}",
        file=sys.stderr if file is None else file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skconv`` command.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 1 when the work failed, 2 when the command line is wrong.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # argparse reports these from the top-level parser; name the verb's help.
            where = f"{PROG} {args.command}" if args.command else PROG
            raise UsageError(f"unrecognized arguments: {' '.join(extras)} (see '{where} --help')")
    except UsageError as exc:
        return _fail(exc, 2)
    except SystemExit as exc:  # --help and --version print and "exit" with 0
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        return _fail(
            UsageError(
                f"choose a verb: split, fit, predict, explain, backbones or demo "
                f"(see '{PROG} --help')"
            ),
            2,
        )
    args.argv = argv
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except UsageError as exc:
            return _fail(exc, 2)
        except KeyboardInterrupt:
            _close_progress_bars()
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if args.traceback:
                raise
            return _fail(exc, 1)


# --------------------------------------------------------------------------- checks


def _existing_dir(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {path!r} does not exist.")
    if not p.is_dir():
        raise UsageError(f"{what} {path!r} is not a folder.")
    return p


def _new_dir(path: str | Path, what: str) -> Path:
    from ._io import check_new_dir

    try:
        return check_new_dir(path, what=what)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None


def _check_backbone(name: str) -> str:
    from .zoo import _check_backbone_name

    try:
        return _check_backbone_name(name)
    except ValueError as exc:
        raise UsageError(f"--backbone: {exc}") from None


def _part_sizes(args) -> tuple:
    """--val and --test, defaults filled in, checked together."""
    val = DEFAULT_PART if args.val is None else args.val
    test = DEFAULT_PART if args.test is None else args.test
    if isinstance(val, float) and isinstance(test, float) and val + test >= 1:
        raise UsageError(
            f"--val {val} and --test {test} sum to {val + test:g}; they must sum "
            "to less than 1 to leave images for training."
        )
    return val, test


def _default_out() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("skconv-out") / stamp
    k = 2
    while out.exists():
        out = Path("skconv-out") / f"{stamp}-{k}"
        k += 1
    return out


# --------------------------------------------------------------------------- data


@dataclass
class _Data:
    """Train, validation and test parts with how they were made."""

    X: dict  # part -> ndarray of paths
    y: dict  # part -> ndarray of labels
    split: str  # how the parts were made, for the report
    table: str = ""  # split_report's text
    counts: dict = field(default_factory=dict)

    def report_split(self) -> None:
        from .model_selection import split_report

        buffer = io.StringIO()
        self.counts = split_report(*(self.y[p] for p in PARTS), file=buffer)
        self.table = buffer.getvalue()
        print(self.table, end="")


def _presplit_layout(root: Path) -> bool:
    present = [p for p in PARTS if (root / p).is_dir()]
    if present and len(present) < len(PARTS):
        missing = [p for p in PARTS if p not in present]
        raise ValueError(
            f"DATA {os.fspath(root)!r} has {', '.join(present)} but no {', '.join(missing)} "
            "folder; give either one folder per class, or train, val and test folders."
        )
    return bool(present)


def _load_presplit(root: Path) -> _Data:
    from .datasets import load_image_folder

    loaded = {part: load_image_folder(root / part) for part in PARTS}
    known = set(loaded["train"].target_names)
    for part in ("val", "test"):
        unknown = sorted(set(loaded[part].target_names) - known)
        if unknown:
            raise ValueError(
                f"{os.fspath(root / part)!r} has classes {unknown} that "
                f"{os.fspath(root / 'train')!r} lacks; the model cannot learn "
                "them."
            )
    return _Data(
        X={p: loaded[p].paths for p in PARTS},
        y={p: loaded[p].target for p in PARTS},
        split=f"as given in {os.fspath(root)}/train, val and test",
    )


def _split_here(root: Path, args) -> _Data:
    from .datasets import load_image_folder
    from .model_selection import find_near_duplicates, train_val_test_split

    val, test = _part_sizes(args)
    data = load_image_folder(root)
    groups = None
    how = f"split here: stratified by class, val {val}, test {test}, seed {args.seed}"
    if args.group_duplicates:
        groups = find_near_duplicates(data.paths)
        sizes = np.bincount(groups)
        n_dup = int(sizes[sizes > 1].sum())
        print(
            f"Near-duplicates: {n_dup} of {len(groups)} images are in "
            f"{int((sizes > 1).sum())} groups; each group stays in one part."
        )
        how += ", near-duplicate groups kept in one part"
    parts = train_val_test_split(
        data.paths,
        data.target,
        val_size=val,
        test_size=test,
        stratify=data.target,
        groups=groups,
        random_state=args.seed,
    )
    X = dict(zip(PARTS, parts[:3]))
    y = dict(zip(PARTS, parts[3:]))
    return _Data(X=X, y=y, split=how)


# --------------------------------------------------------------------------- fitting


def _build_model(mode: str, backbone: str, *, image_size, epochs, seed, X_val, y_val):
    if mode == "features":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        from .features import ConvFeatureTransformer

        return Pipeline(
            [
                ("features", ConvFeatureTransformer(backbone, image_size=image_size, verbose=1)),
                ("head", LogisticRegression(max_iter=2000)),
            ]
        )
    from skorch.callbacks import ProgressBar
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    from .finetune import FineTuneClassifier

    extra = {} if epochs is None else {"max_epochs": epochs}
    return FineTuneClassifier(
        backbone=backbone,
        image_size=image_size,
        # The validation part drives early stopping; the test part stays unseen.
        train_split=predefined_split(Dataset(np.asarray(X_val), np.asarray(y_val))),
        callbacks=[ProgressBar()],
        verbose=1,
        random_state=seed,
        **extra,
    )


def _describe_model(model, mode: str) -> dict:
    if mode == "features":
        features = model.named_steps["features"]
        return {
            "mode": "features",
            "backbone": features.backbone_,
            "image_size": features.preprocessing_.image_size,
            "n_features": features.n_features_out_,
            "head": "LogisticRegression(max_iter=2000)",
        }
    history = model.history
    return {
        "mode": "finetune",
        "backbone": model.module_.backbone_identity,
        "image_size": model.preprocessing_.image_size,
        "epochs_run": len(history),
        "best_valid_loss": min(
            (h["valid_loss"] for h in history if "valid_loss" in h), default=None
        ),
    }


def _fit_evaluate_save(
    data: _Data,
    *,
    mode: str,
    backbone: str,
    out: Path,
    image_size=None,
    epochs=None,
    seed=0,
    source: str = "",
    command: str = "",
    temporary: bool = False,
) -> Any:
    """Fit, evaluate on val and test, print the results, write everything into ``out``."""
    from ._io import atomic_dir, dump_joblib, write_json, write_text
    from .report import evaluate, format_metrics, markdown_report, plot_confusion_matrix

    model = _build_model(
        mode,
        backbone,
        image_size=image_size,
        epochs=epochs,
        seed=seed,
        X_val=data.X["val"],
        y_val=data.y["val"],
    )
    n_train = len(data.X["train"])
    print(f"\nFitting {mode} model on {n_train} images, backbone {backbone}:", flush=True)
    start = time.perf_counter()
    model.fit(data.X["train"], data.y["train"])
    fit_s = time.perf_counter() - start

    start = time.perf_counter()
    results = {part: evaluate(model, data.X[part], data.y[part]) for part in ("val", "test")}
    eval_s = time.perf_counter() - start
    for part, title in (("val", "Validation"), ("test", "Test")):
        print(f"\n{format_metrics(results[part], title=title)}")

    description = _describe_model(model, mode)
    details = {
        "data": source,
        "split": data.split,
        "mode": mode,
        "backbone": f"{description['backbone']['name']} (weights "
        f"{description['backbone']['weights']})",
        "input size": f"{description['image_size']} px",
        "classes": ", ".join(map(str, model.classes_)),
        "fit time": f"{fit_s:.1f} s on {n_train} images",
        "skconv": __version__,
    }
    if command:
        details = {"command": f"`{command}`", **details}
    if mode == "finetune":
        details["note"] = (
            "the validation part chose the epoch kept (early stopping), so its "
            "numbers are optimistic; the test part was not seen in training"
        )
    figures = {"Confusion matrix, test part": "confusion_matrix.png"}
    if mode == "finetune":
        figures["Learning curves"] = "learning_curves.png"
    metrics = {
        "skconv_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "data": source,
        "split": {"method": data.split, "seed": seed, "counts": data.counts},
        "model": description,
        "classes": [str(c) for c in model.classes_],
        "val": results["val"],
        "test": results["test"],
        "timing_s": {"fit": round(fit_s, 3), "evaluate": round(eval_s, 3)},
    }
    report = markdown_report(
        {"Validation": results["val"], "Test": results["test"]},
        title=f"skconv {mode} model: {backbone}",
        details=details,
        split_table=data.table,
        figures=figures,
    )

    with atomic_dir(out, what="--out") as staging:
        dump_joblib(model, staging / "model.joblib")
        write_json(staging / "metrics.json", metrics)
        write_text(staging / "report.md", report)
        test = results["test"]
        plot_confusion_matrix(
            test["confusion_matrix"],
            test["labels"],
            staging / "confusion_matrix.png",
            title=f"Test part ({test['n_samples']} images)",
        )
        if mode == "finetune":
            from .report import plot_learning_curves

            plot_learning_curves(model, staging / "learning_curves.png")
    written = "  ".join(sorted(p.name for p in out.iterdir()))
    if temporary:
        print(f"\nWrote {written} to a temporary folder (--out DIR keeps them).")
    else:
        print(f"\nWrote {os.fspath(out)}{os.sep}: {written}")
    return model


# --------------------------------------------------------------------------- verbs


def _cmd_split(args) -> int:
    from .datasets import split_folders

    src = _existing_dir(args.src, "SRC")
    dst = _new_dir(args.dst, "DST")
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real or src_real in dst_real.parents:
        raise UsageError(
            f"DST {args.dst!r} lies inside SRC {args.src!r}; choose a folder outside it."
        )
    val, test = _part_sizes(args)
    grouped = ", near-duplicates kept together" if args.group_duplicates else ""
    print(
        f"Splitting {args.src} (val {val}, test {test}, stratified by class, "
        f"seed {args.seed}{grouped}):\n",
        flush=True,
    )
    split_folders(
        src,
        dst,
        val_size=val,
        test_size=test,
        random_state=args.seed,
        groups="duplicates" if args.group_duplicates else None,
        verbose=True,
    )
    with open(dst / "manifest.csv", newline="", encoding="utf-8") as handle:
        n = sum(1 for _ in csv.DictReader(handle))
    print(
        f"\nCopied {n} images into {os.fspath(dst)}{os.sep}train, val and test; "
        f"{os.fspath(dst / 'manifest.csv')} lists them."
    )
    return 0


def _cmd_fit(args) -> int:
    root = _existing_dir(args.data, "DATA")
    backbone = _check_backbone(args.backbone)
    out = _new_dir(args.out if args.out else _default_out(), "--out")
    if root.resolve() in out.resolve().parents:
        # A folder written into DATA would read as one more class on the next fit.
        raise UsageError(
            f"--out {os.fspath(out)!r} lies inside DATA {args.data!r}; choose a folder outside it."
        )
    _part_sizes(args)
    if args.epochs is not None and args.mode != "finetune":
        raise UsageError(
            "--epochs applies to --mode finetune only; the features mode has no epochs."
        )
    presplit = _presplit_layout(root)
    given = [
        flag
        for flag, on in (
            ("--val", args.val is not None),
            ("--test", args.test is not None),
            ("--group-duplicates", args.group_duplicates),
        )
        if on
    ]
    if presplit and given:
        raise UsageError(
            f"{' and '.join(given)} apply when DATA is split here, but "
            f"{args.data!r} already has train, val and test folders."
        )

    data = _load_presplit(root) if presplit else _split_here(root, args)
    print(f"Data: {os.fspath(root)} ({data.split})\n")
    data.report_split()
    command = shlex.join([PROG, *args.argv])
    _fit_evaluate_save(
        data,
        mode=args.mode,
        backbone=backbone,
        out=out,
        image_size=args.image_size,
        epochs=args.epochs,
        seed=args.seed,
        source=os.fspath(root.resolve()),
        command=command,
    )
    print(f"Predict with: {PROG} predict {os.fspath(out / 'model.joblib')} IMAGES...")
    return 0


def _expand_images(items: Sequence[str]) -> list[str]:
    from .datasets import _is_image_file

    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            files.append(item)
        elif path.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found += [os.path.join(dirpath, f) for f in filenames if _is_image_file(f)]
            if not found:
                raise ValueError(f"IMAGES folder {item!r} holds no image files.")
            files += sorted(found)
        else:
            raise UsageError(f"IMAGES {item!r} does not exist.")
    return files


def _model_file(model: str) -> Path:
    """MODEL as given: a model file, or a ``skconv fit`` output folder holding model.joblib."""
    path = Path(model)
    if path.is_dir():
        path = path / "model.joblib"
    if not path.is_file():
        raise UsageError(f"MODEL {os.fspath(path)!r} does not exist.")
    return path


def _load_model(path: Path):
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:
        raise ValueError(f"Cannot load MODEL {os.fspath(path)!r}: {_one_line(exc)}") from exc
    if not (hasattr(model, "predict") and hasattr(model, "classes_")):
        raise ValueError(
            f"MODEL {os.fspath(path)!r} holds a {type(model).__name__}, not a fitted classifier."
        )
    return model


def _cmd_predict(args) -> int:
    from .report import predict_with_proba, text_table

    model_path = _model_file(args.model)
    files = _expand_images(args.images)
    csv_path = Path(args.csv) if args.csv else None
    if csv_path is not None:
        if csv_path.exists() and not args.overwrite:
            raise UsageError(f"--csv {args.csv!r} exists; pass --overwrite to replace it.")
        if not csv_path.resolve().parent.is_dir():
            raise UsageError(
                f"--csv {args.csv!r}: the folder {os.fspath(csv_path.parent)!r} does not exist."
            )

    model = _load_model(model_path)
    classes = [str(c) for c in model.classes_]
    y_pred, proba = predict_with_proba(model, np.asarray(files))
    header = ["file", "class"] + ([] if proba is None else classes)
    rows = [
        [f, str(c)] + ([] if proba is None else [f"{p:.3f}" for p in probs])
        for f, c, probs in zip(files, y_pred, proba if proba is not None else y_pred)
    ]
    print("\n".join(text_table(header, rows)))

    if csv_path is not None:
        from ._io import atomic_write

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


EXPLAIN_CHUNK = 16  # images explained and written at a time: memory stays flat


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


def _cmd_explain(args) -> int:
    import matplotlib

    from ._io import atomic_dir, atomic_write
    from .explain import _explainer, heatmaps, overlay
    from .report import text_table

    model_path = _model_file(args.model)
    if args.colormap not in matplotlib.colormaps:
        raise UsageError(
            f"--colormap {args.colormap!r} is not a matplotlib colormap; try "
            "jet, inferno or viridis."
        )
    files = _expand_images(args.images)
    out = _new_dir(args.out, "--out")

    model = _load_model(model_path)
    try:
        _explainer(model)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"MODEL {os.fspath(model_path)!r}: {_one_line(exc)}") from None
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


def _feature_size(name: str) -> int:
    import torch

    from .zoo import FINAL_STAGE, load_backbone

    # On the meta device only shapes are computed: no weights are read or initialised.
    with torch.device("meta"):
        module = load_backbone(name, weights=None).module
        (final,) = module(torch.zeros(1, 3, 64, 64), [FINAL_STAGE])
    return int(final.shape[1])


def _input_size(info) -> str:
    from . import zoo

    try:
        if info.source == "packaged":
            return str(zoo._PACKAGED[info.name].preprocessing.image_size)
        if info.source == "torchvision":
            import torchvision.models as tvm

            return str(tvm.get_model_weights(info.name).DEFAULT.transforms().crop_size[0])
        import timm

        cfg = timm.models.get_pretrained_cfg(info.weights)
        return str(cfg.input_size[-1]) if cfg is not None else "-"
    except Exception:  # a listing must not fail on one entry's metadata
        return "-"


def _cmd_backbones(args) -> int:
    from .report import text_table
    from .zoo import list_backbones

    infos = list_backbones(args.pattern, include_timm=args.all)
    if not infos:
        raise UsageError(
            f"no backbone matches PATTERN {args.pattern!r}; try 'skconv "
            "backbones' for the list, or --all to include timm models."
        )
    rows = []
    for info in infos:
        features = str(_feature_size(info.name)) if info.source == "packaged" else "-"
        rows.append(
            [
                info.name,
                info.source,
                features,
                _input_size(info),
                "yes" if info.available_offline else "no",
            ]
        )
    print("\n".join(text_table(["name", "source", "features", "input", "offline"], rows)))
    n_offline = sum(info.available_offline for info in infos)
    print(
        f"\n{len(infos)} backbone(s), {n_offline} available offline (packaged weights or in "
        "the local cache); others download their weights on first use."
    )
    if not args.all and not args.pattern.startswith("timm/"):
        import timm

        print(
            f"Not listed: {len(timm.list_models(pretrained=True))} timm models "
            "(skconv backbones --all, or a pattern such as 'timm/convnext*')."
        )
    return 0


def _cmd_demo(args) -> int:
    import joblib

    from .datasets import make_ultrasound_folder, split_folders
    from .report import predict_with_proba, text_table

    start = time.perf_counter()
    out = _new_dir(args.out, "--out") if args.out else None
    with tempfile.TemporaryDirectory(prefix="skconv-demo-") as tmp:
        tmp = Path(tmp)
        print(
            f"skconv demo: {DEMO_PER_CLASS} synthetic ultrasound-like images per class, "
            f"{DEMO_IMAGE_SIZE} px (speckle on tissue layers; normal: no lesion, benign: a "
            "smooth oval, malignant: an irregular dark lesion), in a temporary folder.",
            flush=True,
        )
        src = make_ultrasound_folder(
            tmp / "images",
            n_per_class=DEMO_PER_CLASS,
            image_size=DEMO_IMAGE_SIZE,
            random_state=args.seed,
        )
        print("\nSplit 70:15:15, stratified by class (as 'skconv split' does):\n", flush=True)
        split_dir = split_folders(src, tmp / "split", random_state=args.seed, verbose=False)
        data = _load_presplit(split_dir)
        data.split = f"synthetic, split 70:15:15 stratified by class, seed {args.seed}"
        data.report_split()

        model_dir = out if out is not None else tmp / "model"
        _fit_evaluate_save(
            data,
            mode="features",
            backbone=DEFAULT_BACKBONE,
            out=model_dir,
            seed=args.seed,
            source="synthetic (skconv.datasets.make_ultrasound_folder)",
            command="skconv demo",
            temporary=out is None,
        )

        model = joblib.load(model_dir / "model.joblib")
        # One test image of each class, so that the three predictions differ.
        picks = [
            data.X["test"][np.flatnonzero(data.y["test"] == c)[0]]
            for c in np.unique(data.y["test"])
        ][:3]
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
