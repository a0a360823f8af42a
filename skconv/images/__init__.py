"""Decoding ``X`` (file paths, PIL images, arrays) and batching it for a network.

Every estimator in skconv takes the same ``X``. A sequence or 1-D array of file
paths is the normal case: nothing is decoded until a batch needs it, and because
``X`` is an ordinary array, every scikit-learn splitter can index it. Lists of
PIL images and ``uint8``/float arrays work too. Whatever comes in leaves as an
RGB image: grayscale is repeated over three channels, alpha is dropped, 16-bit
images are scaled (not clipped) to 8 bits and EXIF orientation is applied. DICOM
files (by their ``.dcm`` name or their content) decode as a viewer shows them, with
the file's window; :class:`DicomPath` chooses another window or a frame.

:func:`load_image` is the one hardened decoder of the package (no EPS, whose loader
runs Ghostscript; a pixel limit against decompression bombs; errors that name the
file). Importing this package does not import torch: splitting data and running an
exported ONNX model decode images too, and need neither torch nor its start-up time.
Only the functions that return tensors import it.

The parts: ``_checks`` (what ``X`` may be, :class:`ImageLoadError`), ``_decode``
(one image), ``_dicom`` (DICOM files), ``_preprocessing`` (:class:`Preprocessing`),
``_batch`` (many images into one array) and ``_dataset`` (:class:`ImageDataset`, the
one torch dataset).
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from ._batch import crop_batch, load_batch
from ._checks import ImageLoadError, check_images, n_images
from ._checks import describe as describe  # public, outside __all__ as in skconv 0.1
from ._decode import load_image
from ._dicom import DicomPath, dicom_paths, is_dicom
from ._preprocessing import CROP_MODES as CROP_MODES
from ._preprocessing import IMAGENET_MEAN as IMAGENET_MEAN
from ._preprocessing import IMAGENET_STD as IMAGENET_STD
from ._preprocessing import Preprocessing, pil_to_tensor

__all__ = [
    "DicomPath",
    "ImageLoadError",
    "Preprocessing",
    "ImageDataset",  # noqa: F822 (defined on first use, see __getattr__)
    "check_images",
    "crop_batch",
    "dicom_paths",
    "is_dicom",
    "load_batch",
    "load_image",
    "n_images",
    "pil_to_tensor",
]

# Where users import them from, and what pickles and skops files name (skconv 0.1
# defined them in the module skconv.images).
for _public in (DicomPath, ImageLoadError, Preprocessing):
    _public.__module__ = __name__
del _public


# ImageDataset subclasses torch's Dataset, so defining it imports torch: it is built on
# first use, and importing this package stays torch-free.
__getattr__, __dir__ = lazy_attributes(__name__, {"ImageDataset": "_dataset"})
