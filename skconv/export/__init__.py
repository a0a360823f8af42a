"""A fitted model as one ONNX file, and a classifier that runs such a file without torch.

:func:`export_onnx` writes a fitted feature :class:`~sklearn.pipeline.Pipeline`
(:class:`~skconv.ConvFeatureTransformer`, then for instance a StandardScaler, a PCA and
a linear head) or a fitted :class:`~skconv.FineTuneClassifier` as one ONNX graph:

* input ``"image"``: uint8 RGB pixels ``(n, s, s, 3)``, the center crop at the model's
  input size (:func:`skconv.images.crop_batch` makes it from files, as the model's
  own preprocessing would); the normalisation happens inside the graph;
* outputs ``"label"`` (the class names, as the estimator's ``classes_``) and
  ``"probabilities"`` ``(n, n_classes)``, or ``"scores"`` (the decision function) for a
  head without ``predict_proba`` such as LinearSVC;
* metadata: the classes, the preprocessing (resize, crop, interpolation,
  normalisation), the skconv version and what the model was made from.

The scikit-learn part is converted by skl2onnx. :class:`OnnxClassifier` reads such a
file and predicts from image paths, PIL images or arrays with onnxruntime, NumPy and
Pillow alone: importing this module imports neither torch nor skorch.

The parts: ``_onnx`` (:func:`export_onnx`) and ``_runtime`` (:class:`OnnxClassifier`).
"""

from __future__ import annotations

from ._onnx import OPSETS as OPSETS
from ._onnx import export_onnx
from ._runtime import OnnxClassifier

__all__ = ["OnnxClassifier", "export_onnx"]

# Where users import it from, and what pickles of it name (skconv 0.1's skconv.export).
OnnxClassifier.__module__ = __name__
