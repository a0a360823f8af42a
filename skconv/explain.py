"""Heat maps of where a fitted model looked: CAM for linear heads, Grad-CAM for fine-tuning.

Two kinds of fitted model are explained, the two trainable pillars of skconv:

* a :class:`~sklearn.pipeline.Pipeline` of a :class:`~skconv.ConvFeatureTransformer`,
  optionally a :class:`~sklearn.preprocessing.StandardScaler`, and a linear classifier
  (anything with ``coef_`` and ``intercept_``: ``LogisticRegression``, ``LinearSVC``,
  ``SGDClassifier``, ``RidgeClassifier``...). With ``pooling="avg"`` the class
  activation map (CAM) is exact: the head's weights, the scaler folded into them, are
  applied to the unpooled feature map at every location, so the map's average plus
  the head's intercept *is* the decision function.
* a fitted :class:`~skconv.FineTuneClassifier`: Grad-CAM on the last stage. A hook on
  the final feature map captures it; the class logit's gradients, summed over space,
  weigh its channels. Because the network pools by averaging and ends in a linear
  layer, this too is the exact CAM: its average plus the head's bias is the logit.

The map is computed on the network's input, the center crop of the resized image,
and :func:`heatmaps` maps it back onto the original image, so that it overlays the
file the user has; there it is smoothed and the crop's border band, where padding
and frame edges raise scores, is cleared (``smooth`` and ``trim``), and ``shift``
averages in the maps of slightly shifted crops. :func:`overlay` blends a map into its
image in colour, and the command ``skconv explain MODEL IMAGES... --out DIR`` writes
one such PNG per image.
"""

from __future__ import annotations

import contextlib
from numbers import Integral, Real
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

from .engine import mean_of_views, mirror_views, pool_features
from .features import ConvFeatureTransformer
from .finetune import FineTuneClassifier
from .images import Preprocessing, check_images, load_image

__all__ = ["heatmaps", "overlay"]

#: What :func:`heatmaps` puts where the network's center crop did not reach.
OUTSIDE = ("zero", "edge")

# Defaults of heatmaps(..., smooth="auto", trim="auto") as fractions of the crop's side:
# 24 and 16 px of a 224-px crop (3/4 and 1/2 of its 32-px feature cells), chosen on
# BUSI's validation lesion images (benchmarks/explain_settings.py, results/explain.md).
SMOOTH = 24 / 224
TRIM = 16 / 224

_SUPPORTED = (
    "a fitted FineTuneClassifier, or a fitted Pipeline of a ConvFeatureTransformer, "
    "optionally a StandardScaler, and a linear classifier with coef_ and intercept_"
)


