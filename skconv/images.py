"""Decoding ``X`` (file paths, PIL images, arrays) and batching it for a network.

Every estimator in skconv takes the same ``X``. A sequence or 1-D array of file
paths is the normal case: nothing is decoded until a batch needs it, and because
``X`` is an ordinary array, every scikit-learn splitter can index it. Lists of
PIL images and ``uint8``/float arrays work too. Whatever comes in leaves as an
RGB image: grayscale is repeated over three channels, alpha is dropped, 16-bit
images are scaled (not clipped) to 8 bits and EXIF orientation is applied.

:func:`load_image` is the one hardened decoder of the package (no EPS, whose loader
runs Ghostscript; a pixel limit against decompression bombs; errors that name the
file). Importing this module does not import torch: splitting data and running an
exported ONNX model decode images too, and need neither torch nor its start-up time.
Only the functions that return tensors import it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ImageLoadError",
    "Preprocessing",
    "ImageDataset",  # noqa: F822 (defined on first use, see __getattr__)
    "check_images",
    "crop_batch",
    "load_batch",
    "load_image",
    "n_images",
]

#: The ImageNet normalisation of torchvision's and most of timm's weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: How the image is fitted to the square input, as timm's ``crop_mode`` says.
CROP_MODES = ("center", "squash", "border")


class ImageLoadError(ValueError):
    """An image in ``X`` could not be read or decoded.

    The message names the file (or the position of the in-memory image) and the
    reason. It is a :class:`ValueError`, so code that guards scikit-learn input
    errors catches it too.
    """


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone's weights expect their images: timm's and torchvision's eval transform.

    With ``crop_mode="center"`` (the usual recipe) the shorter side is resized to
    :attr:`resize_size` (the longer side in proportion, truncated as torchvision
    does) and the central ``image_size`` square is cropped. ``"squash"`` resizes both
    sides to :attr:`resize_size`, ignoring the aspect ratio, then crops the centre;
    ``"border"`` resizes the longer side to :attr:`resize_size` and pads the shorter
    one with the mean colour before cropping. Pixels are then scaled to [0, 1] and
    normalised with ``mean`` and ``std``. The pixels equal those of timm's
    ``create_transform(**resolve_data_config(model=...))`` and of torchvision's
    ``weights.transforms()`` (tested to one grey level).

    Parameters
    ----------
    image_size : int
        Side of the square crop fed to the network.
    crop_pct : float
        Fraction of the resized image kept by the crop: :attr:`resize_size` is
        ``floor(image_size / crop_pct)``, as in timm.
    mean, std : tuple of float
        Per-channel normalisation, RGB order.
    interpolation : {"bilinear", "bicubic", "nearest", "lanczos"}
        Resampling filter for the resize.
    crop_mode : {"center", "squash", "border"}, default="center"
        How the image is fitted to the square, as above.
    resize : int or None, default=None
        The resize's side when the weights state it (torchvision's ``resize_size``,
        e.g. 232 for ResNet-50's V2 weights); None derives it from ``crop_pct``.

    Examples
    --------
    >>> from skconv.images import Preprocessing
    >>> p = Preprocessing(image_size=224, crop_pct=0.875)
    >>> p.resize_size
    256
    >>> p.replace(image_size=112).resize_size
    128
    """

    image_size: int = 224
    crop_pct: float = 0.875
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_mode: str = "center"
    resize: int | None = None

    def __post_init__(self):
        if self.crop_mode not in CROP_MODES:
            raise ValueError(
                f"crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}."
            )
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(
                f"interpolation must be one of {', '.join(_PIL_FILTERS)}, "
                f"got {self.interpolation!r}."
            )

    @property
    def resize_size(self) -> int:
        """Side of the resize before the crop (the shorter side, for ``"center"``)."""
        if self.resize is not None:
            return int(self.resize)
        return math.floor(self.image_size / self.crop_pct)

    def replace(self, **changes: Any) -> Preprocessing:
        """Return a copy with some fields changed.

        A new ``image_size`` keeps the crop fraction: an explicit ``resize`` is
        dropped in favour of ``crop_pct``.
        """
        if "image_size" in changes and "resize" not in changes and self.resize is not None:
            changes = {**changes, "resize": None, "crop_pct": self.image_size / self.resize}
        return Preprocessing(**{**self.__dict__, **changes})

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of an image of that size after the resize."""
        size = self.resize_size
        if self.crop_mode == "squash":
            return size, size
        if self.crop_mode == "border":  # timm's ResizeKeepRatio(longest=1)
            ratio = max(width, height) / size
            return round(width / ratio), round(height / ratio)
        # torchvision's Resize(int): the shorter side exactly, the longer one truncated.
        if min(width, height) == size:
            return width, height
        if width <= height:
            return size, int(size * height / width)
        return int(size * width / height), size

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the square crop in the resized frame.

        Parameters
        ----------
        width, height : int
            Size of the original image.

        Returns
        -------
        box : tuple of int
            The crop, in pixels of the image resized by :meth:`resized_size`; it
            reaches outside that frame where ``"border"`` pads.

        Examples
        --------
        >>> from skconv.images import Preprocessing
        >>> Preprocessing(image_size=224, crop_pct=0.875).crop_box(512, 256)
        (144, 16, 368, 240)
        """
        resized_width, resized_height = self.resized_size(width, height)
        left = _crop_start(resized_width, self.image_size)
        top = _crop_start(resized_height, self.image_size)
        return left, top, left + self.image_size, top + self.image_size

    def resize_image(self, image: Image.Image) -> Image.Image:
        """Resize a PIL image as :meth:`resized_size` says (the same image if unchanged)."""
        new_size = self.resized_size(*image.size)
        if new_size == image.size:
            return image
        return image.resize(new_size, resample=_PIL_FILTERS[self.interpolation])

    def crop(self, image: Image.Image) -> Image.Image:
        """Resize and crop a PIL image to the network's ``image_size`` square.

        Gray (``"L"``) images stay gray unless ``"border"`` padding needs a colour.
        """
        box = self.crop_box(*image.size)
        resized = self.resize_image(image)
        width, height = resized.size
        if box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height:
            return resized.crop(box)
        fill = tuple(round(255 * m) for m in self.mean)
        if resized.mode == "L" and len(set(fill)) > 1:
            resized = resized.convert("RGB")
        canvas = Image.new(resized.mode, (self.image_size, self.image_size), fill[0])
        if resized.mode != "L":
            canvas = Image.new(resized.mode, canvas.size, fill)
        canvas.paste(resized.crop(box), (0, 0))
        return canvas

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Resize, crop and normalise one RGB PIL image into a ``(3, s, s)`` tensor."""
        return self.normalize(_pil_to_tensor(self.crop(image)))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalise a float tensor in [0, 1], channels first (``(3, h, w)`` or batched)."""
        import torch

        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=batch.dtype).view(shape)
        std = torch.tensor(self.std, dtype=batch.dtype).view(shape)
        return (batch - mean) / std


