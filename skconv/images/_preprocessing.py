"""Preprocessing: how a backbone's weights expect their images (resize, crop, normalise)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: The ImageNet normalisation of torchvision's and most of timm's weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: How the image is fitted to the square input, as timm's ``crop_mode`` says.
CROP_MODES = ("center", "squash", "border")


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
        return self.normalize(pil_to_tensor(self.crop(image)))

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


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float ``(3, h, w)`` tensor in [0, 1] (no normalisation).

    Parameters
    ----------
    image : PIL.Image.Image
        The image; converted to RGB first if it is not.

    Returns
    -------
    tensor : torch.Tensor
        ``(3, h, w)`` float32.

    Examples
    --------
    >>> from PIL import Image
    >>> from skconv.images import pil_to_tensor
    >>> pil_to_tensor(Image.new("RGB", (4, 2), (255, 0, 0)))[:, 0, 0].tolist()
    [1.0, 0.0, 0.0]
    """
    import torch

    array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
