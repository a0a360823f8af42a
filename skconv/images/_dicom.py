"""DICOM files: recognised by name or content, decoded as a viewer shows them.

pydicom decodes the pixel data and applies the look-up tables (its
``apply_modality_lut``, ``apply_voi_lut``, ``apply_color_lut``); this module only
chooses what to apply and scales the result to 8 bits over the range the DICOM
standard gives those tables' output, so that every image of a series is scaled the
same way. Only pixel-module attributes (rows, columns, bits, photometric
interpretation, LUTs, window) are read; patient, study and institution attributes
are never touched, and error messages are cleared of every text value in the file.
pydicom is imported on the first DICOM file, so PNG users never pay its start-up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import numbers
import os
import threading
import warnings
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ._checks import ImageLoadError

__all__ = ["DICOM_EXTENSIONS", "DicomPath", "dicom_paths", "is_dicom"]

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_PREAMBLE = 128  # the marker "DICM" follows a 128-byte preamble (PS3.10 7.1)
_WINDOWS = ("file", "none", "minmax")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# pydicom's native transfer syntaxes: the pixel data is stored as is, so its length
# can be checked against what the header promises before anything is allocated.
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_QUIET = threading.Lock()
# The value representations that hold names, IDs, dates, places and free text.
_TEXT_VRS = frozenset(
    {"PN", "LO", "SH", "DA", "DT", "TM", "AE", "AS", "ST", "LT", "UT", "UC", "UR", "UI"}
)


class DicomPath(os.PathLike):
    """A path to a DICOM file with a choice of window and frame.

    An element of ``X`` like a plain path (every estimator, splitter and command line
    verb takes it), which says how its DICOM file is turned into an image. Plain paths
    use the defaults: the window stored in the file, and a multi-frame file refused.
    The options travel with ``X`` through splitters, clones, pickles and worker
    processes, and enter the feature cache's key. On a file that is not DICOM they
    have no effect.

    Parameters
    ----------
    path : str or path-like
        The file.
    window : {"file", "none", "minmax"} or (float, float), default="file"
        The value of interest transform applied after the modality LUT (rescale
        slope and intercept) of a grey image. ``"file"``: the file's VOI LUT, else its
        first window centre and width; a file with neither is shown as stored if
        it has at most 8 bits, else over its own range (``"minmax"``), as viewers
        do. ``"none"``: no window; the full range of values the header allows is
        scaled to 0-255, the same for every file of a series. ``"minmax"``: this
        image's own minimum and maximum are scaled to 0-255. A pair
        ``(center, width)`` in modality units (e.g. ``(40, 400)`` for a CT soft-tissue
        window) replaces the file's window. Colour images ignore it.
    frame : int, "middle" or None, default=None
        Which frame of a multi-frame file (a cine loop, a volume, a dose grid) is the
        image: an index (negative counts from the end) or the middle one. None refuses
        multi-frame files with an :class:`ImageLoadError` naming the file, so that a
        cine loop is never silently read as one of its frames.

    Examples
    --------
    >>> from skconv.images import DicomPath
    >>> p = DicomPath("scans/ct_001.dcm", window=(40, 400))
    >>> import os
    >>> os.fspath(p)
    'scans/ct_001.dcm'
    >>> p
    DicomPath('scans/ct_001.dcm', window=(40.0, 400.0))
    """

    __slots__ = ("path", "window", "frame")

    def __init__(self, path: str | os.PathLike, *, window: Any = "file", frame: Any = None):
        # A value object, like pathlib.Path: checked on construction, so a typo fails
        # where it is written rather than in a worker process halfway through a fit.
        self.path = os.fspath(path)
        self.window = _check_window(window)
        self.frame = _check_frame(frame)

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        options = [f", window={self.window!r}" if self.window != "file" else ""]
        options.append(f", frame={self.frame!r}" if self.frame is not None else "")
        return f"DicomPath({self.path!r}{''.join(options)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DicomPath):
            return NotImplemented
        return (self.path, self.window, self.frame) == (other.path, other.window, other.frame)

    def __hash__(self) -> int:
        return hash((self.path, self.window, self.frame))

    @property
    def options_key(self) -> str:
        """The options as text for cache keys; empty for the defaults, as a plain path."""
        if self.window == "file" and self.frame is None:
            return ""
        return f"window={self.window!r};frame={self.frame!r}"


def dicom_paths(paths: Any, *, window: Any = "file", frame: Any = None) -> np.ndarray:
    """Wrap paths in :class:`DicomPath` with one window and frame choice.

    Parameters
    ----------
    paths : sequence of str or path-like
        E.g. ``load_image_folder(...).paths``.
    window, frame
        As for :class:`DicomPath`.

    Returns
    -------
    X : ndarray of DicomPath, shape (n_samples,)
        An object array, so scikit-learn's splitters index it.

    Examples
    --------
    >>> from skconv.images import dicom_paths
    >>> dicom_paths(["a.dcm", "b.dcm"], frame="middle")[1]
    DicomPath('b.dcm', frame='middle')
    """
    wrapped = np.empty(len(paths), dtype=object)
    for index, path in enumerate(paths):
        wrapped[index] = DicomPath(path, window=window, frame=frame)
    return wrapped


def _check_window(window: Any) -> Any:
    if isinstance(window, str):
        if window not in _WINDOWS:
            raise ValueError(
                f"window must be one of {_WINDOWS} or a (center, width) pair, got {window!r}."
            )
        return window
    try:
        center, width = (float(value) for value in window)
    except (TypeError, ValueError):
        raise ValueError(
            f"window must be one of {_WINDOWS} or a (center, width) pair, got {window!r}."
        ) from None
    if not (math.isfinite(center) and math.isfinite(width) and width >= 1):
        raise ValueError(f"window (center, width) must be finite with width >= 1, got {window!r}.")
    return (center, width)


def _check_frame(frame: Any) -> Any:
    if frame is None or frame == "middle":
        return frame
    if isinstance(frame, numbers.Integral) and not isinstance(frame, bool):
        return int(frame)
    raise ValueError(f"frame must be an integer, 'middle' or None, got {frame!r}.")


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a DICOM file: by its ``.dcm`` name or its ``DICM`` marker.

    Scanners and PACS exports often write files without an extension; those are
    recognised by the four bytes ``DICM`` after the 128-byte preamble. A file that
    cannot be read is not DICOM.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    bool

    Examples
    --------
    >>> from skconv.images import is_dicom
    >>> is_dicom("scan.DCM")
    True
    """
    if os.path.splitext(os.fspath(path))[1].lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as file:
            return has_dicom_marker(file.read(_PREAMBLE + 4))
    except OSError:
        return False