def _crop_start(size: int, crop: int) -> int:
    """Where a centred ``crop`` starts in ``size``: torchvision's rounding, timm's padding."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    import torch

    array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _is_path(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike))


def n_images(X: Any) -> int:
    """Number of images in ``X`` without decoding any of them.

    Parameters
    ----------
    X : sequence of paths or PIL images, or ndarray
        Images in any form accepted by :func:`check_images`.

    Returns
    -------
    n : int
        The number of images.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.images import n_images
    >>> n_images(np.zeros((5, 8, 8), dtype=np.uint8))
    5
    """
    return len(check_images(X))


def check_images(X: Any) -> Sequence:
    """Validate the container of ``X`` and return something indexable by position.

    Only the container is checked here (cheaply, nothing is decoded): the kind of
    each element is checked when it is loaded.

    Parameters
    ----------
    X : sequence of paths or PIL images, or ndarray
        A list, tuple, pandas Series or 1-D array of file paths or PIL images; a
        ``uint8``, ``uint16`` or float array of shape ``(n, h, w)`` or
        ``(n, h, w, c)`` with ``c`` in {1, 3, 4}.

    Returns
    -------
    images : sequence
        ``X`` itself when it is already indexable by position, else a list.

    Raises
    ------
    ValueError
        If ``X`` is empty, a string (one path rather than a list of paths), or an
        array of the wrong shape, channel count or dtype.

    Examples
    --------
    >>> from skconv.images import check_images
    >>> check_images(["a.png", "b.png"])
    ['a.png', 'b.png']
    """
    if isinstance(X, (str, os.PathLike)):
        raise ValueError(
            f"X must be a sequence of images, got a single path {str(X)!r}; wrap it in a list."
        )
    if isinstance(X, Image.Image):
        raise ValueError("X must be a sequence of images, got a single PIL image; wrap it.")
    if hasattr(X, "iloc") and hasattr(X, "to_numpy"):  # pandas Series/DataFrame column
        X = X.to_numpy()
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("Sparse input is not supported: X must hold images, not a sparse matrix.")
    if not isinstance(X, np.ndarray) and hasattr(X, "__array__"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray):
        if X.dtype == object or X.dtype.kind in "US":
            if X.ndim == 2 and X.shape[1] == 1:  # a DataFrame column turned 2-D
                X = X[:, 0]
            if X.ndim != 1:
                raise ValueError(
                    f"An array of paths or PIL images must be 1-D, got shape {X.shape}."
                )
        else:
            _check_pixel_array(X)
    elif not hasattr(X, "__len__") or not hasattr(X, "__getitem__"):
        X = list(X)
    if len(X) == 0:
        raise ValueError("X contains no images (length 0); at least one is required.")
    return X


def _check_pixel_array(X: np.ndarray) -> None:
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: image arrays must be real.")
    if X.dtype.kind not in "uif" or X.dtype == np.bool_:
        raise ValueError(f"An image array must have an integer or float dtype, got {X.dtype}.")
    _check_integer_dtype(X.dtype, "X")
    if X.ndim not in (3, 4):
        raise ValueError(
            "An image array must have shape (n, h, w) or (n, h, w, c) with c in "
            f"{{1, 3, 4}}, got shape {X.shape}."
        )
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"An image array must have 1, 3 or 4 channels in its last axis, got "
            f"shape {X.shape} ({X.shape[-1]} channels)."
        )
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"An image array must have non-empty images, got shape {X.shape}.")
    if X.dtype.kind == "f" and X.size and not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity; float images must lie in [0, 1].")


def _check_integer_dtype(dtype: np.dtype, name: str) -> None:
    # An int64 array of 0-255 values would otherwise be read as 16-bit and come out
    # nearly black: the range of a user's integer array is not guessed.
    if dtype.kind in "ui" and dtype not in (np.uint8, np.uint16):
        raise ImageLoadError(
            f"{name} has dtype {dtype}; integer images must be uint8 (0-255) or uint16 "
            "(0-65535): cast it, e.g. X.astype(np.uint8), so that no pixel range is guessed."
        )


def load_image(
    item: Any, *, where: str = "", keep_gray: bool = False, min_side: int | None = None
) -> Image.Image:
    """Load one element of ``X`` as an RGB PIL image.

    Parameters
    ----------
    item : path-like, PIL image or ndarray
        A file path, a PIL image of any mode, or one image as an array of shape
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
        return _load_file(os.fspath(item), keep_gray, min_side)
    if isinstance(item, Image.Image):
        return _to_rgb(item, name=where or "PIL image", keep_gray=keep_gray)
    if isinstance(item, np.ndarray):
        _check_integer_dtype(item.dtype, where or "array")
        return _array_to_pil(item, name=where or "array", keep_gray=keep_gray)
    raise ImageLoadError(
        f"{where or 'An element of X'} is a {type(item).__name__}; expected a file "
        "path, a PIL image or a numpy array."
    )


