"""What the tests of the ``skconv`` command share (imported as ``bad_inputs`` is)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import joblib
from PIL import Image

from skconv.cli import main

# Packaged, offline and the fastest on a CPU; the tests check the command, not accuracy.
BACKBONE = "squeezenet1_1_caffe"
FIT_FILES = ["confusion_matrix.png", "metrics.json", "model.joblib", "report.html", "report.md"]
# Random weights at 32 px, for the explain tests: the command is under test, not the model.
TINY = dict(backbone="resnet18", weights=None, image_size=32)


def tree(root: Path) -> dict:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(*argv) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def tiny_model(images: Path, path: Path) -> Path:
    """A fitted feature pipeline on ``images`` saved at ``path``, in a second or so."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from skconv import ConvFeatureTransformer
    from skconv.datasets import load_image_folder

    data = load_image_folder(images)
    # Packaged weights at 32 px: faster to fit and to load than TINY's random resnet18.
    features = ConvFeatureTransformer(BACKBONE, image_size=32)
    clf = make_pipeline(features, LogisticRegression(max_iter=500))
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(clf.fit(data.paths, data.target), path)
    return path


def assert_valid_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(path) as image:
        assert min(image.size) >= 100
