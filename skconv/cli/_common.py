"""What the verbs share: option types, usage errors, checks of paths, error lines.

A check that fails because of the command line raises :class:`UsageError` (exit status
2); any other exception is a failure of the work (status 1). Messages name the option
or argument as the user typed it (``--out``, ``DATA``), unlike the library's, which
name parameters.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ..experiment import DEFAULT_GROUP_DUPLICATES

PROG = "skconv"
DEFAULT_PART = 0.15  # of each class, for validation and for test: the reference 70:15:15


class UsageError(Exception):
    """The command line is wrong: exit status 2."""


# --------------------------------------------------------------------------- parsing


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # argparse would print the usage and exit; main() prints one line instead.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def fraction_or_count(text: str) -> float | int:
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


def fraction_closed(text: str) -> float:
    """A number in [0, 1] such as 0.5."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def int_at_least(low: int):
    """An option type: an integer >= ``low``."""

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


def add_split_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--val, --test, --seed and --group-duplicates, as split and fit take them."""
    parser.add_argument(
        "--val",
        type=fraction_or_count,
        metavar="SIZE",
        help=f"validation part {what}: a fraction of each class, or a number "
        "of images (default: 0.15)",
    )
    parser.add_argument(
        "--test",
        type=fraction_or_count,
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
    # Both forms, and None when neither is given, so that the default can change in
    # one place (skconv.experiment) and fit can tell a given option from the default.
    parser.add_argument(
        "--group-duplicates",
        action=argparse.BooleanOptionalAction,
        help="keep near-duplicate images (the same scan re-cropped or "
        "re-saved, found by skconv.model_selection.find_near_duplicates) "
        "in one part, so that copies cannot leak into the test part "
        f"(default: {'on' if DEFAULT_GROUP_DUPLICATES else 'off'})",
    )


def group_duplicates(args) -> bool:
    """--group-duplicates or --no-group-duplicates as given, else the default."""
    return DEFAULT_GROUP_DUPLICATES if args.group_duplicates is None else args.group_duplicates


def part_sizes(args) -> tuple:
    """--val and --test, defaults filled in, checked together."""
    val = DEFAULT_PART if args.val is None else args.val
    test = DEFAULT_PART if args.test is None else args.test
    if isinstance(val, float) and isinstance(test, float) and val + test >= 1:
        raise UsageError(
            f"--val {val} and --test {test} sum to {val + test:g}; they must sum "
            "to less than 1 to leave images for training."
        )
    return val, test


# --------------------------------------------------------------------------- checks


def existing_dir(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {path!r} does not exist.")
    if not p.is_dir():
        raise UsageError(f"{what} {path!r} is not a folder.")
    return p


def new_dir(path: str | Path, what: str) -> Path:
    from .._io import check_new_dir

    try:
        return check_new_dir(path, what=what)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None


def check_backbone(name: str) -> str:
    from ..zoo import check_backbone_name

    try:
        return check_backbone_name(name)
    except ValueError as exc:
        raise UsageError(f"--backbone: {exc}") from None


def expand_images(items: Sequence[str]) -> list[str]:
    """IMAGES: files as given, folders expanded to their image files, sorted."""
    from ..datasets import image_files

    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            files.append(item)
        elif path.is_dir():
            found = image_files(path)
            if not found:
                raise ValueError(f"IMAGES folder {item!r} holds no image files.")
            files += found
        else:
            raise UsageError(f"IMAGES {item!r} does not exist.")
    return files


def new_file(path: str, what: str, overwrite: bool) -> Path:
    """An output file: refused if it exists (unless ``overwrite``) or its folder does not."""
    out = Path(path)
    if out.exists() and not overwrite:
        raise UsageError(f"{what} {path!r} exists; pass --overwrite to replace it.")
    if not out.resolve().parent.is_dir():
        raise UsageError(f"{what} {path!r}: the folder {os.fspath(out.parent)!r} does not exist.")
    return out


def add_model_and_images(parser: argparse.ArgumentParser, *, onnx: bool) -> None:
    """The MODEL and IMAGES arguments of the verbs that apply a model to image files."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="model.joblib written by 'skconv fit' (or the folder holding it)"
        + (", or a .onnx file written by 'skconv export'" if onnx else ""),
    )
    parser.add_argument(
        "images",
        metavar="IMAGES",
        nargs="+",
        help="image files or folders; folders are searched recursively for "
        "image files (sorted; hidden files and *_mask* files left out)",
    )


def model_file(model: str) -> Path:
    """MODEL as given: a model file, or a ``skconv fit`` output folder holding model.joblib."""
    path = Path(model)
    if path.is_dir():
        path = path / "model.joblib"
    if not path.is_file():
        raise UsageError(f"MODEL {os.fspath(path)!r} does not exist.")
    return path


def load_model(path: Path):
    """A fitted classifier from ``model.joblib``, or an exported ``.onnx`` file.

    An ONNX file is run by :class:`skconv.export.OnnxClassifier`, which imports neither
    torch nor skorch: a deployed model needs onnxruntime, NumPy and Pillow only.
    """
    if path.suffix.lower() == ".onnx":
        from ..export import OnnxClassifier

        try:
            return OnnxClassifier(path)
        except ValueError as exc:
            raise ValueError(f"Cannot load MODEL {os.fspath(path)!r}: {one_line(exc)}") from exc
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:
        raise ValueError(f"Cannot load MODEL {os.fspath(path)!r}: {one_line(exc)}") from exc
    if not (hasattr(model, "predict") and hasattr(model, "classes_")):
        raise ValueError(
            f"MODEL {os.fspath(path)!r} holds a {type(model).__name__}, not a fitted classifier."
        )
    return model


# --------------------------------------------------------------------------- errors


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return text or type(exc).__name__


def close_progress_bars() -> None:
    # A bar left open by an exception would redraw over the error line; closing it ends
    # its line first.
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def fail(exc: BaseException, status: int) -> int:
    """Print ``exc`` as one error line and return the exit status."""
    close_progress_bars()
    print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
    return status


def show_warning(message, category, filename, lineno, file=None, line=None):
    # One readable line per warning instead of Python's file:line: Category: ... form.
    print(
        f"{PROG}: warning: {one_line(message) if isinstance(message, Warning) else message}",
        file=sys.stderr if file is None else file,
    )