def _load_file(path: str, keep_gray: bool = False, min_side: int | None = None) -> Image.Image:
    path = str(path)  # a NumPy string would show as np.str_('...') in the messages
    if not os.path.exists(path):
        raise ImageLoadError(f"Image file not found: {path!r}.")
    if os.path.isdir(path):
        raise ImageLoadError(f"Expected an image file but {path!r} is a directory.")
    try:
        with Image.open(path, formats=_open_formats()) as image:
            _check_pixel_count(image, path)
            if min_side:  # a no-op for every format but JPEG (and its MPO variant)
                image.draft(image.mode, (min_side, min_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image, name=path, keep_gray=keep_gray)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
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


def describe(X: Sequence, index: int) -> str:
    """Name element ``index`` of ``X`` for messages: its path, or ``X[index]``."""
    item = X[index]
    return os.fspath(item) if _is_path(item) else f"X[{index}]"


def _decode_rows(
    X: Sequence,
    indices: list,
    preprocessing: Preprocessing,
    write,
    *,
    n_threads: int,
    jpeg_draft: bool,
) -> None:
    """Decode and crop ``X[indices[row]]`` for every row; ``write(row, uint8 array)`` stores it.

    Arrays are ``(s, s)`` for gray images (one channel resized, a third of the work) and
    ``(s, s, 3)`` otherwise. Threads each take a contiguous block of rows: Pillow and
    NumPy release the GIL while they decode, resize and copy.
    """
    min_side = 2 * preprocessing.resize_size if jpeg_draft else None

    def fill(rows: range) -> None:
        for row in rows:
            index = indices[row]
            image = load_image(X[index], where=f"X[{index}]", keep_gray=True, min_side=min_side)
            write(row, np.asarray(preprocessing.crop(image), dtype=np.uint8))

    n_threads = max(1, min(int(n_threads), len(indices)))
    if n_threads == 1:
        fill(range(len(indices)))
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, len(indices), n_threads + 1).astype(int)
    with ThreadPoolExecutor(n_threads, thread_name_prefix="skconv-decode") as pool:
        # list() re-raises the first error, naming its file.
        list(pool.map(fill, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))


