"""The data of fine-tuning: augmentation, image datasets, and cached trunk outputs.

When only the last layers are trained, the frozen layers before them compute the same
thing every epoch for the same input. :func:`trunk_views` therefore runs them once per
*view* of each training image (the plain center crop, then augmented versions) and keeps
the feature maps; every epoch then trains on one view of each image
(:class:`TrunkViews`), at the cost of the trained layers alone.
"""

from __future__ import annotations

import torch

from ..images import Preprocessing, load_image

__all__ = ["TrainAugmentation", "TrunkViews", "trunk_views"]


class TrainAugmentation:
    """Training-only augmentation for grayscale medical images and photos alike.

    Random resized crop (``scale`` of the area), horizontal flip, a small
    rotation and brightness/contrast jitter, then the backbone's normalisation.
    No vertical flip: ultrasound and X-ray images have a meaningful top.

    Parameters
    ----------
    preprocessing : Preprocessing
        Output size, interpolation and normalisation of the backbone.
    scale : tuple of float, default=(0.6, 1.0)
        Range of the crop's share of the image area.
    rotation : float, default=10
        Largest rotation in degrees.
    brightness, contrast : float, default=0.2
        Strength of the colour jitter.

    Examples
    --------
    >>> from PIL import Image
    >>> from skconv.images import Preprocessing
    >>> from skconv.finetune import TrainAugmentation
    >>> augment = TrainAugmentation(Preprocessing(image_size=32))
    >>> augment(Image.new("RGB", (64, 48))).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        preprocessing: Preprocessing,
        scale: tuple = (0.6, 1.0),
        rotation: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
    ):
        self.preprocessing = preprocessing
        self.scale = scale
        self.rotation = rotation
        self.brightness = brightness
        self.contrast = contrast

    def _pipeline(self):
        from torchvision.transforms import v2

        modes = {
            "bicubic": v2.InterpolationMode.BICUBIC,
            "bilinear": v2.InterpolationMode.BILINEAR,
            "nearest": v2.InterpolationMode.NEAREST,
        }
        mode = modes.get(self.preprocessing.interpolation, v2.InterpolationMode.BILINEAR)
        size = self.preprocessing.image_size
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=self.scale, interpolation=mode, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomRotation(self.rotation, interpolation=v2.InterpolationMode.BILINEAR),
                v2.ColorJitter(brightness=self.brightness, contrast=self.contrast),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def __call__(self, image) -> torch.Tensor:
        if getattr(self, "_compiled", None) is None:
            self._compiled = self._pipeline()
        return self.preprocessing.normalize(self._compiled(image))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_compiled", None)  # rebuilt on first use; keeps pickles small and portable
        return state


class _ImageSet(torch.utils.data.Dataset):
    """Images and integer targets; ``y`` keeps the original labels for skorch's scorers."""

    def __init__(self, X, codes, labels, transform):
        self.X = X
        self.codes = codes
        self.y = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int):
        image = load_image(self.X[index], where=f"X[{index}]")
        code = 0 if self.codes is None else int(self.codes[index])
        return self.transform(image), code

    def with_transform(self, transform) -> _ImageSet:
        return _ImageSet(self.X, self.codes, self.y, transform)


class TrunkViews(torch.utils.data.Dataset):
    """Cached trunk outputs of several views of each image, one view per epoch.

    Items are ``({"trunk_output": map}, code)``: skorch calls the module with the
    dict's entries as keyword arguments (``FineTuneNet(trunk_output=map)``).

    Parameters
    ----------
    maps : torch.Tensor of shape (n_views, n_images, ...)
        Feature maps of the trunk, float16 to halve the memory.
    codes : ndarray of shape (n_images,)
        Integer targets.
    labels : ndarray of shape (n_images,)
        The original labels, for skorch's scorers.
    indices : ndarray or None, default=None
        The images' positions in the ``X`` given to ``fit``, when they are a subset.
    """

    def __init__(self, maps: torch.Tensor, codes, labels, indices=None):
        self.maps = maps
        self.codes = codes
        self.y = labels
        self.indices = indices
        self.view = 0

    def __len__(self) -> int:
        return self.maps.shape[1]

    def __getitem__(self, index: int):
        code = 0 if self.codes is None else int(self.codes[index])
        return {"trunk_output": self.maps[self.view, index].float()}, code


class _Views(torch.utils.data.Dataset):
    """Image ``i`` decoded once, then its plain crop and ``n_views - 1`` augmented ones."""

    def __init__(self, images, preprocessing: Preprocessing, augmentation, n_views: int):
        self.images = images
        self.preprocessing = preprocessing
        self.augmentation = augmentation
        self.n_views = n_views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = load_image(self.images[index], where=f"X[{index}]")
        views = [self.preprocessing(image)]
        views += [self.augmentation(image) for _ in range(self.n_views - 1)]
        return torch.stack(views)


def trunk_views(
    trunk: torch.nn.Module,
    images,
    preprocessing: Preprocessing,
    augmentation,
    n_views: int,
    *,
    seed: int,
    batch_size: int = 32,
    num_workers: int = 0,
    device="cpu",
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """Run ``trunk`` once on each view of each image; ``(n_views, n_images, ...)`` maps.

    View 0 is the plain center crop (what prediction sees); views 1 and on are drawn by
    ``augmentation`` from a generator seeded with ``seed``, so that the same seed gives
    the same views (a resumed fit recomputes them identically).

    Parameters
    ----------
    trunk : torch.nn.Module
        The frozen layers, in eval mode.
    images : sequence
        Images as :func:`skconv.images.load_image` takes them.
    preprocessing : Preprocessing
        The plain view.
    augmentation : callable
        PIL image -> normalised tensor, random (e.g. :class:`TrainAugmentation`).
    n_views : int
        Views per image, the plain one included.
    seed : int
        Seeds the augmentation.
    batch_size : int, default=32
        Images per forward pass (each with its ``n_views`` views).
    num_workers : int, default=0
        DataLoader processes decoding and augmenting.
    device : str or torch.device, default="cpu"
        Where the trunk runs; the maps are kept on the CPU.
    dtype : torch.dtype, default=torch.float16
        How the maps are kept: float16 halves the memory of many views, at a rounding
        of about 1e-3 relative that training does not notice.

    Returns
    -------
    maps : torch.Tensor
        The trunk's feature maps, ``(n_views, n_images, channels, height, width)``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skconv.images import Preprocessing
    >>> from skconv.finetune import TrainAugmentation
    >>> from skconv.finetune._data import trunk_views
    >>> trunk = torch.nn.Conv2d(3, 4, 3, stride=2).eval()
    >>> prep = Preprocessing(image_size=16)
    >>> X = np.zeros((5, 20, 20), dtype=np.uint8)
    >>> trunk_views(trunk, X, prep, TrainAugmentation(prep), 3, seed=0).shape
    torch.Size([3, 5, 4, 7, 7])
    """
    dataset = _Views(images, preprocessing, augmentation, n_views)
    maps = None
    start = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
        )
        with torch.inference_mode():
            for batch in loader:  # (b, n_views, 3, s, s)
                n = len(batch)
                flat = batch.flatten(0, 1).to(device)
                if torch.device(device).type in ("cpu", "cuda"):
                    flat = flat.contiguous(memory_format=torch.channels_last)
                out = trunk(flat)
                out = out.reshape(n, n_views, *out.shape[1:]).transpose(0, 1)
                if maps is None:
                    maps = torch.empty(
                        (n_views, len(dataset), *out.shape[2:]), dtype=torch.float16
                    )
                maps[:, start : start + n] = out.to("cpu", torch.float16)
                start += n
    return maps
