"""FineTuneNet: a backbone from the zoo, average pooling and a new linear head."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import zoo
from ..engine import pool_features

__all__ = ["FineTuneNet", "resolve_train_layers"]


class FineTuneNet(nn.Module):
    """A backbone from :mod:`skconv.zoo` with global average pooling and a new linear head.

    Called on images (``net(x)``) it runs the whole network. Fine-tuning only the
    layers after a stage calls it on that stage's feature map instead
    (``net(trunk_output=m)``), which the frozen layers before it computed once:
    :meth:`parts` cuts the backbone there, and :attr:`cut_stage` says where. On a
    GPU the forward pass runs under bfloat16 autocast (mixed precision).

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Any name :func:`skconv.zoo.load_backbone` accepts.
    weights : str, path-like or None, default="DEFAULT"
        Pretrained weights of the backbone (see :func:`skconv.zoo.load_backbone`).
    n_classes : int, default=2
        Outputs of the head.
    dropout : float, default=0.2
        Dropout before the head; the usual regulariser of EfficientNet heads.

    Examples
    --------
    >>> import torch
    >>> from skconv.finetune import FineTuneNet
    >>> net = FineTuneNet("resnet18", weights=None, n_classes=3).eval()
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    >>> trunk, _ = net.parts("layer3")
    >>> net(trunk_output=trunk(torch.zeros(2, 3, 64, 64))).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: Any = "DEFAULT",
        n_classes: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        loaded = zoo.load_backbone(backbone, weights)  # without the ImageNet classifier
        self.backbone = loaded.module
        self.preprocessing = loaded.preprocessing
        self.backbone_identity = loaded.identity
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            size = self.preprocessing.image_size  # some backbones (ViT) take one size only
            (probe,) = self.backbone(torch.zeros(1, 3, size, size))
            self.backbone.train(was_training)
        self.n_features = int(probe.shape[-1] if probe.ndim == 3 else probe.shape[1])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.n_features, n_classes)
        # Start from near-uniform predictions: pretrained features can be large (Caffe
        # SqueezeNet's reach hundreds), and a default-initialised head would begin with
        # a loss far above chance that pushes big gradients into the backbone.
        nn.init.normal_(self.head.weight, std=0.01 / max(1.0, probe.abs().mean().item()))
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor | None = None, trunk_output: torch.Tensor | None = None):
        inputs = x if trunk_output is None else trunk_output
        if inputs.dim() == 4 and inputs.device.type in ("cpu", "cuda"):
            # oneDNN's layout: a training step on a CPU takes 0.65x the time
            # (Lite0's last two stages, batch 32, 2 cores; benchmarks/finetune_speed.py).
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _mixed_precision(inputs.device):
            if trunk_output is not None:
                feature_map = self._cut[1](inputs)
            else:
                (feature_map,) = self.backbone(inputs)
            return self.head(self.dropout(self.pool(feature_map)))

    def train(self, mode: bool = True) -> FineTuneNet:
        """Set training mode, keeping a backbone that does not train in eval mode.

        skorch sets training mode before every step. A backbone with nothing to train
        (the head-only epochs of :class:`BackboneFreezer`), and a backbone cut by
        :meth:`parts` (only the layers after the cut train, on the trunk's cached
        outputs), stay in eval mode instead, so that their batch-norm layers keep
        their pretrained statistics.

        Parameters
        ----------
        mode : bool, default=True
            Training mode (True) or evaluation mode (False).

        Returns
        -------
        self : FineTuneNet
        """
        super().train(mode)
        if mode:
            frozen = not any(param.requires_grad for param in self.backbone.parameters())
            if frozen or self.cut_stage is not None:
                self.backbone.eval()
        return self

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        """Global average pooling of the final feature map, as the network's head sees it."""
        return pool_features(feature_map, "avg")

    def init_head_from_probe(
        self, trunk_outputs: torch.Tensor, codes, *, balanced: bool = False
    ) -> None:
        """Start the head from a logistic regression on the frozen features (LP-FT).

        The features are the pooled outputs of the layers after the cut (:meth:`parts`)
        on ``trunk_outputs``; nothing changes when a class has no image among them.

        Parameters
        ----------
        trunk_outputs : torch.Tensor
            The trunk's outputs for the training images (float16 or float32).
        codes : ndarray of shape (n_images,)
            Their integer targets.
        balanced : bool, default=False
            Fit the probe with ``class_weight="balanced"``.
        """
        from sklearn.linear_model import LogisticRegression

        n_classes = self.head.out_features
        if len(np.unique(codes)) < n_classes:
            return  # a class absent from the training part: no probe for it
        _, tail = self._cut
        device = self.head.weight.device
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            features = torch.cat(
                [
                    self.pool(tail(trunk_outputs[start : start + 64].float().to(device)))
                    for start in range(0, trunk_outputs.shape[0], 64)
                ]
            )
        self.train(was_training)
        probe = LogisticRegression(
            max_iter=1000, class_weight="balanced" if balanced else None
        ).fit(features.float().cpu().numpy(), codes)
        weight, bias = probe.coef_, probe.intercept_
        if weight.shape[0] == 1:  # binary: one score, split evenly over two logits
            weight, bias = np.vstack([-weight, weight]) / 2, np.array([-bias[0], bias[0]]) / 2
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))

    def trainable_backbone_parameters(self) -> list:
        """The backbone's parameters that train: all of them, or those after the cut.

        Returns
        -------
        parameters : list of torch.nn.Parameter
        """
        if self.cut_stage is None:
            return list(self.backbone.parameters())
        return list(self._cut[1].parameters())

    def parts(self, stage: str) -> tuple[nn.Module, nn.Module]:
        """The backbone cut after ``stage`` (``"final"``: all of it), as a trunk and a tail.

        The parts share this network's parameters. They are kept for
        ``forward(trunk_output=...)`` but are not sub-modules: the network's
        ``state_dict`` names every parameter once, and pickles leave them out.

        Parameters
        ----------
        stage : str
            A stage of ``backbone.stage_names``.

        Returns
        -------
        trunk, tail : torch.nn.Module
            ``tail(trunk(x))`` is the backbone's final feature map.
        """
        cut = self.__dict__.get("_cut_parts")
        if cut is None or cut[0] != stage:
            if stage == zoo.FINAL_STAGE:
                trunk, tail = _WholeBackbone(self.backbone), nn.Identity()
            else:
                trunk, tail = self.backbone.split(stage)
            cut = (stage, trunk, tail)
            self.__dict__["_cut_parts"] = cut  # bypasses nn.Module's registration
        return cut[1], cut[2]

    def frozen_trunk(self, stage: str) -> nn.Module:
        """An eval-mode copy of the trunk of :meth:`parts` with batch norms folded in.

        The trunk does not train, so its batch norms are fixed affine maps: folded into
        the convolutions before them (:func:`skconv.engine.fold_batch_norms`, as the
        feature transformer's torch engine does), the trunk computes the cached views
        about 1.4x faster (EfficientNet-Lite0, 2-core CPU). The copy shares no
        parameters with this network; the trunk itself is returned when nothing folds.

        Parameters
        ----------
        stage : str
            A stage of ``backbone.stage_names``, as for :meth:`parts`.

        Returns
        -------
        trunk : torch.nn.Module
            ``trunk(x)`` equals ``parts(stage)[0](x)`` up to float32 rounding.

        Examples
        --------
        >>> import torch
        >>> from skconv.finetune import FineTuneNet
        >>> net = FineTuneNet("resnet18", weights=None, n_classes=3).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> trunk, _ = net.parts("layer3")
        >>> bool(torch.allclose(net.frozen_trunk("layer3")(x), trunk(x), atol=1e-4))
        True
        """
        from ..engine import fold_batch_norms, folding_example

        trunk, _ = self.parts(stage)
        backbone = self.backbone
        param = next(backbone.parameters(), None)
        device = torch.device("cpu") if param is None else param.device
        example = folding_example(self.preprocessing.image_size, device)
        was_training = backbone.training
        backbone.eval()
        try:
            folded, n_folded = fold_batch_norms(backbone, example, [stage])
        finally:
            backbone.train(was_training)
        if not n_folded:
            return trunk.eval()
        if stage == zoo.FINAL_STAGE:
            return _WholeBackbone(folded).eval()
        return folded.split(stage)[0].eval()

    @property
    def cut_stage(self) -> str | None:
        """The stage after which :meth:`parts` last cut the backbone; None if uncut."""
        cut = self.__dict__.get("_cut_parts")
        return None if cut is None else cut[0]

    @property
    def _cut(self):
        cut = self.__dict__.get("_cut_parts")
        if cut is None:
            raise RuntimeError("FineTuneNet.parts(stage) must be called before trunk outputs.")
        return cut[1], cut[2]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cut_parts", None)  # views of the backbone, rebuilt when needed
        return state


def _mixed_precision(device: torch.device):
    """bfloat16 autocast on a GPU; nothing elsewhere (CPU training stays float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _WholeBackbone(nn.Module):
    """The backbone's final feature map, as a module of one input and one output."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        (feature_map,) = self.backbone(x)
        return feature_map


def resolve_train_layers(train_layers: str, stage_names: list[str]) -> str | None:
    """The stage after which training starts; None to train every layer.

    ``"head"`` trains after ``"final"`` (the head alone), ``"auto"`` after the stage two
    before the end (the last two stages), a stage name after that stage.
    """
    if train_layers == "all":
        return None
    if train_layers == "head":
        return zoo.FINAL_STAGE
    if train_layers == "auto":
        return stage_names[-3] if len(stage_names) >= 3 else zoo.FINAL_STAGE
    if train_layers not in stage_names:
        raise ValueError(
            f"train_layers={train_layers!r} is not a stage of this backbone; use 'all', "
            f"'head', 'auto' or one of {', '.join(stage_names)}."
        )
    return train_layers