def _checked_out(out, shape: tuple, dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous {np.dtype(dtype).name} array of shape {shape}, got "
            f"{out.dtype} {out.shape}."
        )
    return out


def crop_batch(
    X: Sequence,
    indices: Sequence[int],
    preprocessing: Preprocessing,
    *,
    n_threads: int = 1,
    out: np.ndarray | None = None,
    jpeg_draft: bool = False,
) -> np.ndarray:
    """Decode, resize and crop some images of ``X`` into one ``uint8`` RGB batch.

    The pixels :func:`load_batch` normalises, before normalisation: the input of an
    exported ONNX model (:func:`skconv.export_onnx`) and of the ONNX Runtime engine,
    which normalise inside the graph. Needs no torch.

    Parameters
    ----------
    X : sequence
        Images in any form :func:`check_images` accepts.
    indices : sequence of int
        Which images of ``X`` make the batch, in order.
    preprocessing : Preprocessing
        The resize and crop to apply (its normalisation is not applied here).
    n_threads : int, default=1
        Threads decoding the images, each filling its own rows.
    out : ndarray of uint8, shape ``(len(indices), s, s, 3)``, default=None
        Memory to fill and return; None allocates.
    jpeg_draft : bool, default=False
        As in :func:`load_batch`.

    Returns
    -------
    batch : ndarray of uint8, shape ``(len(indices), s, s, 3)``
        RGB pixels, channels last.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.images import Preprocessing, crop_batch
    >>> crop_batch(np.zeros((3, 32, 40), dtype=np.uint8), [0, 2], Preprocessing(16)).shape
    (2, 16, 16, 3)
    """
    indices = list(indices)
    size = preprocessing.image_size
    batch = _checked_out(out, (len(indices), size, size, 3), np.uint8)

    def write(row: int, pixels: np.ndarray) -> None:
        batch[row] = pixels if pixels.ndim == 3 else pixels[..., None]

    _decode_rows(X, indices, preprocessing, write, n_threads=n_threads, jpeg_draft=jpeg_draft)
    return batch


