"""Image folders on disk and a synthetic ultrasound-like data set.

``load_image_folder`` reads the common one-folder-per-class layout lazily (paths and
labels, nothing decoded), ``split_folders`` copies such a folder into
``train/val/test`` sub-trees, and ``make_ultrasound`` / ``make_ultrasound_folder`` make a
small deterministic stand-in for breast ultrasound data for demos and tests.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._io import atomic_dir, refuse_non_empty
from .images import ImageLoadError, is_dicom, load_image
from .model_selection import find_near_duplicates, split_report, train_val_test_split

__all__ = ["load_image_folder", "split_folders", "make_ultrasound", "make_ultrasound_folder"]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
)
MASK_PATTERN = "*_mask*"


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def _is_image_file(name: str, folder: str | os.PathLike | None = None) -> bool:
    if name.startswith(".") or fnmatch.fnmatch(name.lower(), MASK_PATTERN):
        return False
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    # DICOM by name or by content: scanners and PACS exports write files without an
    # extension (or with a UID's digits after a dot). DICOMDIR indexes files, it is
    # not an image.
    return (
        folder is not None and name.upper() != "DICOMDIR" and is_dicom(os.path.join(folder, name))
    )


def image_files(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder``, recursively, sorted as strings.

    The one walker of image folders (``load_image_folder`` and the command line's IMAGES
    use it): hidden files and folders, masks and files that are neither named as an
    image nor DICOM by content are left out. Paths are ``os.path.join(folder, ...)``,
    so they keep the form ``folder`` was given in (relative stays relative).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # pruned, not entered
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image_file(f, dirpath))
    return sorted(found)


def _decode_error(path: Path) -> str | None:
    """Why ``path`` does not decode as the estimators would read it, or None if it does."""
    # A full decode, not PIL's verify(): verify() passes truncated JPEGs and bombs.
    try:
        load_image(os.fspath(path))
    except ImageLoadError as exc:
        return str(exc)
    return None


def load_image_folder(path: str | os.PathLike, on_error: str = "raise") -> Bunch:
    """Load the paths and labels of an image folder with one sub-folder per class.

    Nothing is decoded unless ``on_error="skip"``: the result holds file paths, which
    every skconv estimator accepts as ``X``. Sub-folders of a class folder are searched
    too. Images are files with an image extension (png, jpg, jpeg, bmp, tif, tiff, gif,
    webp, dcm, dicom) and DICOM files by content (the ``DICM`` marker, so the
    extension-less files scanners write count). Hidden files and folders, masks (file
    names matching ``*_mask*``) and other files are left out.

    Parameters
    ----------
    path : str or path-like
        The folder that holds one folder per class, e.g. ``busi/`` with ``benign/``,
        ``malignant/`` and ``normal/``.
    on_error : {"raise", "skip"}, default="raise"
        What to do with files that do not decode. ``"raise"`` checks nothing here, so
        loading stays instant; a bad file raises an error naming it when it is read.
        ``"skip"`` decodes every file now, as the estimators would, leaves out those
        that fail, lists them in ``skipped`` and warns with the reasons.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With the keys

        paths : ndarray of str, shape (n_samples,)
            File paths, sorted by class and then by path; deterministic.
        target : ndarray of str, shape (n_samples,)
            The class (folder name) of each file.
        target_names : list of str
            The classes, sorted.
        skipped : list of str
            Files left out because they did not decode (always empty with
            ``on_error="raise"``).

    Raises
    ------
    ValueError
        If ``path`` does not exist, is not a folder, is empty, or holds no images in
        class folders; or if ``on_error`` is not one of the allowed values.

    Examples
    --------
    >>> import tempfile
    >>> from skconv.datasets import load_image_folder, make_ultrasound_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = make_ultrasound_folder(tmp.name + "/us", n_per_class=2, random_state=0)
    >>> data = load_image_folder(root)
    >>> data.target_names
    ['benign', 'malignant', 'normal']
    >>> [Path(p).name for p in data.paths[:2]], data.target[:2].tolist()
    (['benign_001.png', 'benign_002.png'], ['benign', 'benign'])
    >>> tmp.cleanup()
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    root = Path(path)
    if not root.exists():
        raise ValueError(f"Image folder {os.fspath(path)!r} does not exist.")
    if not root.is_dir():
        raise ValueError(f"Image folder {os.fspath(path)!r} is not a folder.")
    entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    if not entries:
        raise ValueError(
            f"Image folder {os.fspath(path)!r} is empty; expected one folder of images per class."
        )

    paths, target = [], []
    for class_dir in (e for e in entries if e.is_dir()):
        # Sorted as paths (component by component), not as strings: the order, and so
        # every seeded split of it, must not change between versions.
        files = sorted(map(Path, image_files(class_dir)))
        if not files:
            warnings.warn(
                f"Folder {os.fspath(class_dir)!r} holds no images; it is not used as a class.",
                UserWarning,
                stacklevel=2,
            )
        paths.extend(files)
        target.extend([class_dir.name] * len(files))
    if not paths:
        loose = [e.name for e in entries if e.is_file() and _is_image_file(e.name, root)]
        hint = (
            f" It holds {len(loose)} image(s) directly, but images must sit in one "
            "folder per class."
            if loose
            else ""
        )
        raise ValueError(
            f"Image folder {os.fspath(path)!r} holds no images in class folders.{hint}"
        )

    skipped = []
    if on_error == "skip":
        errors = [_decode_error(p) for p in paths]
        skipped = [os.fspath(p) for p, error in zip(paths, errors) if error]
        paths = [p for p, error in zip(paths, errors) if not error]
        target = [t for t, error in zip(target, errors) if not error]
        if skipped:
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            shown = " ".join([e for e in errors if e][:5])  # each names its file
            warnings.warn(
                f"Skipped {len(skipped)} file(s) that could not be decoded: {shown}{more}",
                UserWarning,
                stacklevel=2,
            )
        if not paths:
            raise ValueError(f"Image folder {os.fspath(path)!r} holds no image that decodes.")

    return Bunch(
        paths=np.array([os.fspath(p) for p in paths], dtype=str),
        target=np.array(target, dtype=str),
        target_names=sorted(set(target)),
        skipped=skipped,
    )