@validate_params(
    {
        "estimator": "no_validation",  # _explainer names what is supported
        "X": ["array-like", list],
        "target": "no_validation",
        "normalize": ["boolean"],
        "resize": ["boolean"],
        "outside": [StrOptions(set(OUTSIDE))],
        "shift": [Interval(Integral, 0, None, closed="left")],
        "smooth": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "trim": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def heatmaps(
    estimator,
    X,
    target=None,
    *,
    normalize: bool = True,
    resize: bool = True,
    outside: str = "zero",
    shift: int = 0,
    smooth="auto",
    trim="auto",
    batch_size: int = 16,
) -> list:
    """Heat maps of the image regions that raised a class's score, one per image.

    For a :class:`~sklearn.pipeline.Pipeline` of a :class:`~skconv.ConvFeatureTransformer`
    and a linear head, the map is the class activation map (CAM): at each location of
    the unpooled last-stage feature map ``F``, the head's weights for the class
    applied to ``F``, ``sum_c w_c (F_c - m_c) / s_c`` with a StandardScaler's mean
    ``m`` and scale ``s`` folded in (0 and 1 without one). With ``pooling="avg"`` its
    average plus the head's intercept equals the head's decision function exactly,
    except for JPEG files large enough for the transformer's ``jpeg_draft`` reduction:
    maps are computed from the full-size decode, whose pixels line up with the
    original, so there the two differ by that reduction's small change of features.
    A binary head has one row of weights, for the second class; the first class's
    map is its negative.
    Other poolings (``"max"``, ``"gem"``, ``"avgmax"``) are explained by Grad-CAM
    through the pooling and the head, which is not such a decomposition. Several
    ``layers`` give one map per stage; they are brought to the finest stage's grid
    by nearest-neighbour upsampling, which keeps their averages when the grid sizes
    divide each other (the usual case), and added.

    For a :class:`~skconv.FineTuneClassifier` the map is Grad-CAM on the final feature
    map: its channels weighted by the spatial sum of the class logit's gradients
    (Grad-CAM's mean times the map's area, a constant that normalisation removes).
    For the network's average pooling and linear head, that is the CAM, and its
    average plus the head's bias equals the logit.

    With ``tta=True`` (either estimator), the map of the mirrored image, mirrored
    back, is averaged in, as the prediction averages features or logits.

    The map lives on the network's input: the center crop of the image resized so
    that its shorter side is ``preprocessing_.resize_size``. With ``resize=True``
    it is upsampled bilinearly to the crop, placed into the resized image, and that
    frame is resized to the original image, all in one bilinear resampling. Pixels
    the crop did not cover (the sides of a wide image, the top and bottom of a tall
    one) get 0 with ``outside="zero"``: the network never saw them, and a map should
    not pretend otherwise. ``outside="edge"`` extends the crop's border values there.

    Parameters
    ----------
    estimator : Pipeline or FineTuneClassifier
        A fitted model as described above. A fitted search (e.g. ``GridSearchCV``)
        is explained through its ``best_estimator_``.
    X : sequence of paths or PIL images, or ndarray
        Images in any form :func:`skconv.images.check_images` accepts.
    target : label, array-like of labels, or None, default=None
        The class to explain: one label (an element of ``classes_``) for every image,
        one label per image, or None for the class the model predicts.
    normalize : bool, default=True
        After the resampling, clip negative values to 0 (evidence against the class
        is not shown) and min-max scale each map to [0, 1]. A map that is constant
        after the clipping (all zero, say) points nowhere and stays all zero. False
        returns the signed, unscaled map.
    resize : bool, default=True
        Map back to the original image, as described above. False returns the map
        on the feature grid (e.g. 7 x 7 for a 224-px input with stride 32).
    outside : {"zero", "edge"}, default="zero"
        Value of the original image's pixels outside the network's crop.
    shift : int, default=0
        When > 0, also explain the 8 crops shifted by ``shift`` pixels (of the resized
        image) left, right, up, down and diagonally, and average the 9 maps aligned on
        the original image. The feature grid is coarse (a cell is 32 px of a 224-px
        crop for most backbones); maps from crops shifted by about half a cell
        interleave their grids and localise more finely, at 9 times the cost. Shifts
        stop at the margin the center crop leaves in the resized image, every crop
        explains the class chosen on the center crop, and the result is still shown
        only over the center crop with ``outside="zero"``. Needs ``resize=True``. On
        BUSI's test lesion images, ``shift=16`` raised the share of maps whose maximum
        falls on the lesion (within 15 px) from 55 % to 67 % for EfficientNet-Lite0
        features without ``smooth`` and ``trim``; with them, shifts gained little
        on the validation lesion images (``benchmarks/results/explain.md``).
    smooth : float or "auto", default="auto"
        Sigma, in pixels of the resized image (the network's scale), of a Gaussian
        that smooths the map on the original image before the normalisation; the
        smoothing is normalised over the crop, so the zeros outside it do not darken
        its border. Smoothing moves the maximum from the sharpest cell centre to the
        middle of the largest warm region. 0 turns it off. "auto" is 3/28 of the
        crop's side with ``resize=True`` (24 px of a 224-px crop: three quarters of
        a 32-px feature cell) and 0 without.
    trim : float or "auto", default="auto"
        Width, in pixels of the resized image, of the band along the crop's border
        where the map is set to 0 (with ``outside="edge"``, replaced by the values
        just inside it). Border cells see the zero padding of every convolution and,
        in scanned or ultrasound images, frame edges and text; their scores are
        often artefacts. 0 turns it off. "auto" is 1/14 of the crop's side with
        ``resize=True`` (16 px of a 224-px crop: half a feature cell) and 0 without.

        On BUSI's validation lesion images (benchmarks/explain_settings.py; default
        EfficientNet-Lite0 features and LogisticRegression fitted on the train part),
        ``smooth=24, trim=16`` raised the share of true-class maps whose maximum lies
        inside the lesion (strict pointing game) from 32 % to 55 %; shifted crops,
        mirrored crops, a 2x upsampled input or Grad-CAM on the stride-16 stage added
        at most 3 points at 2 to 25 times the cost, or lost. On the test part the
        feature pipeline went from 34 % to 50 %, Grad-CAM of ``FineTuneClassifier()``
        (its defaults, fitted on the train part) from 44 % to 63 %
        (``benchmarks/results/explain.md``). ``smooth=0, trim=0`` gives the maps of
        before.
    batch_size : int, default=16
        Images per forward pass.

    Returns
    -------
    maps : list of ndarray of float32
        One map per image, of shape ``(height, width)`` of the original image (with
        ``resize=True``) or of the feature grid.

    Raises
    ------
    TypeError
        If ``estimator`` is not one of the supported kinds.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    ValueError
        If ``target`` holds a label the model does not know or has the wrong length.

    See Also
    --------
    overlay : Blend a map into its image.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skconv import ConvFeatureTransformer
    >>> from skconv.explain import heatmaps
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (8, 40, 56), dtype=np.uint8)
    >>> y = np.array(["a", "b"] * 4)
    >>> clf = make_pipeline(
    ...     ConvFeatureTransformer("resnet18", weights=None, image_size=32),
    ...     LogisticRegression()).fit(X, y)
    >>> maps = heatmaps(clf, X[:2])
    >>> maps[0].shape, float(maps[0].min()) >= 0, float(maps[0].max()) <= 1
    ((40, 56), True, True)

    The unnormalised map on the feature grid decomposes the decision function:

    >>> raw = heatmaps(clf, X[:2], target="b", normalize=False, resize=False)
    >>> scores = [m.mean() + clf[-1].intercept_[0] for m in raw]
    >>> np.allclose(scores, clf.decision_function(X[:2]), atol=1e-4)
    True
    """
    for name, value in (("shift", shift), ("smooth", smooth), ("trim", trim)):
        if value != "auto" and value and not resize:
            raise ValueError(
                f"{name} works on the map over the original image, so it needs "
                f"resize=True; got {name}={value!r} with resize=False."
            )
    explainer = _explainer(estimator)
    # "auto": the measured defaults with resize=True; nothing on the feature grid.
    crop = explainer.preprocessing.image_size
    smooth = (SMOOTH * crop if resize else 0) if smooth == "auto" else smooth
    trim = (TRIM * crop if resize else 0) if trim == "auto" else trim
    images = check_images(X)
    codes = _target_codes(target, explainer.classes, len(images))
    prep = explainer.preprocessing
    maps = []
    for start in range(0, len(images), int(batch_size)):
        stop = min(len(images), start + int(batch_size))
        pil = [load_image(images[i], where=f"X[{i}]") for i in range(start, stop)]
        batch = torch.stack([prep(image) for image in pil])
        grids, wanted = explainer.maps(batch, None if codes is None else codes[start:stop])
        if not resize:
            maps += [_normalized(g) if normalize else g.astype(np.float32) for g in grids]
            continue
        views = [_View(image.size, prep, outside) for image in pil]
        for view, grid in zip(views, grids):
            view.add(grid, (0, 0))
        if shift:
            _add_shifted(explainer, pil, views, wanted, int(shift))
        for view in views:
            heat = _smoothed_and_trimmed(view.mean(), view.size, prep, smooth, trim, outside)
            maps.append(_normalized(heat) if normalize else heat.astype(np.float32))
    return maps


def overlay(image, heatmap, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """Blend a heat map into its image in colour.

    Parameters
    ----------
    image : path-like, PIL image or ndarray
        The image, in any form :func:`skconv.images.load_image` accepts.
    heatmap : array-like of shape (height, width)
        Values in [0, 1], the image's size, as :func:`heatmaps` returns them.
    alpha : float, default=0.5
        Weight of the colour map: 0 returns the image, 1 the colour map alone.
    colormap : str, default="jet"
        A matplotlib colormap name (``"jet"``, ``"inferno"``, ``"viridis"``...).

    Returns
    -------
    overlaid : PIL.Image.Image
        An RGB image of the image's size.

    Raises
    ------
    ValueError
        If the map's shape differs from the image's, its values leave [0, 1],
        ``alpha`` leaves [0, 1] or ``colormap`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.explain import overlay
    >>> image = np.zeros((20, 30), dtype=np.uint8)
    >>> heat = np.linspace(0, 1, 600).reshape(20, 30)
    >>> out = overlay(image, heat, alpha=0.4)
    >>> out.size, out.mode
    ((30, 20), 'RGB')
    """
    import matplotlib

    rgb = load_image(image, where="image")
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != (rgb.height, rgb.width):
        raise ValueError(
            f"heatmap has shape {heat.shape} but the image is {rgb.height} x {rgb.width} "
            "(height x width); pass the map heatmaps() returned for this image."
        )
    if not np.isfinite(heat).all() or heat.min(initial=0) < 0 or heat.max(initial=0) > 1:
        raise ValueError(
            "heatmap values must be finite and lie in [0, 1]; heatmaps() "
            "returns such maps with normalize=True."
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}.")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(
            f"Unknown colormap {colormap!r}; use a matplotlib name such as "
            "'jet', 'inferno' or 'viridis'."
        ) from None
    colours = cmap(heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(rgb, dtype=np.float64) + alpha * colours
    return Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8))  # RGB


# --------------------------------------------------------------------------- explainers


def _explainer(estimator):
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


# --------------------------------------------------------------------------- helpers


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


def _sampling_matrix(n_out: int, n_resized: int, crop_start: int, crop: int, n_grid: int) -> tuple:
    """Bilinear weights ``(n_out, n_grid)`` from a grid over the crop to original pixels.

    Pixel centres of the original are followed through the resize and the crop into
    grid coordinates; outside the crop the border value is taken (and flagged).
    """
    centres = (np.arange(n_out) + 0.5) * n_resized / n_out - crop_start  # crop pixels
    inside = (centres >= 0) & (centres < crop)
    position = np.clip(centres * n_grid / crop - 0.5, 0, n_grid - 1)  # grid-cell centres
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_grid - 1)
    frac = position - low
    matrix = np.zeros((n_out, n_grid))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix, inside


