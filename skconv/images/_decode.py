"""The one hardened decoder: a file, a PIL image or an array to an RGB PIL image."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._checks import ImageLoadError, _check_integer_dtype, _is_path
from ._dicom import _PREAMBLE, DICOM_EXTENSIONS, DicomPath, decode_dicom, has_dicom_marker


def load_image(
    item: Any, *, where: str = "", keep_gray: bool = False, min_side: int | None = None
) -> Image.Image:
    """Load one element of ``X`` as an RGB PIL image.

    Parameters
    ----------
    item : path-like, PIL image or ndarray
        A file path (an image Pillow reads, or a DICOM file, recognised by its
        ``.dcm`` name or its content; a :class:`DicomPath` chooses its window and
        frame), a PIL image of any mode, or one image as an array of shape
        ``(h, w)`` or ``(h, w, c)``: ``uint8``, ``uint16`` (scaled by 1/257), or
        float in [0, 1].
    where : str, default=""
        Where the item sits in ``X`` (e.g. ``"X[3]"``), used in error messages of
        in-memory images.
    keep_gray : bool, default=False
        Return single-channel images in mode ``"L"`` instead of RGB. Resizing one
        channel is a third of the work, and gives exactly the pixels of each channel
        of the RGB version; :func:`load_batch` replicates the channel afterwards.
    min_side : int or None, default=None
        Let a JPEG file decode at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4
        or 1/8, Pillow's draft mode) that keeps both sides at least ``min_side``
        pixels: a photo of a few megapixels decodes several times faster. Other
        formats, arrays and PIL images are unaffected. None decodes at full size.

    Returns
    -------
    image : PIL.Image.Image
        An RGB image (or ``"L"`` with ``keep_gray``) with the EXIF orientation applied.

    Raises
    ------
    ImageLoadError
        If the file is missing, is a directory, cannot be decoded, or the array
        holds NaN, infinity or values outside [0, 1] (floats).

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.images import load_image
    >>> load_image(np.zeros((4, 6), dtype=np.uint8)).size
    (6, 4)
    """
    if _is_path(item):
        return _load_file(item, keep_gray, min_side)
    if isinstance(item, Image.Image):
        return _to_rgb(item, name=where or "PIL image", keep_gray=keep_gray)
    if isinstance(item, np.ndarray):
        _check_integer_dtype(item.dtype, where or "array")
        return _array_to_pil(item, name=where or "array", keep_gray=keep_gray)
    raise ImageLoadError(
        f"{where or 'An element of X'} is a {type(item).__name__}; expected a file "
        "path, a PIL image or a numpy array."
    )


def _load_file(item: Any, keep_gray: bool = False, min_side: int | None = None) -> Image.Image:
    path = str(os.fspath(item))  # a NumPy string would show as np.str_('...') in messages
    if not os.path.exists(path):
        raise ImageLoadError(f"Image file not found: {path!r}.")
    if os.path.isdir(path):
        raise ImageLoadError(f"Expected an image file but {path!r} is a directory.")
    try:
        file = open(path, "rb")
    except OSError as exc:
        raise ImageLoadError(f"Cannot open image file {path!r}: {exc}") from exc
    with file:
        # DICOM first, by content: a DICOM preamble may itself hold a TIFF header.
        head = file.read(_PREAMBLE + 4)
        file.seek(0)
        if has_dicom_marker(head) or os.path.splitext(path)[1].lower() in DICOM_EXTENSIONS:
            options = item if isinstance(item, DicomPath) else None
            return decode_dicom(file, path, options, keep_gray)
        return _load_pillow(file, path, keep_gray, min_side)


def _load_pillow(file: Any, path: str, keep_gray: bool, min_side: int | None) -> Image.Image:
    try:
        with Image.open(file, formats=_open_formats()) as image:
            _check_pixel_count(image, path)
            if min_side:  # a no-op for every format but JPEG (and its MPO variant)
                image.draft(image.mode, (min_side, min_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image, name=path, keep_gray=keep_gray)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"Cannot decode image file {path!r}: cannot identify image file (not a format "
            "Pillow reads, and not DICOM)."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"Cannot decode image file {path!r}: {exc}") from exc
    except Exception as exc:
        # Truncated or corrupt files surface from Pillow's decoders as OSError or
        # SyntaxError, and from its less-travelled parsers as anything (a TIFF whose
        # strip offsets are text raises TypeError): every one is this file's fault.
        raise ImageLoadError(
            f"Cannot decode image file {path!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _open_formats() -> list[str]:
    # Every format Pillow reads except EPS, whose loader runs Ghostscript, an external
    # PostScript interpreter: a file named .png must never start another program.
    Image.init()
    return [name for name in Image.OPEN if name != "EPS"]


def _check_pixel_count(image: Image.Image, path: str) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that, then decodes anyway;
    # a few such files in parallel workers exhaust memory, so refuse them by name.
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageLoadError(
            f"Image file {path!r} has {width}x{height} = {width * height} pixels, more than "
            f"PIL.Image.MAX_IMAGE_PIXELS ({limit}); refusing to decode a possible "
            "decompression bomb. If the file is trusted, raise the limit "
            "(PIL.Image.MAX_IMAGE_PIXELS = None turns the check off)."
        )


def _to_rgb(image: Image.Image, *, name: str, keep_gray: bool = False) -> Image.Image:
    if image.mode == "RGB" or (keep_gray and image.mode == "L"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_pil(np.asarray(image), name=name, keep_gray=keep_gray)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Drop alpha rather than composite: medical images carry no meaning in it.
        image = image.convert("RGBA") if image.mode != "RGBA" else image
        return image.convert("RGB")
    return image.convert("RGB")


def _array_to_pil(array: np.ndarray, *, name: str, keep_gray: bool = False) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{name} has shape {array.shape}; expected (h, w) or (h, w, c) with c in {{1, 3, 4}}."
        )
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name} contains NaN or infinity.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageLoadError(
                f"{name} is a float image with values in [{low:g}, {high:g}]; "
                "float images must lie in [0, 1]."
            )
        pixels = np.rint(array * 255.0).astype(np.uint8)
    elif array.dtype.kind in "ui":
        # 16-bit (and 32-bit integer) images are scaled to 8 bits, never clipped.
        info_max = 65535 if array.max(initial=0) <= 65535 else np.iinfo(array.dtype).max
        if array.min(initial=0) < 0:
            raise ImageLoadError(f"{name} holds negative integer pixel values.")
        pixels = np.rint(array.astype(np.float64) * (255.0 / info_max)).astype(np.uint8)
    else:
        raise ImageLoadError(f"{name} has unsupported dtype {array.dtype}.")
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        gray = Image.fromarray(pixels, mode="L")
        return gray if keep_gray else gray.convert("RGB")
    if pixels.shape[-1] == 4:
        pixels = np.ascontiguousarray(pixels[..., :3])
    return Image.fromarray(pixels, mode="RGB")
