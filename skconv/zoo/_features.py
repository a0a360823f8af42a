"""Feature-network adapters: a timm or torchvision classifier cut into a feature extractor.

A :class:`FeatureNet` maps a normalised batch to the unpooled feature maps of the
stages asked for, ``"final"`` being the map the original classifier pooled. Its body
is timm's ``forward_features`` (intermediate stages captured by forward hooks) or a
torchvision model traced by FX up to its pooling (every stage a graph output). The
ImageNet classifier is not part of it: a feature extractor carries only what it uses.
"""

from __future__ import annotations

import contextvars
from functools import partial
from typing import Sequence

import torch
from torch import nn

__all__ = ["FINAL_STAGE", "FeatureNet", "stage_dims"]

#: Name of the last, unpooled feature map of every backbone (what the classifier pools).
FINAL_STAGE = "final"


class FeatureNet(nn.Module):
    """A network without its classifier that returns the feature maps of some stages.

    Parameters
    ----------
    body : nn.Module
        Called as ``body(x, stages)``; returns the feature maps of ``stages``
        (``"final"`` is the last, unpooled map: what the classifier pooled).
    stage_names : list of str
        The intermediate stages ``body`` can return, shallow to deep.

    Examples
    --------
    >>> import torch
    >>> from skconv.zoo import load_backbone
    >>> net = load_backbone("resnet18", weights=None).module
    >>> net.stage_names[-2:]
    ['layer3', 'final']
    >>> [tuple(m.shape) for m in net(torch.zeros(1, 3, 64, 64), ["layer3", "final"])]
    [(1, 256, 4, 4), (1, 512, 2, 2)]
    """

    def __init__(self, body: nn.Module, stage_names: Sequence[str]):
        super().__init__()
        self.body = body
        self._stage_names = list(stage_names)

    @property
    def stage_names(self) -> list[str]:
        """Stages whose feature maps :meth:`forward` can return, shallow to deep."""
        return self._stage_names + [FINAL_STAGE]

    def check_stages(self, stages: Sequence[str]) -> None:
        """Raise a ValueError naming the unknown stage and the available ones."""
        for stage in stages:
            if stage not in self.stage_names:
                raise ValueError(
                    f"Unknown stage {stage!r}; available: {', '.join(self.stage_names)}."
                )

    def forward(self, x: torch.Tensor, stages: Sequence[str] = (FINAL_STAGE,)) -> list:
        self.check_stages(stages)
        return self.body(x, stages)

    def split(self, stage: str) -> tuple[nn.Module, nn.Module]:
        """Cut the network after ``stage``: a trunk up to it and a tail from it to the end.

        ``tail(trunk(x))`` is the final feature map, ``self(x)[0]``; both share this
        network's parameters (they are views, not copies). Fine-tuning uses them to
        run the frozen trunk once per image and train the tail.

        Parameters
        ----------
        stage : str
            One of :attr:`stage_names` other than ``"final"``.

        Returns
        -------
        trunk, tail : torch.nn.Module
            ``trunk(x)`` is the feature map of ``stage``; ``tail(map)`` the final map.

        Raises
        ------
        ValueError
            If the stage is unknown, or the network cannot be cut there (its layers
            after the stage also read earlier values).

        Examples
        --------
        >>> import torch
        >>> from skconv.zoo import load_backbone
        >>> net = load_backbone("resnet18", weights=None).module.eval()
        >>> trunk, tail = net.split("layer2")
        >>> x = torch.randn(1, 3, 64, 64)
        >>> bool(torch.allclose(tail(trunk(x)), net(x)[0]))
        True
        """
        self.check_stages([stage])
        if stage == FINAL_STAGE:
            raise ValueError("Cannot split after 'final': nothing would be left to train.")
        return self.body.split(stage)


