"""fit_folder: a whole experiment on a folder of images (split, fit, evaluate, save)."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.utils import Bunch

from .._io import check_new_dir
from ..datasets import load_image_folder, split_error
from ..model_selection import (
    duplicate_summary,
    find_near_duplicates,
    split_report,
    train_val_test_split,
)
from ..report import (
    activation_gallery,
    bootstrap_intervals,
    classification_metrics,
    format_metrics,
    plot_curves,
    predict_with_proba,
)
from ._recipe import DEFAULT_BACKBONE, build_model, check_recipe
from ._records import _records, _save

PARTS = ("train", "val", "test")

DEFAULT_GROUP_DUPLICATES = True

#: Bootstrap resamples of the test part's metric intervals, and activation maps shown.
N_RESAMPLES = 1000

GALLERY = dict(n_right=4, n_wrong=4)


def fit_folder(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mode: str = "features",
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | None = None,
    epochs: int | None = None,
    val_size: float | int = 0.15,
    test_size: float | int = 0.15,
    group_duplicates: bool = DEFAULT_GROUP_DUPLICATES,
    random_state: int | None = 0,
    command: str | None = None,
    verbose: int = 1,
    compare: bool = False,
    precision: str = "fp32",
) -> Bunch:
    """Split an image folder, fit a classifier, evaluate it and save everything.

    This is what ``skconv fit`` runs. ``data`` is either one folder of images per class,
    split here by :func:`~skconv.model_selection.train_val_test_split` (stratified by
    class), or a folder with ``train/``, ``val/`` and ``test/`` sub-folders of class
    folders (as :func:`~skconv.datasets.split_folders` writes), used as given. The model
    is fitted on the training part and evaluated on the validation and test parts; then
    ``out`` receives ``model.joblib``, ``metrics.json``, ``report.md``, ``report.html``,
    ``confusion_matrix.png`` (of the test part) and, for ``mode="finetune"``,
    ``learning_curves.png``. ``out`` is built under a temporary name and renamed into
    place at the end, so an error or Ctrl-C leaves nothing; ``data`` is only read.

    The test part's metrics get 95 % percentile bootstrap intervals
    (:func:`~skconv.report.bootstrap_intervals`, 1000 resamples, seeded by
    ``random_state``). ``report.html`` is one self-contained page
    (:func:`~skconv.report.html_report`): the split and class balance, the
    near-duplicate groups with thumbnails, the metrics with their intervals, the
    confusion matrix, ROC, precision-recall and reliability curves, the learning
    curves, class activation maps of the test images the model was most sure of
    (right and wrong), and a model card.

    Parameters
    ----------
    data : str or path-like
        Folder of class folders, or of ``train``, ``val`` and ``test`` folders of class
        folders. Images are found as :func:`~skconv.datasets.load_image_folder` finds
        them.
    out : str or path-like
        New folder for the results. It must not exist or be empty, and must not lie in
        ``data`` (it would read as one more class on the next run).
    mode : {"features", "finetune"}, default="features"
        ``"features"``: a :class:`~skconv.ConvFeatureTransformer` as a fixed feature
        extractor before a ``LogisticRegression(max_iter=2000)`` head (fast; works well
        on a few hundred images). ``"finetune"``: a :class:`~skconv.FineTuneClassifier`
        that trains every layer, stopping early on the validation part.
    backbone : str, default="efficientnet_lite0"
        The pretrained network, a name from :func:`skconv.zoo.list_backbones`.
    image_size : int or None, default=None
        Side in pixels of the square input to the network; None uses the size the
        backbone's weights were trained at.
    epochs : int or None, default=None
        Most training epochs for ``mode="finetune"``; None keeps
        :class:`~skconv.FineTuneClassifier`'s default. Must be None for ``"features"``.
    val_size : float or int, default=0.15
        Validation part when ``data`` is split here: a fraction of each class, or a
        number of images. Not used when ``data`` is already split.
    test_size : float or int, default=0.15
        Test part when ``data`` is split here, as for ``val_size``.
    group_duplicates : bool, default=True
        When ``data`` is split here, keep groups of near-duplicate images (found by
        :func:`~skconv.model_selection.find_near_duplicates`, which reads every image
        once more: about 3 s for 780 images) in one part, so that copies cannot leak
        into the test part; the report counts the groups and warns of those holding
        more than one label. When none is found, the split is the plain stratified one.
        Not used when ``data`` is already split.
    random_state : int or None, default=0
        Seed of the split and of the training; an int gives the same result twice.
    command : str or None, default=None
        How the experiment was started (``skconv fit`` passes its command line),
        recorded in ``metrics.json`` and ``report.md``.
    verbose : int, default=1
        0 prints nothing; 1 prints the split table, a progress bar while fitting and
        the metrics of the validation and test parts.
    compare : bool, default=False
        Put the three ways side by side instead of fitting one model: fixed features
        for every offline backbone, fine-tuning (of ``backbone``, for at most
        ``epochs``) and their ensemble, by :func:`skconv.compare.compare_ways`; save
        the one with the best validation score, with ``leaderboard.csv`` and a
        leaderboard in ``report.md``. ``mode`` must stay ``"features"``.
    precision : {"fp32", "int8"}, default="fp32"
        Precision of the feature extractor (``mode="features"`` only):
        ``"int8"`` quantizes it, calibrated on the training images, and runs it on
        OpenVINO (about 2x faster on a CPU with VNNI; the ``skconv[openvino]``
        extra; see :class:`~skconv.ConvFeatureTransformer`).

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        With the keys

        model : fitted classifier
            A :class:`~sklearn.pipeline.Pipeline` (``"features"``) or a
            :class:`~skconv.FineTuneClassifier`, as saved in ``model.joblib``.
        metrics : dict
            What ``metrics.json`` holds: the split, ``grouped`` (whether near-duplicate
            groups were kept in one part), ``duplicate_groups`` (groups of two or more
            near-duplicates found; None if not searched), ``mixed_label_groups`` (the
            file names of each group holding more than one label), the model, and the
            metrics of the ``"val"`` and ``"test"`` parts (see
            :func:`skconv.report.classification_metrics`); the test part's have
            ``"intervals"`` (see :func:`skconv.report.bootstrap_intervals`).
        out : pathlib.Path
            The folder written.
        files : list of str
            The names of the files in ``out``, sorted.
        paths, target : dict of str to ndarray
            The image paths and classes of each part, keyed ``"train"``, ``"val"`` and
            ``"test"``.
        leaderboard : list of dict
            Only with ``compare=True``: the rows of ``leaderboard.csv``, as
            :func:`skconv.compare.compare_ways` returns them.

    Raises
    ------
    FileExistsError
        If ``out`` exists and is not an empty folder (checked before any work).
    ValueError
        If a parameter is invalid (an unknown ``backbone`` or ``mode``, ``epochs`` with
        ``"features"``, ``out`` inside ``data``); if ``data`` holds no images in class
        folders, a single class, only some of ``train``, ``val`` and ``test``, or
        classes in ``val`` or ``test`` that ``train`` lacks; if an image does not
        decode (the message names the file); or if the split cannot be made (the
        message names the class folder that is too small).

    See Also
    --------
    skconv.datasets.split_folders : Copy a folder into ``train``, ``val`` and ``test``.
    skconv.model_selection.train_val_test_split : The split made here.

    Examples
    --------
    >>> import tempfile
    >>> from skconv.datasets import make_ultrasound_folder
    >>> from skconv.experiment import fit_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> images = make_ultrasound_folder(tmp.name + "/us", n_per_class=8, random_state=0)
    >>> result = fit_folder(images, tmp.name + "/run", image_size=64, verbose=0)
    >>> result.files
    ['confusion_matrix.png', 'metrics.json', 'model.joblib', 'report.html', 'report.md']
    >>> result.metrics["grouped"], result.metrics["duplicate_groups"]
    (True, 0)
    >>> result.metrics["split"]["counts"]["benign"]
    {'total': 8, 'train': 5, 'val': 1, 'test': 2}
    >>> result.model.predict(result.paths["test"]).shape
    (6,)
    >>> tmp.cleanup()
    """
    check_recipe(mode, compare=compare, epochs=epochs, precision=precision)
    from ..zoo import check_backbone_name

    backbone = check_backbone_name(backbone)
    root, out = Path(data), Path(out)
    # Checked before the work, not only when renaming at the end: a fit can take hours.
    check_new_dir(out, what="out")
    if root.resolve() in out.resolve().parents:
        raise ValueError(
            f"out {os.fspath(out)!r} lies inside data {os.fspath(root)!r}; "
            "choose a folder outside it."
        )

    parts = _load_parts(
        root,
        val_size=val_size,
        test_size=test_size,
        group_duplicates=group_duplicates,
        random_state=random_state,
        verbose=verbose,
    )
    if verbose:
        print(f"Data: {os.fspath(root)} ({parts.method})\n")
        print(parts.table, end="")
    chosen = None
    if compare:
        from ._compare import choose

        chosen = choose(
            parts,
            backbone=backbone,
            image_size=image_size,
            epochs=epochs,
            random_state=random_state,
            verbose=verbose,
        )
        model, mode, fit_s = chosen.model, chosen.mode, chosen.fit_s
    else:
        model = build_model(
            mode,
            backbone,
            image_size=image_size,
            epochs=epochs,
            random_state=random_state,
            validation=(parts.paths["val"], parts.target["val"]),
            verbose=verbose,
            precision=precision,
        )
        n_train = len(parts.paths["train"])
        if verbose:
            print(f"\nFitting {mode} model on {n_train} images, backbone {backbone}:", flush=True)
        start = time.perf_counter()
        model.fit(parts.paths["train"], parts.target["train"])
        fit_s = time.perf_counter() - start

    start = time.perf_counter()
    if chosen is not None:
        predictions = chosen.predictions
    else:
        predictions = {p: predict_with_proba(model, parts.paths[p]) for p in ("val", "test")}
    eval_s = time.perf_counter() - start
    results = {
        p: classification_metrics(parts.target[p], *predictions[p], labels=model.classes_)
        for p in ("val", "test")
    }
    results["test"]["intervals"] = bootstrap_intervals(
        parts.target["test"],
        *predictions["test"],
        model.classes_,
        n_resamples=N_RESAMPLES,
        random_state=random_state,
    )
    if verbose:
        for part, title in (("val", "Validation"), ("test", "Test")):
            print(f"\n{format_metrics(results[part], title=title)}")

    metrics, report, page = _records(
        model,
        mode,
        backbone,
        parts,
        results,
        source=os.fspath(root.resolve()),
        command=command,
        random_state=random_state,
        fit_s=fit_s,
        eval_s=eval_s,
        chosen=chosen,
    )
    y_pred, proba = predictions["test"]
    if proba is not None:
        page["figures"]["ROC, precision-recall and reliability, test part"] = plot_curves(
            parts.target["test"], proba, model.classes_
        )
    page["gallery"], page["gallery_note"] = activation_gallery(
        model, parts.paths["test"], parts.target["test"], y_pred, proba, **GALLERY
    )
    if chosen is not None:
        finetuned = chosen.finetuned
    else:
        finetuned = model if mode == "finetune" else None
    leaderboard = None if chosen is None else chosen.leaderboard
    _save(out, model, metrics, report, page, results["test"], finetuned, leaderboard)
    extra = {} if chosen is None else {"leaderboard": chosen.leaderboard}
    return Bunch(
        model=model,
        metrics=metrics,
        out=out,
        files=sorted(p.name for p in out.iterdir()),
        paths=parts.paths,
        target=parts.target,
        **extra,
    )


@dataclass
class _Parts:
    """Train, validation and test parts with how they were made."""

    paths: dict  # part -> ndarray of paths
    target: dict  # part -> ndarray of labels
    method: str  # how the parts were made, for the report
    table: str = ""  # split_report's text
    counts: dict = field(default_factory=dict)  # split_report's counts
    duplicates: dict = field(default_factory=lambda: duplicate_summary([], [], None))
    groups: dict | None = None  # part -> near-duplicate groups, when split by them


def _load_parts(root: Path, *, val_size, test_size, group_duplicates, random_state, verbose):
    """The parts as given in train/val/test folders, or split here; with their table."""
    if presplit_layout(root):
        parts = _load_presplit(root)
    else:
        parts = _split_here(
            root,
            val_size=val_size,
            test_size=test_size,
            group_duplicates=group_duplicates,
            random_state=random_state,
            verbose=verbose,
        )
    buffer = io.StringIO()
    parts.counts = split_report(*(parts.target[p] for p in PARTS), file=buffer)
    parts.table = buffer.getvalue()
    return parts


def presplit_layout(root: Path, what: str = "data") -> bool:
    """Whether ``root`` holds train, val and test folders; an error if only some."""
    present = [p for p in PARTS if (root / p).is_dir()]
    if present and len(present) < len(PARTS):
        missing = [p for p in PARTS if p not in present]
        raise ValueError(
            f"{what} {os.fspath(root)!r} has {', '.join(present)} but no {', '.join(missing)} "
            "folder; give either one folder per class, or train, val and test folders."
        )
    return bool(present)


def _load_presplit(root: Path) -> _Parts:
    loaded = {part: load_image_folder(root / part) for part in PARTS}
    if len(loaded["train"].target_names) < 2:
        raise ValueError(
            f"{os.fspath(root / 'train')!r} has one class folder only; a classifier needs "
            "at least two."
        )
    known = set(loaded["train"].target_names)
    for part in ("val", "test"):
        unknown = sorted(set(loaded[part].target_names) - known)
        if unknown:
            raise ValueError(
                f"{os.fspath(root / part)!r} has classes {unknown} that "
                f"{os.fspath(root / 'train')!r} lacks; the model cannot learn "
                "them."
            )
    return _Parts(
        paths={p: loaded[p].paths for p in PARTS},
        target={p: loaded[p].target for p in PARTS},
        method=f"as given in {os.fspath(root)}/train, val and test",
    )


def _split_here(
    root: Path, *, val_size, test_size, group_duplicates, random_state, verbose
) -> _Parts:
    data = load_image_folder(root)
    if len(data.target_names) < 2:
        raise ValueError(
            f"data {os.fspath(root)!r} has one class folder only "
            f"({os.fspath(root / str(data.target_names[0]))!r}); a classifier needs at "
            "least two."
        )
    groups = None
    how = f"split here: stratified by class, val {val_size}, test {test_size}, seed {random_state}"
    if group_duplicates:
        groups = find_near_duplicates(data.paths)
        how += ", near-duplicate groups kept in one part"
    names = [Path(p).relative_to(root).as_posix() for p in data.paths]
    duplicates = duplicate_summary(data.paths, data.target, groups, names=names)
    if verbose and groups is not None:
        print(
            f"Near-duplicates: {duplicates['n_images']} of {len(groups)} images are in "
            f"{duplicates['n_groups']} groups; each group stays in one part."
        )
        for group in duplicates["mixed"]:
            print(
                "Warning: near-duplicates with different labels: "
                + ", ".join(f"{m['name']} ({m['label']})" for m in group)
            )
    try:
        parts = train_val_test_split(
            data.paths,
            data.target,
            *([] if groups is None else [groups]),
            val_size=val_size,
            test_size=test_size,
            stratify=data.target,
            groups=groups,
            random_state=random_state,
        )
    except ValueError as exc:
        raise split_error(root, data.target, exc, val_size, test_size) from exc
    return _Parts(
        paths=dict(zip(PARTS, parts[:3])),
        target=dict(zip(PARTS, parts[3:6])),
        method=how,
        duplicates=duplicates,
        groups=None if groups is None else dict(zip(PARTS, parts[6:])),
    )