def _crop_origin(size: tuple, preprocessing: Preprocessing) -> tuple:
    """Resized frame ``(width, height)`` and the center crop's ``(left, top)`` in it."""
    left, top, _, _ = preprocessing.crop_box(*size)
    return preprocessing.resized_size(*size), (left, top)


def _to_original(
    grid: np.ndarray,
    size: tuple,
    preprocessing: Preprocessing,
    outside: str,
    shift: tuple = (0, 0),
) -> tuple:
    """Resample a map over the network's crop onto the original ``(width, height)``.

    One separable bilinear resampling does what "upsample to the crop, paste into the
    resized frame, resize to the original" would do in three. ``shift`` moves the crop
    from the center by ``(dx, dy)`` pixels of the resized frame. Returns the map and
    the mask of original pixels the crop covers.
    """
    width, height = size
    (resized_w, resized_h), (left, top) = _crop_origin(size, preprocessing)
    crop = preprocessing.image_size
    rows, inside_y = _sampling_matrix(height, resized_h, top + shift[1], crop, grid.shape[0])
    cols, inside_x = _sampling_matrix(width, resized_w, left + shift[0], crop, grid.shape[1])
    inside = inside_y[:, None] & inside_x[None, :]
    out = rows @ grid @ cols.T
    if outside == "zero":
        out *= inside
    return out, inside