def has_dicom_marker(head: bytes) -> bool:
    """Whether the first 132 bytes of a file are a DICOM preamble and marker."""
    return head[_PREAMBLE : _PREAMBLE + 4] == b"DICM"


def decode_dicom(
    file: BinaryIO, path: str, options: DicomPath | None, keep_gray: bool
) -> Image.Image:
    """Decode an open DICOM file to an RGB (or ``"L"``) PIL image; errors name ``path``."""
    try:
        import pydicom
    except ImportError as exc:
        raise ImageLoadError(
            f"{path!r} is a DICOM file, and reading DICOM needs pydicom 3 (Python 3.10 or "
            "later): pip install 'pydicom>=3'."
        ) from exc

    window = options.window if options is not None else "file"
    frame = options.frame if options is not None else None
    with _quiet_pydicom():
        try:
            # From memory: pydicom reads an element with file.read(length), and a file
            # object allocates `length` bytes first, so one corrupt length field would
            # allocate gigabytes. A BytesIO returns what there is.
            dataset = pydicom.dcmread(io.BytesIO(file.read()))
        except Exception as exc:
            raise ImageLoadError(
                f"Cannot read DICOM file {path!r}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            pixels = _decode_pixels(dataset, path, frame)
        except ImageLoadError:
            raise
        except Exception as exc:
            raise _decode_error(path, exc, dataset) from exc
    try:
        return _to_pil(pixels, dataset, window, keep_gray)
    except Exception as exc:
        raise _decode_error(path, exc, dataset) from exc


def _decode_error(path: str, exc: Exception, dataset: Any) -> ImageLoadError:
    message = _scrub(f"{type(exc).__name__}: {exc}", dataset)
    if _compressed(dataset) and importlib.util.find_spec("pylibjpeg") is None:
        message += (
            " (the pylibjpeg plugins decode more compressed files: pip install 'skconv[dicom]')"
        )
    return ImageLoadError(f"Cannot decode DICOM file {path!r}: {message}")


@contextlib.contextmanager
def _quiet_pydicom():
    """Silence pydicom's warnings and log records while it reads a file.

    They quote the file's values ("Invalid value for VR PN: ..."), and skconv writes
    nothing of a file's metadata anywhere, logs included. Warning filters are
    process-wide and ``catch_warnings`` is not thread-safe, so decoding threads take
    turns here; the resizing that follows, the larger part of the work, runs outside.
    """
    logger = logging.getLogger("pydicom")
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disabled, logger.disabled = logger.disabled, True
        try:
            yield
        finally:
            logger.disabled = disabled


def _decode_pixels(dataset: Any, path: str, frame: Any) -> np.ndarray:
    from pydicom.pixels import get_decoder

    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        raise ImageLoadError(
            f"DICOM file {path!r} holds no pixel data (a report, plan, structure set or "
            "waveform is not an image)."
        )
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames") or 1)
    samples = int(dataset.get("SamplesPerPixel") or 1)
    if min(rows, columns, frames) < 1:
        raise ImageLoadError(
            f"DICOM file {path!r} has {rows} rows, {columns} columns and {frames} frames; "
            "each must be at least 1."
        )
    _check_pixel_count(path, rows, columns, frames)
    syntax = _transfer_syntax(dataset)
    if syntax is None:
        raise ImageLoadError(
            f"DICOM file {path!r} has no valid Transfer Syntax UID (0002,0010) in its file "
            "meta information, so how its pixels are stored is unknown."
        )
    if "PixelData" in dataset and syntax in _NATIVE_SYNTAXES:
        _check_pixel_bytes(dataset, path, rows * columns * frames, samples)
    decoder = get_decoder(syntax) if "PixelData" in dataset else None
    if decoder is not None and not decoder.is_available:
        raise ImageLoadError(
            f"DICOM file {path!r} is stored as {syntax.name}, which needs a decoder that is "
            f"not installed ({'; '.join(decoder.missing_dependencies)}): install the "
            "pylibjpeg plugins with pip install 'skconv[dicom]'."
        )
    if frames == 1:
        return _pixel_array(dataset, decoder, None)
    if frame is None:
        raise ImageLoadError(
            f"DICOM file {path!r} has {frames} frames (a cine loop, a volume or a dose "
            "grid), and skconv takes one image per file: choose one with "
            "skconv.images.DicomPath(path, frame=0) (or frame='middle')."
        )
    index = frames // 2 if frame == "middle" else frame
    if not -frames <= index < frames:
        raise ImageLoadError(
            f"DICOM file {path!r} has {frames} frames; frame={frame} is out of range."
        )
    return _pixel_array(dataset, decoder, index % frames)


def _pixel_array(dataset: Any, decoder: Any, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    # Pillow (a dependency) first where it decodes the syntax: the same pixels with or
    # without the pylibjpeg extra, and libjpeg-turbo is the faster JPEG decoder. pydicom
    # goes on to its other plugins only if Pillow fails.
    if decoder is not None and "pillow" in decoder.available_plugins:
        try:
            return pixel_array(dataset, index=index, decoding_plugin="pillow")
        except Exception:
            if len(decoder.available_plugins) == 1:
                raise
    return pixel_array(dataset, index=index)


def _transfer_syntax(dataset: Any) -> Any:
    """The file's transfer syntax UID, or None where it is missing or malformed.

    A corrupt file can hold several values (a MultiValue) or none there.
    """
    from pydicom.uid import UID

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    return syntax if isinstance(syntax, UID) and syntax else None


def _compressed(dataset: Any) -> bool:
    syntax = _transfer_syntax(dataset)
    return syntax is not None and syntax not in _NATIVE_SYNTAXES


def _check_pixel_count(path: str, rows: int, columns: int, frames: int) -> None:
    # The header is read before any pixel: a few lines can promise gigabytes.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and rows * columns * frames > limit:
        raise ImageLoadError(
            f"DICOM file {path!r} has {rows}x{columns}x{frames} = {rows * columns * frames} "
            f"pixels (rows x columns x frames), more than PIL.Image.MAX_IMAGE_PIXELS "
            f"({limit}); refusing to decode a possible decompression bomb. If the file is "
            "trusted, raise the limit (PIL.Image.MAX_IMAGE_PIXELS = None turns it off)."
        )


def _check_pixel_bytes(dataset: Any, path: str, pixels: int, samples: int) -> None:
    bits = int(dataset.BitsAllocated)
    if str(dataset.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    expected = math.ceil(pixels * samples * bits / 8)
    held = len(dataset.PixelData)
    if held < expected:
        raise ImageLoadError(
            f"DICOM file {path!r} promises {pixels} pixels of {samples} sample(s) at {bits} "
            f"bits ({expected} bytes) but holds {held} bytes of pixel data: it is truncated "
            "or its header is wrong."
        )


def _to_pil(pixels: np.ndarray, dataset: Any, window: Any, keep_gray: bool) -> Image.Image:
    from pydicom.pixels import apply_color_lut

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, dataset)
        high = 255 if rgb.dtype == np.uint8 else 65535
        return Image.fromarray(_scale(rgb, 0.0, high), mode="RGB")
    if pixels.ndim == 3:
        # pydicom has already turned YBR into RGB (pixel_array's as_rgb default).
        low, high = _stored_range(dataset)
        return Image.fromarray(_scale(pixels, low, high), mode="RGB")
    gray = _grey_levels(pixels, dataset, window)
    if photometric == "MONOCHROME1":  # shown inverted: the lowest value is white
        gray = 255 - gray
    image = Image.fromarray(gray, mode="L")
    return image if keep_gray else image.convert("RGB")


def _grey_levels(pixels: np.ndarray, dataset: Any, window: Any) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if pixels.dtype.kind == "f":
        # Float pixel data (parametric maps) has no stored range, which windows and the
        # "none" scaling need: it is shown over its own range.
        if not isinstance(window, str):
            raise ValueError(
                f"window={window!r} needs integer pixel data, and this file holds float "
                "pixel data; window='minmax' (the default for it) shows it."
            )
        window = "minmax"
    values = apply_modality_lut(pixels, dataset)
    low, high = _modality_range(dataset)
    if window == "file":
        if "VOILUTSequence" in dataset:
            values = apply_voi_lut(values, dataset, prefer_lut=True)
            low, high = 0.0, 2.0 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1
        elif "WindowCenter" in dataset and "WindowWidth" in dataset:
            values = apply_voi_lut(values, dataset, prefer_lut=False)
        elif int(dataset.get("BitsStored") or 8) > 8:
            # No window stored for data deeper than a display: viewers then window to
            # the image's own range. 8-bit data is shown as stored.
            window = "minmax"
    if window == "minmax":
        low, high = float(np.min(values)), float(np.max(values))
    elif window not in ("file", "none"):
        # The in-memory dataset, not the file: a chosen window replaces the stored one.
        center, width = window
        dataset.WindowCenter, dataset.WindowWidth = center, width
        dataset.VOILUTFunction = "LINEAR"
        values = apply_voi_lut(values, dataset, prefer_lut=False)
    return _scale(values, low, high)


def _stored_range(dataset: Any) -> tuple[float, float]:
    bits = int(dataset.get("BitsStored") or dataset.BitsAllocated)
    if int(dataset.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _modality_range(dataset: Any) -> tuple[float, float]:
    # The range pydicom's apply_windowing maps a window into (PS3.3 C.11.2.1.2): the
    # stored range, through the rescale or the modality LUT.
    if "ModalityLUTSequence" in dataset:
        return 0.0, 2.0 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    low, high = _stored_range(dataset)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = sorted(
            (low * float(slope) + float(intercept), high * float(slope) + float(intercept))
        )
    return low, high


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto 0-255 (8-bit values stay exactly as stored)."""
    if values.dtype == np.uint8 and (low, high) == (0.0, 255.0):
        return np.ascontiguousarray(values)
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("pixel values are NaN or infinite")
    span = high - low
    if span <= 0:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.rint((values - low) * (255.0 / span))
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8))


def _scrub(message: str, dataset: Any) -> str:
    """``message`` without any text value of ``dataset`` (names, IDs, dates, places)."""
    with warnings.catch_warnings():  # reading values may warn with the values themselves
        warnings.simplefilter("ignore")
        try:
            values = {
                str(value)
                for element in dataset.iterall()
                if element.VR in _TEXT_VRS
                for value in (element.value if element.VM > 1 else [element.value])
            }
        except Exception:
            return "the file's pixel data could not be decoded"
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 3 and value in message:
            message = message.replace(value, "<redacted>")
    return " ".join(message.split())  # one line: pydicom lists its plugins' errors on many