def stage_dims(module: nn.Module, stages: Sequence[str], image_size: int) -> list[int]:
    """Channels of each stage's feature map, from one forward pass of a blank image.

    The pass runs in eval mode on the module's own device (the ``meta`` device
    computes shapes only) and leaves the module's mode as it was. Token maps
    ``(n, tokens, c)`` of transformer-like stages carry their channels last.

    Parameters
    ----------
    module : torch.nn.Module
        A feature network ``module(x, stages) -> list of maps``.
    stages : sequence of str
        The stages to measure.
    image_size : int
        Side of the blank square image.

    Returns
    -------
    dims : list of int
        One channel count per stage.

    Examples
    --------
    >>> from skconv.zoo import load_backbone, stage_dims
    >>> stage_dims(load_backbone("resnet18", weights=None).module, ["layer2", "final"], 64)
    [128, 512]
    """
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            maps = module(torch.zeros(1, 3, image_size, image_size, device=device), stages)
    finally:
        module.train(was_training)
    return [int(m.shape[-1] if m.ndim == 3 else m.shape[1]) for m in maps]


# --------------------------------------------------------------------------- timm


# The stage maps a timm forward pass should capture, per thread (a context variable): the
# hooks stay registered, and concurrent forward passes each fill only their own dict.
_CAPTURING: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "skconv_capturing", default=None
)


class _TimmBody(nn.Module):
    """timm's ``forward_features``; intermediate stages captured with forward hooks.

    One hook per stage is registered here, once, rather than around each call: adding
    and removing hooks while another thread runs the same module is not safe.
    """

    def __init__(self, model: nn.Module, stages: Sequence[str]):
        super().__init__()
        self.model = model
        for stage in stages:
            model.get_submodule(stage).register_forward_hook(partial(_capture, stage))

    def forward(self, x, stages=(FINAL_STAGE,)):
        captured: dict = {stage: None for stage in stages if stage != FINAL_STAGE}
        token = _CAPTURING.set(captured)
        try:
            captured[FINAL_STAGE] = self.model.forward_features(x)
        finally:
            _CAPTURING.reset(token)
        return [captured[stage] for stage in stages]

    def split(self, stage: str) -> tuple[nn.Module, nn.Module]:
        model = self.model
        # EfficientNet and MobileNet-V3 families: forward_features is stem, bn1, blocks,
        # conv_head, bn2, one after the other, and feature stages are "blocks.<i>".
        sequential = all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head"))
        parts = stage.split(".")
        if not (sequential and len(parts) == 2 and parts[0] == "blocks"):
            raise ValueError(
                f"Cannot cut timm's {type(model).__name__} after stage {stage!r}: only "
                "EfficientNet-like models (stem, blocks, conv_head) are cut here."
            )
        index = int(parts[1])
        trunk = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[: index + 1])
        tail = nn.Sequential(
            *model.blocks[index + 1 :], model.conv_head, getattr(model, "bn2", nn.Identity())
        )
        return trunk, tail


def _capture(stage: str, _module, _inputs, output) -> None:
    captured = _CAPTURING.get()
    if captured is not None and stage in captured:
        captured[stage] = output


def timm_feature_net(model: nn.Module) -> tuple[FeatureNet, nn.Module]:
    """Cut a timm model before its head; return the feature net and the ImageNet head.

    The head maps the final feature map to logits (global average pooling, then the
    classifier), for checking weights against ImageNet classes.
    """
    stages = [
        info["module"]
        for info in getattr(model, "feature_info", []) or []
        if isinstance(info, dict) and info.get("module")
    ]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.get_classifier())
    model.reset_classifier(0, "")  # keeps forward_features; the head lives on separately
    return FeatureNet(_TimmBody(model, stages), stages), head


# --------------------------------------------------------------------------- torchvision


class _FXBody(nn.Module):
    """A torchvision model cut before its pooling, every stage a graph output.

    FX flattens the module tree, so hooks on containers would never fire; the
    stages are returned by the traced graph itself (returning them costs no compute).
    """

    def __init__(self, model: nn.Module, final_node: str, stages: Sequence[str]):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        nodes = {stage: stage for stage in stages}
        nodes[final_node] = FINAL_STAGE
        self.extractor = create_feature_extractor(model, return_nodes=nodes)

    def forward(self, x, stages=(FINAL_STAGE,)):
        out = self.extractor(x)
        return [out[stage] for stage in stages]

    def split(self, stage: str) -> tuple[nn.Module, nn.Module]:
        return _split_graph(self.extractor, stage)


