"""Image folders on disk and a synthetic ultrasound-like data set.

``load_image_folder`` reads the common one-folder-per-class layout lazily (paths and
labels, nothing decoded), ``split_folders`` copies such a folder into
``train/val/test`` sub-trees, and ``make_ultrasound`` / ``make_ultrasound_folder`` make a
small deterministic stand-in for breast ultrasound data for demos and tests.
"""

from __future__ import annotations

import csv
import fnmatch
import numbers
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import expit
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._io import atomic_dir
from .images import ImageLoadError, load_image
from .model_selection import find_near_duplicates, split_report, train_val_test_split

__all__ = ["load_image_folder", "split_folders", "make_ultrasound", "make_ultrasound_folder"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
MASK_PATTERN = "*_mask*"
ULTRASOUND_CLASSES = ("benign", "malignant", "normal")


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def _is_image_file(name: str) -> bool:
    return (
        not name.startswith(".")
        and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        and not fnmatch.fnmatch(name.lower(), MASK_PATTERN)
    )


def image_files(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder``, recursively, sorted as strings.

    The one walker of image folders (``load_image_folder`` and the command line's IMAGES
    use it): hidden files and folders, masks and files without an image extension are
    left out. Paths are ``os.path.join(folder, ...)``, so they keep the form ``folder``
    was given in (relative stays relative).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # pruned, not entered
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image_file(f))
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
    too. Hidden files and folders, masks (file names matching ``*_mask*``) and files
    without an image extension (png, jpg, jpeg, bmp, tif, tiff, gif, webp) are left out.

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
        loose = [e.name for e in entries if e.is_file() and _is_image_file(e.name)]
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


def _refuse_non_empty(path: Path, name: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(
            f"{name} {os.fspath(path)!r} exists and is not an empty "
            "folder; refusing to write into it."
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
    _refuse_non_empty(dst_path, "dst")

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


# --------------------------------------------------------------------------------------
# Synthetic ultrasound
# --------------------------------------------------------------------------------------


def _smooth_field(rng, size: int, cells: int) -> np.ndarray:
    """Random field in about [-1, 1], smooth on the scale of ``size / cells`` pixels."""
    coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def _ultrasound_image(rng, kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size

    # Tissue: horizontal layers bent by a smooth warp, on a depth gradient.
    warp = 0.06 * _smooth_field(rng, size, 4)
    layers = sum(
        a * np.sin(2 * np.pi * f * (yy + warp) + rng.uniform(0, 2 * np.pi))
        for a, f in zip(rng.uniform(0.05, 0.15, 3), rng.uniform(2, 8, 3))
    )
    tissue = (0.75 + layers + 0.15 * _smooth_field(rng, size, 6)) * np.exp(
        -rng.uniform(0.3, 0.9) * yy
    )
    # Dark near-field band under a thin bright skin line, as on a linear probe.
    band = rng.uniform(0.08, 0.16)
    tissue *= 0.35 + 0.65 * expit((yy - band) / 0.02)
    tissue[: max(1, size // 48)] = 1.2

    # Fat lobules in every class: flat, faint dark ovals, so "a dark blob" alone is
    # not the answer.
    for _ in range(rng.randint(0, 4)):
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.8)
        d = ((xx - cx) / rng.uniform(0.08, 0.18)) ** 2 + ((yy - cy) / rng.uniform(0.03, 0.06)) ** 2
        tissue *= 1 - rng.uniform(0.2, 0.4) * expit((1 - d) / 0.2)

    if kind != "normal":
        cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.35, 0.6)
        r = rng.uniform(0.09, 0.17)
        dx, dy = xx - cx, yy - cy
        theta = np.arctan2(dy, dx)
        if kind == "benign":
            # Smooth oval, wider than tall, crisp margin, posterior enhancement.
            ax, ay = r * rng.uniform(1.2, 1.7), r
            rho = np.hypot(dx / ax, dy / ay)
            edge, post = 0.04, rng.uniform(0.25, 0.45)
        else:
            # Lobulated outline with spikes, taller than wide, posterior shadowing.
            ax, ay = r * rng.uniform(0.8, 1.05), r * rng.uniform(1.0, 1.3)
            radius = 1 + sum(
                rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                for k in (2, 3, 5)
            )
            radius += (
                rng.uniform(0.25, 0.45)
                * np.maximum(0, np.cos(rng.randint(5, 10) * theta + rng.uniform(0, 2 * np.pi)))
                ** 8
            )
            rho = np.hypot(dx / ax, dy / ay) / radius
            edge, post = 0.03, -rng.uniform(0.35, 0.55)
        inside = expit((1 - rho) / edge)
        below = np.clip((yy - cy) / (1 - cy), 0, 1) ** 0.5 * np.exp(-((dx / ax) ** 2))
        tissue *= 1 + post * below * (1 - inside)
        tissue *= 1 - rng.uniform(0.7, 0.85) * inside

    # Multiplicative speckle: Rayleigh with mean 1, grains of about two pixels.
    speckle = rng.rayleigh(1.0, size=(size + 1, size + 1)).astype(np.float32)
    speckle = (speckle[1:, 1:] + speckle[:-1, 1:] + speckle[1:, :-1] + speckle[:-1, :-1]) / (
        4 * np.sqrt(np.pi / 2)
    )
    image = np.clip(tissue, 0, None) * speckle
    # Same brightness distribution for every class: mean intensity carries no label.
    image *= rng.uniform(70, 110) / image.mean()
    return np.clip(image, 0, 255).astype(np.uint8)


@validate_params(
    {
        "n_per_class": [Interval(numbers.Integral, 1, None, closed="left")],
        "image_size": [Interval(numbers.Integral, 16, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_ultrasound(n_per_class: int = 20, image_size: int = 64, random_state=None):
    """Make synthetic grayscale images that look like breast ultrasound.

    Every image has multiplicative Rayleigh speckle on layered tissue with a depth
    gradient, a dark near-field band and a few faint fat lobules. ``"normal"`` images
    have no lesion, ``"benign"`` ones a smooth dark oval, wider than tall, with a crisp
    margin and posterior enhancement, and ``"malignant"`` ones an irregular, spiculated
    dark lesion with posterior shadowing; positions and sizes are random. Each image's
    mean brightness is drawn from one distribution for all classes, so the classes are
    not separable by mean intensity, but they are by shape, which a pretrained ConvNet
    picks up.

    Parameters
    ----------
    n_per_class : int, default=20
        Number of images of each class.
    image_size : int, default=64
        Side of the square images in pixels, at least 16.
    random_state : int, RandomState instance or None, default=None
        Pass an int for the same images on every call.

    Returns
    -------
    X : ndarray of shape (3 * n_per_class, image_size, image_size), dtype=uint8
        The images, grouped by class in the order benign, malignant, normal.
    y : ndarray of shape (3 * n_per_class,), dtype=str
        The class of each image.

    Examples
    --------
    >>> from skconv.datasets import make_ultrasound
    >>> X, y = make_ultrasound(n_per_class=5, image_size=64, random_state=0)
    >>> X.shape, X.dtype
    ((15, 64, 64), dtype('uint8'))
    >>> sorted(set(y.tolist()))
    ['benign', 'malignant', 'normal']
    """
    rng = check_random_state(random_state)
    y = np.repeat(np.array(ULTRASOUND_CLASSES), n_per_class)
    X = np.stack([_ultrasound_image(rng, kind, image_size) for kind in y])
    return X, y


def make_ultrasound_folder(
    path: str | os.PathLike,
    n_per_class: int = 20,
    image_size: int = 64,
    random_state=None,
) -> Path:
    """Write :func:`make_ultrasound` images as PNG files, one folder per class.

    Files are named ``path/<class>/<class>_<nnn>.png`` (numbered from 001), the layout
    that :func:`load_image_folder` reads.

    Parameters
    ----------
    path : str or path-like
        Folder to create. It must not exist or be empty.
    n_per_class : int, default=20
        Number of images of each class.
    image_size : int, default=64
        Side of the square images in pixels, at least 16.
    random_state : int, RandomState instance or None, default=None
        Pass an int for the same images on every call.

    Returns
    -------
    path : pathlib.Path
        The folder written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and is not an empty folder.

    Examples
    --------
    >>> import tempfile
    >>> from skconv.datasets import make_ultrasound_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = make_ultrasound_folder(tmp.name + "/us", n_per_class=3, random_state=0)
    >>> sorted(p.name for p in (root / "normal").iterdir())
    ['normal_001.png', 'normal_002.png', 'normal_003.png']
    >>> tmp.cleanup()
    """
    root = Path(path)
    _refuse_non_empty(root, "path")
    X, y = make_ultrasound(n_per_class, image_size, random_state)
    width = max(3, len(str(n_per_class)))
    for cls in ULTRASOUND_CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(X[y == cls], start=1):
            Image.fromarray(image).save(root / cls / f"{cls}_{k:0{width}d}.png")
    return root