def split_error(root: Path, target, exc: ValueError, val_size, test_size) -> ValueError:
    """The split's error in the terms of the folder: which class folders are too small."""
    classes, counts = np.unique(target, return_counts=True)
    small = [(c, n) for c, n in zip(classes.tolist(), counts) if f"class {c!r} has" in str(exc)]
    if not small:
        return ValueError(f"Cannot split {os.fspath(root)!r}: {exc}")
    folders = ", ".join(
        f"{os.fspath(root / c)!r} has {n} image{'s' if n != 1 else ''}" for c, n in small
    )
    return ValueError(
        f"Cannot split {os.fspath(root)!r}: class folder {folders}, too few for at "
        f"least one image in each of train, val ({val_size}) and test ({test_size}); add "
        "images to it, or move it out of the data folder."
    )


def split_folders(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    val_size: float | int = 0.15,
    test_size: float | int = 0.15,
    random_state=None,
    groups=None,
    verbose: bool = True,
) -> Path:
    """Copy an image folder into stratified ``train``, ``val`` and ``test`` folders.

    Files are copied (``shutil.copy2``, never moved) to
    ``dst/<part>/<class>/<path within the class folder>``, with the split of
    :func:`~skconv.model_selection.train_val_test_split` stratified by class. ``src`` is
    only read. The tree is built in a hidden sibling folder of ``dst`` and renamed into
    place when complete (``skconv._io.atomic_dir``), so a failed or interrupted
    copy leaves no half-written ``dst``.
    ``dst/manifest.csv`` lists every copy with the columns ``part``, ``class``,
    ``source`` (absolute path) and ``destination`` (relative to ``dst``).

    Parameters
    ----------
    src : str or path-like
        Folder with one folder per class, as read by :func:`load_image_folder`.
    dst : str or path-like
        Destination folder. It must not exist or be empty; it must not lie in ``src``.
    val_size : float or int, default=0.15
        Fraction of each class (or number of images) for validation.
    test_size : float or int, default=0.15
        Fraction of each class (or number of images) for test.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffling; pass an int for a reproducible split.
    groups : None, "duplicates" or array-like of shape (n_images,), default=None
        Keep groups of images in one part. ``"duplicates"`` computes them with
        :func:`~skconv.model_selection.find_near_duplicates` (default threshold); an
        array gives one label per image in the order of ``load_image_folder(src).paths``.
    verbose : bool, default=True
        Print :func:`~skconv.model_selection.split_report` when done.

    Returns
    -------
    dst : pathlib.Path
        The destination folder; read ``dst / "manifest.csv"`` for the split.

    Raises
    ------
    FileExistsError
        If ``dst`` exists and is not an empty folder.
    ValueError
        If ``dst`` lies inside ``src``, ``groups`` is invalid, or the split is
        impossible (see :func:`~skconv.model_selection.train_val_test_split`).

    Examples
    --------
    >>> import tempfile
    >>> from skconv.datasets import make_ultrasound_folder, split_folders
    >>> tmp = tempfile.TemporaryDirectory()
    >>> src = make_ultrasound_folder(tmp.name + "/us", n_per_class=10, random_state=0)
    >>> dst = split_folders(src, tmp.name + "/split", val_size=0.2, test_size=0.2,
    ...                     random_state=0, verbose=False)
    >>> sorted(p.name for p in dst.iterdir())
    ['manifest.csv', 'test', 'train', 'val']
    >>> len(list((dst / "train" / "benign").iterdir()))
    6
    >>> tmp.cleanup()
    """
    src_path, dst_path = Path(src), Path(dst)
    data = load_image_folder(src_path)
    src_real, dst_real = src_path.resolve(), dst_path.resolve()
    if dst_real == src_real or src_real in dst_real.parents:
        raise ValueError(
            f"dst {os.fspath(dst)!r} lies inside src {os.fspath(src)!r}; "
            "choose a destination outside the source folder."
        )
    refuse_non_empty(dst_path, "dst")

    n = len(data.paths)
    if isinstance(groups, str):
        if groups != "duplicates":
            raise ValueError(
                f"groups must be None, 'duplicates' or an array of labels, got {groups!r}."
            )
        groups = find_near_duplicates(data.paths)
    elif groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(
                f"groups must have one label per image ({n} in "
                f"{os.fspath(src)!r}), got shape {groups.shape}."
            )

    try:
        parts = train_val_test_split(
            np.arange(n),
            val_size=val_size,
            test_size=test_size,
            stratify=data.target,
            groups=groups,
            random_state=random_state,
        )
    except ValueError as exc:
        raise split_error(src_path, data.target, exc, val_size, test_size) from exc

    # Built in a hidden sibling and renamed into place when complete: an error or
    # Ctrl-C leaves no half-copied dst (nor the parent folders made for it).
    with atomic_dir(dst_path, what="dst") as staging:
        rows = []
        for part, idx in zip(("train", "val", "test"), parts):
            for i in np.sort(idx):
                source = Path(data.paths[i])
                cls = data.target[i]
                rel = Path(part, cls, source.relative_to(src_path / cls))
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, staging / rel)
                rows.append(
                    {
                        "part": part,
                        "class": cls,
                        "source": os.fspath(source.resolve()),
                        "destination": rel.as_posix(),
                    }
                )
        with open(staging / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["part", "class", "source", "destination"])
            writer.writeheader()
            writer.writerows(rows)

    if verbose:
        split_report(*(data.target[p] for p in parts))
    return dst_path


# The synthetic demo set lives in its own module (see _synthetic.py).
from ._synthetic import ULTRASOUND_CLASSES, make_ultrasound, make_ultrasound_folder  # noqa: E402, F401
