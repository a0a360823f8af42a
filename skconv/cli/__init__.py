"""The ``skconv`` command: split image folders, fit, evaluate, predict, list backbones.

Verbs (``skconv VERB --help`` describes each)::

    skconv split SRC DST        copy a folder of class folders into train/val/test
    skconv fit DATA             fit a classifier, evaluate it, save model and report
    skconv predict MODEL IMAGES classes and probabilities of image files
    skconv explain MODEL IMAGES heat maps of where the model looked, one PNG per image
    skconv export MODEL OUT     the model as one ONNX file, which predicts without torch
    skconv backbones            the model zoo
    skconv demo                 the whole flow on a synthetic set, offline, in seconds

Exit status: 0 on success; 2 when the command line is wrong (an unknown option, a path
that does not exist, an unknown backbone, an output that already exists); 1 when the
work fails (an empty image folder, an image that does not decode, a split that cannot be
made); 130 on Ctrl-C. Errors are one line on stderr, ``skconv: error: ...``;
``--traceback`` shows the Python traceback instead. Nothing is written on failure:
outputs are built under a temporary name and renamed into place at the end, and input
files are only read.

Each verb is a module of this package with ``register`` (its sub-parser) and ``run``
(parse, check, call the library, print); the work itself is in library functions that
Python users call directly, such as :func:`skconv.experiment.fit_folder` and
:func:`skconv.datasets.split_folders`. The verb modules are the command's parts, not an
API.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from .. import __version__
from ..engine import reuse_freed_memory
from . import backbones, demo, explain, export, fit, predict, split
from ._common import PROG, Parser, UsageError, close_progress_bars, fail, show_warning

__all__ = ["main", "build_parser", "UsageError"]

VERBS = (split, fit, predict, explain, export, backbones, demo)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``skconv`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        One sub-parser per verb; each sets ``func``, the function that runs it. Usage
        errors raise :class:`UsageError` instead of exiting.

    Examples
    --------
    >>> from skconv.cli import build_parser
    >>> args = build_parser().parse_args(["fit", "busi/", "--mode", "finetune"])
    >>> args.command, args.data, args.mode, args.backbone
    ('fit', 'busi/', 'finetune', 'efficientnet_lite0')
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show the Python traceback (for bug reports)",
    )

    parser = Parser(
        prog=PROG,
        description="Transfer learning with pretrained ConvNets on folders of images.",
        epilog="Exit status: 0 success, 1 failure, 2 wrong command line. "
        "Run 'skconv VERB --help' for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="VERB", parser_class=Parser)
    for verb in VERBS:
        verb.register(verbs, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skconv`` command.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``, as the
        ``skconv`` command does, and then also calls
        :func:`skconv.engine.reuse_freed_memory` (the process is the command's own).

    Returns
    -------
    status : int
        0 on success, 1 when the work failed, 2 when the command line is wrong, 130
        when interrupted (Ctrl-C).

    Examples
    --------
    >>> import tempfile
    >>> from skconv.cli import main
    >>> from skconv.datasets import make_ultrasound_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> src = make_ultrasound_folder(tmp.name + "/us", n_per_class=5, random_state=0)
    >>> main(["split", str(src), tmp.name + "/split"])  # doctest: +ELLIPSIS
    Splitting .../us (val 0.15, test 0.15, stratified by class, seed 0, near-duplicates ...):
    ...
    Copied 15 images into .../split/train, val and test; .../split/manifest.csv lists them.
    0
    >>> main(["split", str(src), tmp.name + "/split"])  # the same DST again: refused
    2
    >>> tmp.cleanup()
    """
    if argv is None:
        # Run as the skconv command, this process is ours: keep freed memory for reuse,
        # about twice as fast for torch on a CPU (skconv.engine.memory).
        reuse_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # argparse reports these from the top-level parser; name the verb's help.
            where = f"{PROG} {args.command}" if args.command else PROG
            raise UsageError(f"unrecognized arguments: {' '.join(extras)} (see '{where} --help')")
    except UsageError as exc:
        return fail(exc, 2)
    except SystemExit as exc:  # --help and --version print and "exit" with 0
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        return fail(
            UsageError(
                f"choose a verb: split, fit, predict, explain, export, backbones or demo "
                f"(see '{PROG} --help')"
            ),
            2,
        )
    args.argv = argv
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            return int(args.func(args) or 0)
        except UsageError as exc:
            return fail(exc, 2)
        except KeyboardInterrupt:
            close_progress_bars()
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if args.traceback:
                raise
            return fail(exc, 1)
