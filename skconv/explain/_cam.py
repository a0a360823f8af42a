"""The explainers: CAM through a linear head, Grad-CAM through any differentiable model."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from ..engine import mean_of_views, mirror_views, pool_features
from ..features import ConvFeatureTransformer
from ..finetune import FineTuneClassifier

_SUPPORTED = (
    "a fitted FineTuneClassifier, or a fitted Pipeline of a ConvFeatureTransformer, "
    "optionally a StandardScaler, and a linear classifier with coef_ and intercept_"
)


def explainer(estimator):
    """The explainer of ``estimator``, or an error that names what is supported."""
    if not isinstance(estimator, Pipeline) and hasattr(estimator, "best_estimator_"):
        estimator = estimator.best_estimator_  # a fitted GridSearchCV and the like
    if isinstance(estimator, FineTuneClassifier):
        return _GradCAM.of(estimator)
    if isinstance(estimator, Pipeline):
        return _CAM.of(estimator)
    if isinstance(estimator, ConvFeatureTransformer):
        raise TypeError(
            "heatmaps needs a classifier, not a ConvFeatureTransformer alone: put "
            "it in a Pipeline before a linear head such as LogisticRegression."
        )
    raise TypeError(f"heatmaps explains {_SUPPORTED}; got a {type(estimator).__name__}.")


def _check_maps(maps: Sequence[torch.Tensor], backbone: str) -> None:
    for fmap in maps:
        if fmap.ndim != 4:
            raise ValueError(
                f"heatmaps needs (n, c, h, w) feature maps, but backbone "
                f"{backbone!r} gives shape {tuple(fmap.shape)} (tokens, not a "
                "spatial grid); explain a convolutional backbone instead."
            )


def _on_finest_grid(stage_maps: list) -> torch.Tensor:
    """Sum per-stage maps ``(n, h_s, w_s)`` on the finest grid (nearest: keeps each mean)."""
    if len(stage_maps) == 1:
        return stage_maps[0]
    size = max((m.shape[-2:] for m in stage_maps), key=lambda s: s[0] * s[1])
    return sum(
        torch.nn.functional.interpolate(m[:, None], size=tuple(size), mode="nearest")[:, 0]
        for m in stage_maps
    )


def _weighted_by_gradients(fmaps: list, score: torch.Tensor) -> torch.Tensor:
    """Grad-CAM with channel weights summed (not averaged) over space.

    With average pooling before a linear layer, the summed gradients are the layer's
    weights, so the map is the exact CAM and its mean plus the bias is the score.
    """
    grads = torch.autograd.grad(score.sum(), fmaps)
    return _on_finest_grid(
        [torch.einsum("nc,nchw->nhw", g.sum(dim=(2, 3)), f) for g, f in zip(grads, fmaps)]
    )


class _CAM:
    """Class activation maps of Pipeline(ConvFeatureTransformer, [StandardScaler], head)."""

    def __init__(self, features, rest, weights, intercepts, center, classes):
        self.features = features
        self.rest = rest  # the steps after the features, to predict from pooled features
        self.weights = torch.as_tensor(weights)  # (n_classes, n_features), scaler folded in
        self.intercepts = torch.as_tensor(intercepts)
        self.center = torch.as_tensor(center)  # the scalers' means, in feature units
        self.classes = classes
        self.preprocessing = features.preprocessing_

    @classmethod
    def of(cls, pipeline: Pipeline) -> _CAM:
        steps = [
            (name, step)
            for name, step in pipeline.steps
            if step is not None and not (isinstance(step, str) and step == "passthrough")
        ]
        kinds = ", ".join(type(step).__name__ for _, step in steps) or "none"
        if len(steps) < 2 or not isinstance(steps[0][1], ConvFeatureTransformer):
            raise TypeError(f"heatmaps explains {_SUPPORTED}; this Pipeline's steps are {kinds}.")
        (features_name, features), *middle, (head_name, head) = steps
        for name, step in middle:
            if not isinstance(step, StandardScaler):
                raise TypeError(
                    f"heatmaps can fold only a StandardScaler between the features "
                    f"and the head; step {name!r} is a {type(step).__name__}."
                )
        if not hasattr(head, "predict") or not hasattr(head, "decision_function"):
            raise TypeError(
                f"heatmaps needs a linear classifier (with coef_ and intercept_) "
                f"as the Pipeline's last step; {head_name!r} is a "
                f"{type(head).__name__}."
            )
        for name, step in [(features_name, features), *middle, (head_name, head)]:
            try:
                check_is_fitted(step)
            except NotFittedError:
                raise NotFittedError(
                    f"This Pipeline is not fitted: its step {name!r} (a "
                    f"{type(step).__name__}) is not; call fit before "
                    "heatmaps."
                ) from None
        # The maps below read the transformer's parameters: they must be the fitted ones.
        features._check_configuration()
        if not all(hasattr(head, a) for a in ("coef_", "intercept_", "classes_")):
            raise TypeError(
                f"heatmaps needs a linear classifier with coef_, intercept_ and "
                f"classes_ as the Pipeline's last step; {head_name!r} is a "
                f"{type(head).__name__}."
            )
        coef = head.coef_
        coef = np.atleast_2d(
            np.asarray(coef.toarray() if hasattr(coef, "toarray") else coef, dtype=np.float64)
        )
        intercept = np.broadcast_to(
            np.asarray(head.intercept_, dtype=np.float64), (coef.shape[0],)
        ).copy()
        classes = np.asarray(head.classes_)
        if coef.shape[0] == 1 and len(classes) == 2:
            # A binary head scores the second class; the first class's score is minus that.
            coef, intercept = np.vstack([-coef, coef]), np.array([-intercept[0], intercept[0]])
        n_features = features.n_features_out_
        if coef.shape != (len(classes), n_features):
            raise TypeError(
                f"The last step's coef_ has shape {np.shape(head.coef_)}, which "
                f"does not fit {len(classes)} classes of {n_features} features; "
                "heatmaps needs a linear classifier."
            )
        # Scalers in sequence make one affine map z = (f - center) / scale; the head's
        # w . z is then (w / scale) . (f - center).
        center, scale = np.zeros(n_features), np.ones(n_features)
        for _, scaler in middle:
            if scaler.with_mean:  # mean_ is set even without centring when with_std=True
                center = center + scaler.mean_ * scale
            if scaler.scale_ is not None:
                scale = scale * scaler.scale_
        rest = Pipeline([*middle, (head_name, head)])
        return cls(features, rest, coef / scale, intercept, center, classes)

    def maps(self, batch: torch.Tensor, codes) -> tuple:
        """Signed maps on the feature grid, and the class codes they explain."""
        features = self.features
        stages = features._stages()
        batch = batch.to(features.device_)
        # The features average the image and its mirror (tta); so do the maps.
        branches = [self._forward(view, stages) for view in mirror_views(batch, features.tta)]
        if codes is None:
            pooled = mean_of_views([self._pooled(fmaps) for fmaps in branches])
            predicted = self.rest.predict(pooled.float().numpy())
            codes = _target_codes(predicted, self.classes, len(predicted))
        codes = torch.as_tensor(codes, dtype=torch.long)
        grid = mean_of_views([self._map(fmaps, codes) for fmaps in branches], spatial=True)
        return list(grid.numpy()), codes

    def _forward(self, batch: torch.Tensor, stages) -> list:
        with torch.inference_mode():
            fmaps = self.features.module_(batch, stages)
        _check_maps(fmaps, self.features.backbone_["name"])
        # float64 out of inference mode: an exact decomposition, and autograd may follow.
        return [f.detach().to("cpu", torch.float64).clone() for f in fmaps]

    def _pooled(self, fmaps: list) -> torch.Tensor:
        return torch.cat([pool_features(f, self.features.pooling) for f in fmaps], dim=1)

    def _map(self, fmaps: list, codes: torch.Tensor) -> torch.Tensor:
        weights = self.weights[codes]
        if self.features.pooling != "avg":
            # Grad-CAM through the pooling and the head: not a decomposition of the score.
            fmaps = [f.requires_grad_(True) for f in fmaps]
            with torch.enable_grad():
                score = ((self._pooled(fmaps) - self.center) * weights).sum(dim=1)
                return _weighted_by_gradients(fmaps, score).detach()
        # CAM: the head's weights at every location. The mean over locations is the
        # average-pooled feature, so mean(map) + intercept = the decision function.
        stage_maps, start = [], 0
        for fmap in fmaps:
            stop = start + fmap.shape[1]
            w = weights[:, start:stop]
            offset = (w * self.center[start:stop]).sum(dim=1)
            stage_maps.append(torch.einsum("nc,nchw->nhw", w, fmap) - offset[:, None, None])
            start = stop
        return _on_finest_grid(stage_maps)


class _GradCAM:
    """Grad-CAM of a FineTuneClassifier on the final feature map of its backbone."""

    def __init__(self, net: FineTuneClassifier):
        self.net = net
        self.classes = np.asarray(net.classes_)
        self.preprocessing = net.preprocessing_

    @classmethod
    def of(cls, net: FineTuneClassifier) -> _GradCAM:
        if not getattr(net, "initialized_", False) or not hasattr(net, "label_encoder_"):
            raise NotFittedError(
                "This FineTuneClassifier is not fitted yet; call fit before heatmaps."
            )
        if not isinstance(getattr(net.module_, "backbone", None), torch.nn.Module):
            raise TypeError(
                f"heatmaps needs the FineTuneClassifier's module to keep its "
                f"feature network as .backbone (as FineTuneNet does); "
                f"{type(net.module_).__name__} has none."
            )
        return cls(net)

    def maps(self, batch: torch.Tensor, codes) -> tuple:
        """Signed maps on the feature grid, and the class codes they explain."""
        module = self.net.module_
        device = next(module.parameters()).device
        batch = batch.to(device)
        with _explaining(module) as captured:
            # Predictions average the logits of the image and its mirror (tta); so do maps.
            branches = [
                self._forward(module, view, captured) for view in mirror_views(batch, self.net.tta)
            ]
            if codes is None:
                codes = mean_of_views([logit for _, logit in branches]).argmax(dim=1)
            codes = torch.as_tensor(codes, dtype=torch.long, device=device)
            grid = mean_of_views(
                [
                    _weighted_by_gradients(fmaps, logit.gather(1, codes[:, None])[:, 0])
                    for fmaps, logit in branches
                ],
                spatial=True,
            )
        return list(grid.detach().to("cpu", torch.float64).numpy()), codes.cpu()

    def _forward(self, module, batch, captured: list):
        captured.clear()
        logits = module(batch).float()
        if not captured:
            raise TypeError(
                f"{type(module).__name__}.forward does not call its .backbone; "
                "heatmaps cannot capture the final feature map."
            )
        fmaps = captured[-1]
        _check_maps(fmaps, str(self.net.backbone))
        return fmaps, logits


@contextlib.contextmanager
def _explaining(module: torch.nn.Module) -> Iterator[list]:
    """Eval mode, gradients for the final feature map only, and a hook that captures it.

    The hook swaps the backbone's output for leaf tensors that require gradients, and
    the parameters are frozen meanwhile, so no graph is kept for the backbone and the
    backward pass runs through the head alone. Every mode and flag is restored.
    """
    captured: list = []

    def capture(_module, _inputs, output):
        leaves = [fmap.detach().float().requires_grad_(True) for fmap in output]
        captured.append(leaves)
        return leaves

    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    handle = module.backbone.register_forward_hook(capture)
    try:
        module.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        with torch.enable_grad():
            yield captured
    finally:
        handle.remove()
        for param, flag in flags:
            param.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def _target_codes(target, classes: np.ndarray, n: int):
    """Positions in ``classes`` of one label or one label per image; None stays None."""
    if target is None:
        return None
    index = {label: code for code, label in enumerate(classes.tolist())}
    labels = np.asarray(target, dtype=object if np.ndim(target) == 0 else None)
    if labels.ndim == 0:
        labels = np.full(n, target, dtype=object)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(
            f"target must be one label or one label per image ({n}); got shape {labels.shape}."
        )
    values = labels.tolist()
    unknown = sorted({repr(v) for v in values if v not in index})
    if unknown:
        raise ValueError(
            f"target holds label(s) the model does not know: "
            f"{', '.join(unknown)}; its classes are {classes.tolist()}."
        )
    return np.array([index[v] for v in values], dtype=np.int64)
