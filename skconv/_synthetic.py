"""The synthetic ultrasound-like demo set of :mod:`skconv.datasets` (kept apart: one job)."""

from __future__ import annotations

import io
import numbers
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import expit
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._io import refuse_non_empty

__all__ = ["ULTRASOUND_CLASSES", "make_ultrasound", "make_ultrasound_folder", "write_dicom"]

ULTRASOUND_CLASSES = ("benign", "malignant", "normal")


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
    file_format: str = "png",
) -> Path:
    """Write :func:`make_ultrasound` images as PNG or DICOM files, one folder per class.

    Files are named ``path/<class>/<class>_<nnn>.png`` (numbered from 001), the layout
    that :func:`load_image_folder` reads; DICOM files end in ``.dcm`` and hold the same
    8-bit pixels, as an ultrasound scanner's secondary capture with the made-up
    patient name ``SYNTHETIC^PATIENT``.

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
    file_format : {"png", "dicom"}, default="png"
        The files' format.

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
    if file_format not in ("png", "dicom"):
        raise ValueError(f"file_format must be 'png' or 'dicom', got {file_format!r}.")
    root = Path(path)
    refuse_non_empty(root, "path")
    X, y = make_ultrasound(n_per_class, image_size, random_state)
    width = max(3, len(str(n_per_class)))
    for cls in ULTRASOUND_CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(X[y == cls], start=1):
            name = root / cls / f"{cls}_{k:0{width}d}"
            if file_format == "png":
                Image.fromarray(image).save(name.with_suffix(".png"))
            else:
                write_dicom(image, name.with_suffix(".dcm"))
    return root


def write_dicom(
    pixels: np.ndarray,
    path: str | os.PathLike,
    *,
    photometric: str | None = None,
    compression: str | None = None,
    patient_name: str = "SYNTHETIC^PATIENT",
    **attributes,
) -> Path:
    """Write ``pixels`` as a DICOM file, for tests, benchmarks and examples.

    A secondary capture in explicit VR little endian (or ``compression="jpeg"``:
    baseline JPEG of 8-bit pixels by Pillow; ``"rle"``: RLE lossless by pydicom),
    with the 128-byte preamble and the ``DICM`` marker.

    Parameters
    ----------
    pixels : ndarray
        ``(rows, columns)`` grey, ``(rows, columns, 3)`` RGB, or ``(frames, rows,
        columns)``; uint8, uint16 or int16.
    path : str or path-like
        The file to write (overwritten).
    photometric : str or None, default=None
        The photometric interpretation; None: MONOCHROME2 for grey, RGB for colour.
    compression : {None, "jpeg", "rle"}, default=None
        How the pixel data is stored.
    patient_name : str, default="SYNTHETIC^PATIENT"
        Put in the file so that tests can check that it is never written elsewhere.
    **attributes
        More data elements by keyword (``WindowCenter=40``, ``RescaleSlope=1``, ...).

    Returns
    -------
    path : pathlib.Path
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        RLELossless,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    pixels = np.asarray(pixels)
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientName = patient_name
    dataset.PatientID = "SKCONV-0001"
    dataset.Modality = "US"
    photometric = photometric or ("RGB" if colour else "MONOCHROME2")
    dataset.set_pixel_data(pixels, photometric, bits_stored=pixels.itemsize * 8)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    if compression == "jpeg":
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ValueError("compression='jpeg' writes one 8-bit grey frame.")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dataset.LossyImageCompression = "01"
    elif compression == "rle":
        dataset.compress(RLELossless)
    elif compression is not None:
        raise ValueError(f"compression must be None, 'jpeg' or 'rle', got {compression!r}.")
    dataset.save_as(path, enforce_file_format=True)
    return Path(path)
