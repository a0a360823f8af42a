"""Batch-norm folding: each batch norm that only rescales a convolution's output goes into it."""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import nn

__all__ = ["fold_batch_norms", "folding_example"]


def _conv_types() -> tuple[type, ...]:
    types: list[type] = [nn.Conv2d]
    try:  # TF-"same" padding pads, then calls conv2d with the module's weight and bias
        from timm.layers import Conv2dSame

        types.append(Conv2dSame)
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return tuple(types)


def _replacement(bn: nn.Module) -> nn.Module | None:
    """What stays of ``bn`` once its affine map is in the conv; None if unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:  # pragma: no cover
        return None
    if type(bn) is BatchNormAct2d:  # batch_norm, then drop, then act
        return nn.Sequential(bn.drop, bn.act)
    return None


def _foldable_pairs(module: nn.Module, example: torch.Tensor, stages: Sequence[str]):
    """``(conv_name, bn_name)`` for each conv whose output only a batch norm reads."""
    conv_types = _conv_types()
    names: dict[int, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        names.setdefault(id(sub), []).append(name)
    calls: dict[int, int] = {}
    conv_outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv, _inputs, output):
        calls[id(conv)] = calls.get(id(conv), 0) + 1
        conv_outputs[id(output)] = (conv, output)  # the tensor is kept alive: ids stay unique

    def before_bn(bn, inputs):
        calls[id(bn)] = calls.get(id(bn), 0) + 1
        seen = conv_outputs.get(id(inputs[0]))
        if seen is not None and seen[1] is inputs[0]:
            pairs.append((seen[0], bn))

    handles = []
    for sub in module.modules():
        if type(sub) in conv_types:
            handles.append(sub.register_forward_hook(after_conv))
        elif _replacement(sub) is not None:
            handles.append(sub.register_forward_pre_hook(before_bn))
    # Every stage the body can return: a conv whose output is itself returned (torchvision's
    # "conv1") must keep it, so it is not folded.
    all_stages = list(getattr(module, "stage_names", stages))
    try:
        with torch.no_grad():
            returned = {id(t) for t in module(example, all_stages)}
    finally:
        for handle in handles:
            handle.remove()
    # A conv output read by two batch norms, or a module that runs twice or sits at two
    # places in the tree, would be changed for every use: leave those alone.
    conv_uses: dict[int, int] = {}
    for conv, _ in pairs:
        conv_uses[id(conv)] = conv_uses.get(id(conv), 0) + 1
    outputs_of = {id(conv): id(out) for conv, out in conv_outputs.values()}
    return [
        (names[id(conv)][0], names[id(bn)][0])
        for conv, bn in pairs
        if calls[id(conv)] == 1
        and calls[id(bn)] == 1
        and conv_uses[id(conv)] == 1
        and len(names[id(conv)]) == 1
        and len(names[id(bn)]) == 1
        and outputs_of[id(conv)] not in returned
        and bn.running_mean is not None
        and bn.running_var is not None
    ]


def folding_example(size: int, device) -> torch.Tensor:
    """The batch :func:`fold_batch_norms` checks a folded copy on: two seeded random
    ``size`` x ``size`` images on ``device``, channels-last where the engines run so.

    Examples
    --------
    >>> from skconv.engine import folding_example
    >>> folding_example(32, "cpu").shape
    torch.Size([2, 3, 32, 32])
    """
    device = torch.device(device)
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    example = example.to(device)
    if device.type in ("cpu", "cuda"):
        example = example.contiguous(memory_format=torch.channels_last)
    return example


def fold_batch_norms(
    module: nn.Module,
    example: torch.Tensor,
    stages: Sequence[str] = ("final",),
    *,
    rtol: float = 1e-3,
) -> tuple[nn.Module, int]:
    """Return an eval-mode copy of ``module`` with batch norms folded into convolutions.

    In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one
    convolution with rescaled weights and a bias (torch's ``fuse_conv_bn_weights``). On
    CPUs the separate normalisation is a full extra pass over every feature map.

    Only pairs seen in an actual forward pass are folded: the batch norm's input must
    be the very tensor the convolution returned, each module must run once, and both
    must be of a type whose forward is known. The folded copy is then checked against
    the original on ``example``; if any stage differs by more than rounding, the
    original is returned unchanged with a RuntimeWarning.

    Parameters
    ----------
    module : torch.nn.Module
        A feature network called as ``module(x, stages)`` that returns a list of
        tensors (a :class:`skconv.zoo.FeatureNet`). It is not modified.
    example : torch.Tensor
        A small input batch, used to find which convolution feeds which batch norm
        and to check the folded copy.
    stages : sequence of str, default=("final",)
        Stages compared between the original and the folded copy.
    rtol : float, default=1e-3
        Largest accepted difference of any stage, relative to that stage's largest
        absolute value. Folding changes float32 rounding only (about 1e-6).

    Returns
    -------
    folded : torch.nn.Module
        The folded copy, or ``module`` itself when nothing could be folded or the
        check failed.
    n_folded : int
        Number of batch norms folded away.

    Examples
    --------
    ResNet-18 has 20 batch norms; the first stays, because its convolution's output
    is itself a stage (``"conv1"``) that must keep its value:

    >>> import torch
    >>> from skconv.engine import fold_batch_norms
    >>> from skconv.zoo import load_backbone
    >>> net = load_backbone("resnet18", weights=None).module.eval()
    >>> folded, n = fold_batch_norms(net, torch.randn(2, 3, 64, 64))
    >>> n
    19
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    if module.training:
        raise ValueError("fold_batch_norms needs a module in eval mode; call .eval() first.")
    stages = list(stages)
    pairs = _foldable_pairs(module, example, stages)
    if not pairs:
        return module, 0
    # .eval() again: a deep-copied FX GraphModule comes back in train mode.
    folded = copy.deepcopy(module).eval()
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        with torch.no_grad():
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
            )
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent_name), attr, _replacement(bn))
    for param in folded.parameters():
        param.requires_grad_(False)
    with torch.no_grad():
        expected = module(example, stages)
        got = folded(example, stages)
    for stage, want, have in zip(stages, expected, got):
        tolerance = rtol * max(float(want.abs().max()), 1e-6)
        if have.shape != want.shape or float((have - want).abs().max()) > tolerance:
            warnings.warn(
                f"Folding batch norms changed stage {stage!r} by more than rounding; "
                "using the unfolded network.",
                RuntimeWarning,
                stacklevel=2,
            )
            return module, 0
    return folded, len(pairs)