class _View:
    """The maps of one image's crops, brought onto the original image and averaged."""

    def __init__(self, size: tuple, preprocessing: Preprocessing, outside: str):
        self.size = size
        self.preprocessing = preprocessing
        self.outside = outside
        self.total = np.zeros((size[1], size[0]))
        self.count = np.zeros((size[1], size[0]))
        self.shifts: list = []
        self.center = None

    def add(self, grid: np.ndarray, shift: tuple) -> None:
        out, inside = _to_original(
            np.asarray(grid, dtype=np.float64), self.size, self.preprocessing, self.outside, shift
        )
        self.total += out
        # With outside="zero" a crop speaks only for the pixels it covers.
        self.count += inside if self.outside == "zero" else 1.0
        self.shifts.append(shift)
        if self.center is None:
            self.center = inside

    def mean(self) -> np.ndarray:
        out = np.divide(
            self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0
        )
        if self.outside == "zero":
            out *= self.center  # only what the prediction's own crop saw
        return out


def _add_shifted(explainer, pil: list, views: list, codes, shift: int) -> None:
    """Add the maps of crops shifted by ``shift`` px around the center (8 more crops).

    Shifts are clipped to the margin the center crop leaves inside the resized image,
    so every crop holds image pixels only; a crop that clipping makes a repeat is
    skipped. Every crop explains the class chosen on the center crop.
    """
    from .images import pil_to_tensor

    prep = explainer.preprocessing
    crop = prep.image_size
    frames = [prep.resize_image(image) for image in pil]
    codes = np.asarray(codes)
    for dy in (-shift, 0, shift):
        for dx in (-shift, 0, shift):
            chosen, tensors, shifts = [], [], []
            for k, (frame, view) in enumerate(zip(frames, views)):
                (width, height), (left, top) = _crop_origin(view.size, prep)
                sx = int(np.clip(dx, -left, width - crop - left))
                sy = int(np.clip(dy, -top, height - crop - top))
                if (sx, sy) in view.shifts:
                    continue
                box = (left + sx, top + sy, left + sx + crop, top + sy + crop)
                tensors.append(prep.normalize(pil_to_tensor(frame.crop(box))))
                chosen.append(k)
                shifts.append((sx, sy))
            if not chosen:
                continue
            grids, _ = explainer.maps(torch.stack(tensors), codes[chosen])
            for k, grid, offset in zip(chosen, grids, shifts):
                views[k].add(grid, offset)


