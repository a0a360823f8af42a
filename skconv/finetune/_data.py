"""The data of fine-tuning: augmentation, image datasets, and cached trunk outputs.

When only the last layers are trained, the frozen layers before them compute the same
thing every epoch for the same input. :func:`trunk_views` therefore runs them once per
*view* of each training image (the plain center crop, then augmented versions) and keeps
the feature maps; every epoch then trains on one view of each image
(:class:`TrunkViews`), at the cost of the trained layers alone.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..engine import forward_in_chunks
from ..images import Preprocessing, check_images, load_batch, load_image

__all__ = ["TrainAugmentation", "TrunkViews", "trunk_views"]


class TrainAugmentation:
    """Training-only augmentation for grayscale medical images and photos alike.

    A random resized crop (``scale`` of the area, aspect ratio in ``ratio``), a
    horizontal flip, a small rotation and brightness/contrast jitter, then the
    backbone's normalisation. No vertical flip: ultrasound and X-ray images have a
    meaningful top. Crop, flip and rotation are one affine map per view, sampled
    bilinearly from the image resized once to the preprocessing's resize size, and
    several views of one image are drawn in one batched call (:meth:`views`); a gray
    image is augmented on its one channel. Random draws come from torch's generator.

    Parameters
    ----------
    preprocessing : Preprocessing
        Output size, resize and normalisation of the backbone.
    scale : tuple of float, default=(0.6, 1.0)
        Range of the crop's share of the image area.
    ratio : tuple of float, default=(3/4, 4/3)
        Range of the crop's aspect ratio (width / height), drawn log-uniformly.
    rotation : float, default=10
        Largest rotation in degrees.
    brightness, contrast : float, default=0.2
        Strength of the jitter: factors drawn from ``[1 - s, 1 + s]``.

    Examples
    --------
    >>> from PIL import Image
    >>> from skconv.images import Preprocessing
    >>> from skconv.finetune import TrainAugmentation
    >>> augment = TrainAugmentation(Preprocessing(image_size=32))
    >>> augment(Image.new("RGB", (64, 48))).shape
    torch.Size([3, 32, 32])
    >>> augment.views(Image.new("L", (64, 48)), 4).shape
    torch.Size([4, 3, 32, 32])
    """

    def __init__(
        self,
        preprocessing: Preprocessing,
        scale: tuple = (0.6, 1.0),
        ratio: tuple = (3 / 4, 4 / 3),
        rotation: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
    ):
        self.preprocessing = preprocessing
        self.scale = scale
        self.ratio = ratio
        self.rotation = rotation
        self.brightness = brightness
        self.contrast = contrast

    def __call__(self, image) -> torch.Tensor:
        return self.views(image, 1)[0]

    def views(self, image, n: int) -> torch.Tensor:
        """``n`` augmented views of one PIL image, normalised: ``(n, 3, s, s)``."""
        # Tensors of one image are too small for threads to pay: on a busy machine,
        # waiting for the pool's threads cost 6 times the work (measured, 2 cores).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._views(image, n)
        finally:
            torch.set_num_threads(threads)

    def _views(self, image, n: int) -> torch.Tensor:
        import torch.nn.functional as F

        resized = self.preprocessing.resize_image(image)
        if resized.mode not in ("L", "RGB"):
            resized = resized.convert("RGB")
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy())
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        pixels = pixels.float().div_(255.0)[None]  # (1, c, h, w)
        channels, height, width = pixels.shape[1:]
        size = self.preprocessing.image_size
        # The sampling grid as one matrix product: F.affine_grid is far slower on a CPU.
        grid = (_base_grid(size) @ self._thetas(n, width, height).transpose(1, 2)).view(
            n, size, size, 2
        )
        out = F.grid_sample(pixels.expand(n, -1, -1, -1), grid, align_corners=False)
        out = (out * _factors(n, self.brightness)).clamp_(0, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)  # contrast blends with the mean grey
        out = ((out - mean) * _factors(n, self.contrast) + mean).clamp_(0, 1)
        if channels == 1:
            out = out.expand(-1, 3, -1, -1)
        return self.preprocessing.normalize(out)

    def _thetas(self, n: int, width: int, height: int) -> torch.Tensor:
        """Affine maps from output to input coordinates: crop, flip, rotation."""
        area = width * height * _uniform(n, *self.scale)
        log_ratio = _uniform(n, np.log(self.ratio[0]), np.log(self.ratio[1]))
        aspect = torch.exp(log_ratio)
        crop_w = torch.sqrt(area * aspect).clamp(max=width)
        crop_h = torch.sqrt(area / aspect).clamp(max=height)
        center_x = crop_w / 2 + (width - crop_w) * torch.rand(n)
        center_y = crop_h / 2 + (height - crop_h) * torch.rand(n)
        flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
        angle = torch.deg2rad(_uniform(n, -self.rotation, self.rotation))
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.empty(n, 2, 3)
        theta[:, 0, 0] = cos * flip * crop_w / width
        theta[:, 0, 1] = -sin * crop_h / width
        theta[:, 0, 2] = 2 * center_x / width - 1
        theta[:, 1, 0] = sin * flip * crop_w / height
        theta[:, 1, 1] = cos * crop_h / height
        theta[:, 1, 2] = 2 * center_y / height - 1
        return theta


@functools.lru_cache(maxsize=4)
def _base_grid(size: int) -> torch.Tensor:
    """Output pixel centres in [-1, 1] (align_corners=False), as rows ``(x, y, 1)``."""
    centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).view(1, size * size, 3)


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n)


def _factors(n: int, strength: float) -> torch.Tensor:
    return _uniform(n, 1 - strength, 1 + strength).view(n, 1, 1, 1)


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
        code = 0 if self.codes is None else int(self.codes[index])
        if isinstance(self.transform, Preprocessing):
            # The plain crop through load_batch: NumPy's table lookup, no torch threads.
            return load_batch(self.X, [index], self.transform)[0].contiguous(), code
        image = load_image(self.X[index], where=f"X[{index}]", keep_gray=True)
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
        image = load_image(self.images[index], where=f"X[{index}]", keep_gray=True)
        plain = load_batch([image], [0], self.preprocessing).contiguous()
        if self.n_views == 1:
            return plain
        return torch.cat([plain, self.augmentation.views(image, self.n_views - 1)])


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
        Images decoded and augmented at a time (each with its ``n_views`` views); on a
        CPU the trunk runs them a few views at a time (:func:`forward_in_chunks`).
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
                out = forward_in_chunks(trunk, flat, device)
                out = out.reshape(n, n_views, *out.shape[1:]).transpose(0, 1)
                if maps is None:
                    maps = torch.empty((n_views, len(dataset), *out.shape[2:]), dtype=dtype)
                maps[:, start : start + n] = out.to("cpu", dtype)
                start += n
    return maps


def retransform(dataset, transform):
    """``dataset`` (an image set or a subset of one) with another ``transform``."""
    if isinstance(dataset, _ImageSet):
        return dataset.with_transform(transform)
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, _ImageSet):
        return torch.utils.data.Subset(dataset.dataset.with_transform(transform), dataset.indices)
    return dataset


def images_of(dataset):
    """The images, integer targets and labels behind an image dataset or a subset of one."""
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, _ImageSet):
        inner, index = dataset.dataset, np.asarray(dataset.indices)
        images = [inner.X[i] for i in index]
        codes = None if inner.codes is None else np.asarray(inner.codes)[index]
        labels = None if inner.y is None else np.asarray(inner.y)[index]
        return images, codes, labels
    if isinstance(dataset, _ImageSet):
        return dataset.X, None if dataset.codes is None else np.asarray(dataset.codes), dataset.y
    raise TypeError(
        f"Training only some layers needs the images themselves, got a {type(dataset).__name__}; "
        "pass X as images, or train_layers='all'."
    )


def trunk_datasets(
    module,
    stage: str,
    train,
    valid,
    *,
    preprocessing: Preprocessing,
    augmentation,
    n_views: int,
    view_seed: int,
    batch_size: int,
    num_workers: int,
    device,
    known: TrunkViews | None = None,
) -> tuple[TrunkViews, TrunkViews | None]:
    """Cut ``module`` after ``stage``, freeze the trunk, and cache its outputs.

    The training images get ``n_views`` views (float16, seeded by ``view_seed``), the
    validation images their plain view in float32: their loss is the network's own.
    The trunk runs with its batch norms folded (:meth:`FineTuneNet.frozen_trunk`).
    ``known`` holds views of the first training images already computed by the same
    trunk (the refit's: the first pass's training part); only the others are run.
    """
    _, tail = module.parts(stage)
    trainable = {id(p) for p in tail.parameters()}
    for param in module.backbone.parameters():
        param.requires_grad_(id(param) in trainable)
    fast_trunk = module.frozen_trunk(stage)  # what computes the views

    def views(dataset, n, seed, dtype, known=None):
        images, codes, labels = images_of(dataset)
        done = _usable(known, n, codes)
        maps = known.maps if done else None
        if done < len(images):
            new = trunk_views(
                fast_trunk,
                images[done:],
                preprocessing,
                augmentation,
                n,
                seed=seed + 1 if done else seed,  # the new images' own draws
                batch_size=batch_size,
                num_workers=num_workers,
                device=device,
                dtype=dtype,
            )
            maps = new if maps is None else torch.cat([maps, new], dim=1)
        return TrunkViews(maps, codes, labels, getattr(dataset, "indices", None))

    train = views(train, n_views, view_seed, torch.float16, known)
    valid = None if valid is None else views(valid, 1, 0, torch.float32)
    return train, valid


def _usable(known: TrunkViews | None, n_views: int, codes) -> int:
    """How many leading images ``known`` covers (0 when its views do not fit)."""
    if known is None or known.maps.shape[0] != n_views or codes is None:
        return 0
    done = len(known)
    if done > len(codes) or not np.array_equal(known.codes, codes[:done]):
        return 0
    return done


def as_eval_dataset(dataset, preprocessing: Preprocessing, encode):
    """A validation dataset of images and codes; skorch's ``Dataset(X, y)`` is converted."""
    if dataset is None or isinstance(dataset, (_ImageSet, torch.utils.data.Subset)):
        return dataset
    if hasattr(dataset, "X") and hasattr(dataset, "y"):
        # e.g. skorch.helper.predefined_split(skorch.dataset.Dataset(X_val, y_val))
        images = check_images(dataset.X)
        if dataset.y is None:
            raise ValueError("The validation dataset needs labels (y).")
        return _ImageSet(images, encode(dataset.y), np.asarray(dataset.y), preprocessing)
    return dataset