def _split_graph(module: torch.fx.GraphModule, stage: str) -> tuple[nn.Module, nn.Module]:
    """Two graph modules from one: its input to output ``stage``, and that to ``final``."""
    graph = module.graph
    nodes = list(graph.nodes)
    outputs = next(n for n in nodes if n.op == "output").args[0]
    cut, final = outputs[stage], outputs[FINAL_STAGE]
    position = {node: i for i, node in enumerate(nodes)}
    needed, todo = set(), [final]
    while todo:  # the nodes the final map depends on, back to the cut
        node = todo.pop()
        if node in needed or node is cut:
            continue
        needed.add(node)
        todo.extend(n for n in node.all_input_nodes)
    early = [n for n in needed if position[n] < position[cut] and n.op != "get_attr"]
    if early:
        raise ValueError(
            f"Cannot cut the network after stage {stage!r}: its later layers also read "
            f"{early[0].name!r}, computed before that stage."
        )
    trunk_graph, env = torch.fx.Graph(), {}
    for node in nodes[: position[cut] + 1]:
        env[node] = trunk_graph.node_copy(node, lambda n: env[n])
    trunk_graph.output(env[cut])
    tail_graph = torch.fx.Graph()
    env = {cut: tail_graph.placeholder("stage_map")}
    for node in nodes:
        if node in needed:
            env[node] = tail_graph.node_copy(node, lambda n: env[n])
    tail_graph.output(env[final])
    trunk = torch.fx.GraphModule(module, trunk_graph)
    tail = torch.fx.GraphModule(module, tail_graph)
    trunk.graph.eliminate_dead_code()
    trunk.recompile()
    return trunk, tail


_STAGE_CONTAINERS = ("features", "layers", "trunk_output")


def _torchvision_final_node(model: nn.Module) -> tuple[str, list[str]]:
    from torchvision.models.feature_extraction import get_graph_node_names

    _, nodes = get_graph_node_names(model)
    pool_markers = ("avgpool", "adaptive_avg_pool", "mean", "flatten", "classifier", "fc", "head")
    for index, node in enumerate(nodes):
        leaf = node.split(".")[0]
        if index > 0 and any(leaf.startswith(marker) for marker in pool_markers):
            final = nodes[index - 1]
            break
    else:
        raise ValueError("Cannot find where this torchvision model pools its features.")
    before = nodes[: nodes.index(final) + 1]
    stages: list[str] = []
    for node in before:
        parts = node.split(".")
        if parts[0] in ("x",):
            continue
        # Containers of stages (features.3, trunk_output.block2) list their children;
        # other top-level modules (layer3) are stages themselves.
        depth = 2 if parts[0] in _STAGE_CONTAINERS and len(parts) > 1 else 1
        name = ".".join(parts[:depth])
        if name not in stages and hasattr(model, parts[0]):
            stages.append(name)
    # A stage that ends where the final map ends is the final map: one name for it.
    stages = [
        stage
        for stage in stages
        if [n for n in before if n == stage or n.startswith(stage + ".")][-1] != final
    ]
    return final, stages


def torchvision_feature_net(model: nn.Module, arch: str) -> tuple[FeatureNet, nn.Module | None]:
    """Cut a torchvision model before its pooling; return the feature net and the head.

    The head maps the final feature map to ImageNet logits (None if the model has no
    recognisable classifier).
    """
    model.eval()
    final_node, stages = _torchvision_final_node(model)
    if arch.startswith("squeezenet"):
        # SqueezeNet's classifier is a conv before the pooling, not a dense layer after it.
        head = nn.Sequential(model.classifier[1], nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    else:
        classifier = next(
            (
                getattr(model, a)
                for a in ("fc", "classifier", "head", "heads")
                if hasattr(model, a)
            ),
            None,
        )
        head = (
            None
            if classifier is None
            else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier)
        )
    return FeatureNet(_FXBody(model, final_node, stages), stages), head
