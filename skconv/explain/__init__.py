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

The parts: ``_heatmaps`` (:func:`heatmaps`), ``_cam`` (the CAM and Grad-CAM
explainers, :func:`explainer`), ``_mapping`` (from the crop back onto the original
image) and ``_overlay`` (:func:`overlay`).
"""

from __future__ import annotations

from ._cam import explainer as explainer
from ._heatmaps import OUTSIDE as OUTSIDE
from ._heatmaps import SMOOTH as SMOOTH
from ._heatmaps import TRIM as TRIM
from ._heatmaps import heatmaps
from ._overlay import overlay

__all__ = ["heatmaps", "overlay"]
