"""``skconv split SRC DST``: copy a folder of class folders into train, val and test."""

from __future__ import annotations

import csv
import os

from ._common import (
    UsageError,
    add_split_options,
    existing_dir,
    group_duplicates,
    new_dir,
    part_sizes,
)


def register(verbs, parents) -> None:
    """Add the ``split`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "split",
        parents=parents,
        help="copy an image folder into train/val/test folders",
        description="Copy SRC (one folder of images per class) into DST/train, DST/val and "
        "DST/test, each with one folder per class, stratified by class and with "
        "near-duplicate images kept in one part (unless --no-group-duplicates), and "
        "print how many images of each class went where. SRC is only read; "
        "DST/manifest.csv lists every copy.",
    )
    p.add_argument("src", metavar="SRC", help="folder with one folder of images per class")
    p.add_argument(
        "dst", metavar="DST", help="new folder for the copies (must not exist or be empty)"
    )
    add_split_options(p, "size")
    p.set_defaults(func=run)


def run(args) -> int:
    """Check SRC and DST, copy with :func:`skconv.datasets.split_folders`, print."""
    from ..datasets import split_folders

    src = existing_dir(args.src, "SRC")
    dst = new_dir(args.dst, "DST")
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real or src_real in dst_real.parents:
        raise UsageError(
            f"DST {args.dst!r} lies inside SRC {args.src!r}; choose a folder outside it."
        )
    val, test = part_sizes(args)
    grouped = group_duplicates(args)
    print(
        f"Splitting {args.src} (val {val}, test {test}, stratified by class, "
        f"seed {args.seed}{', near-duplicates kept together' if grouped else ''}):\n",
        flush=True,
    )
    split_folders(
        src,
        dst,
        val_size=val,
        test_size=test,
        random_state=args.seed,
        groups="duplicates" if grouped else None,
        verbose=True,
    )
    with open(dst / "manifest.csv", newline="", encoding="utf-8") as handle:
        n = sum(1 for _ in csv.DictReader(handle))
    print(
        f"\nCopied {n} images into {os.fspath(dst)}{os.sep}train, val and test; "
        f"{os.fspath(dst / 'manifest.csv')} lists them."
    )
    return 0