def load_batch(
    X: Sequence,
    indices: Sequence[int],
    preprocessing: Preprocessing,
    *,
    n_threads: int = 1,
    out: np.ndarray | None = None,
    jpeg_draft: bool = False,
) -> torch.Tensor:
    """Decode and preprocess some images of ``X`` into one normalised batch.

    The same pixels as stacking ``preprocessing(load_image(X[i], min_side=m))``,
    with ``m`` None or, with ``jpeg_draft``, twice ``preprocessing.resize_size``, built
    with less work: gray images are resized on one channel, each 8-bit level is normalised
    through a 256-entry table instead of float arithmetic over the batch, in NumPy
    (single-threaded, so a decoding thread does not compete with the network's
    threads), and the batch comes out channels-last, the layout the network wants on
    CPU and CUDA.

    Parameters
    ----------
    X : sequence
        Images in any form :func:`check_images` accepts.
    indices : sequence of int
        Which images of ``X`` make the batch, in order.
    preprocessing : Preprocessing
        The resize, crop and normalisation to apply.
    n_threads : int, default=1
        Threads decoding the images, each filling its own rows of the batch (Pillow
        and NumPy release the GIL while they decode and look up).
    out : ndarray of float32, shape ``(len(indices), s, s, 3)``, default=None
        Memory to fill and return (as a tensor view), e.g. one buffer reused batch
        after batch: a fresh batch of 32 images at 224 px is 19 MB of new pages for
        the kernel to fault in. None allocates.
    jpeg_draft : bool, default=False
        Decode JPEG files at the smallest of libjpeg's 1/1, 1/2, 1/4 and 1/8 scales that
        keeps both sides at least twice the resize's shorter side, before the usual
        resize: the reduction margin of Pillow's ``thumbnail``. See ``min_side`` in
        :func:`load_image`.

    Returns
    -------
    batch : torch.Tensor of float32, shape ``(len(indices), 3, s, s)``
        Normalised pixels in channels-last memory format.

    Raises
    ------
    ImageLoadError
        If an image cannot be decoded; the message names the file or index.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skconv.images import Preprocessing, load_batch
    >>> X = np.zeros((3, 32, 40), dtype=np.uint8)
    >>> batch = load_batch(X, [0, 2], Preprocessing(image_size=16))
    >>> tuple(batch.shape), batch.is_contiguous(memory_format=torch.channels_last)
    ((2, 3, 16, 16), True)
    """
    import torch

    # Normalised value of each 8-bit level, per channel: the same float32 operations as
    # Preprocessing.normalize, so the pixels are bit-identical, but a lookup per pixel
    # instead of four passes over a float batch.
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    table = (levels[:, None] - mean) / std  # (256, 3)
    columns = np.ascontiguousarray(table.T)  # (3, 256)
    indices = list(indices)
    size = preprocessing.image_size
    batch = _checked_out(out, (len(indices), size, size, 3), np.float32)

    def write(row: int, pixels: np.ndarray) -> None:
        if pixels.ndim == 2:  # one lookup fills the three channels
            np.take(table, pixels, axis=0, out=batch[row])
        else:
            for channel in range(3):
                batch[row, ..., channel] = columns[channel][pixels[..., channel]]

    _decode_rows(X, indices, preprocessing, write, n_threads=n_threads, jpeg_draft=jpeg_draft)
    return torch.from_numpy(batch).permute(0, 3, 1, 2)  # NCHW view of NHWC memory


def __getattr__(name: str):
    # ImageDataset subclasses torch's Dataset, so defining it imports torch: it is built
    # on first use, and importing this module stays torch-free.
    if name == "ImageDataset":
        from ._torch_data import ImageDataset

        return ImageDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
