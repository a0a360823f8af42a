"""``skconv export MODEL OUT.onnx``: a fitted model as one ONNX file."""

from __future__ import annotations

import os

from ._common import UsageError, load_model, model_file, new_file


def register(verbs, parents) -> None:
    """Add the ``export`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "export",
        parents=parents,
        help="write a fitted model as one ONNX file",
        description="Write MODEL as one ONNX file (skconv.export_onnx): uint8 RGB pixels of "
        "the center crop in, the class and the class probabilities out, with the class "
        "names and the preprocessing in its metadata. 'skconv predict OUT.onnx IMAGES' and "
        "skconv.export.OnnxClassifier run it with onnxruntime, NumPy and Pillow alone. The "
        "graph is checked against MODEL on random images before the file is written. Only "
        "load models you trust: a .joblib file can run code when loaded.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="model.joblib written by 'skconv fit' (or the folder holding it)",
    )
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    """Check the paths, load MODEL, export it, say what was written."""
    from ..export import OnnxClassifier, export_onnx

    model_path = model_file(args.model)
    if not args.out.lower().endswith(".onnx"):
        raise UsageError(f"OUT {args.out!r} must end in .onnx.")
    out = new_file(args.out, "OUT", args.overwrite)
    model = load_model(model_path)
    print(f"Exporting {os.fspath(model_path)} to ONNX...", flush=True)
    export_onnx(model, out, overwrite=args.overwrite)
    exported = OnnxClassifier(out)
    size = exported.preprocessing_.image_size
    print(
        f"Wrote {os.fspath(out)} ({out.stat().st_size / 1e6:.1f} MB): input uint8 RGB "
        f"(n, {size}, {size}, 3); outputs label and {exported.scores_name_}; classes "
        f"{', '.join(map(str, exported.classes_))}.\n"
        f"Predict with: skconv predict {os.fspath(out)} IMAGES..."
    )
    return 0
