"""heatmaps: class activation maps of a fitted model, mapped back onto each original image."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..images import check_images, load_image
from . import _cam
from ._cam import _target_codes
from ._mapping import _crop_origin, _normalized, _smoothed_and_trimmed, _View

#: What :func:`heatmaps` puts where the network's center crop did not reach.
OUTSIDE = ("zero", "edge")

SMOOTH = 24 / 224

TRIM = 16 / 224


@validate_params(
    {
        "estimator": "no_validation",  # explainer names what is supported
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
    explainer = _cam.explainer(estimator)
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


def _add_shifted(explainer, pil: list, views: list, codes, shift: int) -> None:
    """Add the maps of crops shifted by ``shift`` px around the center (8 more crops).

    Shifts are clipped to the margin the center crop leaves inside the resized image,
    so every crop holds image pixels only; a crop that clipping makes a repeat is
    skipped. Every crop explains the class chosen on the center crop.
    """
    from ..images import pil_to_tensor

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
