"""ImageDataset: ``X`` as a torch map-style dataset (kept apart so skconv.images is torch-free)."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import check_images
from ._decode import load_image

__all__ = ["ImageDataset"]


class ImageDataset(torch.utils.data.Dataset):
    """A torch dataset over ``X`` that decodes and preprocesses lazily.

    Parameters
    ----------
    X : sequence of paths or PIL images, or ndarray
        Images in any form accepted by :func:`check_images`.
    transform : callable
        Maps an RGB PIL image to a tensor, e.g. a :class:`Preprocessing`.
    y : array-like, default=None
        Targets returned beside each image; when None, a dummy 0 is returned so
        that skorch and DataLoader see ``(image, target)`` pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.images import ImageDataset, Preprocessing
    >>> ds = ImageDataset(np.zeros((2, 32, 40), dtype=np.uint8), Preprocessing(image_size=16))
    >>> ds[0][0].shape
    torch.Size([3, 16, 16])
    """

    def __init__(self, X: Any, transform, y: Any = None):
        self.X = check_images(X)
        self.transform = transform
        self.y = y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int):
        item = self.X[index]
        image = load_image(item, where=f"X[{index}]")
        tensor = self.transform(image)
        target = 0 if self.y is None else self.y[index]
        return tensor, target


ImageDataset.__module__ = "skconv.images"  # where users import it from