def _normalized(grid: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1]; a constant map (e.g. all zero) becomes all zero."""
    out = np.maximum(np.asarray(grid, dtype=np.float64), 0.0)
    low, high = float(out.min()), float(out.max())
    out = (out - low) / (high - low) if high > low else np.zeros_like(out)
    return out.astype(np.float32)


def _inside_crop(size: tuple, preprocessing: Preprocessing, margin: float = 0.0) -> np.ndarray:
    """Mask of original pixels whose centres fall in the center crop less ``margin`` px."""
    width, height = size
    (resized_w, resized_h), (left, top) = _crop_origin(size, preprocessing)
    crop = preprocessing.image_size

    def axis(n_out, n_resized, start):
        centres = (np.arange(n_out) + 0.5) * n_resized / n_out - start
        return (centres >= margin) & (centres < crop - margin)

    return axis(height, resized_h, top)[:, None] & axis(width, resized_w, left)[None, :]


def _smoothed_and_trimmed(
    heat: np.ndarray,
    size: tuple,
    preprocessing: Preprocessing,
    smooth: float,
    trim: float,
    outside: str = "zero",
) -> np.ndarray:
    """Gaussian smoothing, then the crop's border band of ``trim`` px taken away.

    ``smooth`` (the Gaussian's sigma) and ``trim`` are in pixels of the resized image,
    the network's scale. With ``outside="zero"`` the smoothing is normalised over the
    crop, so the zeros outside it do not darken the crop's border, and the map is 0
    outside the crop less ``trim``; with ``"edge"`` the whole map is smoothed and the
    trimmed crop's border values are extended outwards.
    """
    if not smooth and not trim:
        return heat
    from scipy.ndimage import gaussian_filter

    width, height = size
    resized_w, resized_h = _crop_origin(size, preprocessing)[0]
    out = heat
    if smooth:
        sigma = (smooth * height / resized_h, smooth * width / resized_w)
        if outside == "zero":
            inside = _inside_crop(size, preprocessing).astype(np.float64)
            weight = gaussian_filter(inside, sigma, mode="constant", truncate=3.0)
            blurred = gaussian_filter(heat * inside, sigma, mode="constant", truncate=3.0)
            out = np.divide(blurred, weight, out=np.zeros_like(heat), where=weight > 1e-12)
            out *= inside
        else:
            out = gaussian_filter(heat, sigma, mode="nearest", truncate=3.0)
    if trim:
        kept = _inside_crop(size, preprocessing, trim)
        if outside == "zero":
            out = out * kept
        elif kept.any():  # edge: extend the trimmed crop's border values
            rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
            r = np.clip(np.arange(height), rows[0], rows[-1])
            c = np.clip(np.arange(width), cols[0], cols[-1])
            out = out[r][:, c]
    return out
