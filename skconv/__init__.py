"""Transfer learning with pretrained ConvNets as ordinary scikit-learn estimators.

The three ways of transfer learning, each a scikit-learn estimator:

* :class:`ConvFeatureTransformer`: a pretrained ConvNet as a fixed feature
  extractor, put before a linear head in a :class:`~sklearn.pipeline.Pipeline`;
* :class:`FineTuneClassifier`: every layer trained further (a skorch classifier);
* the model zoo (:mod:`skconv.zoo`): the backbone is a hyper-parameter.

:func:`export_onnx` writes a fitted model as one ONNX file that runs with
onnxruntime, NumPy and Pillow alone.
"""

__version__ = "0.1.0.dev0"

from ._lazy import lazy_attributes

__all__ = ["ConvFeatureTransformer", "FineTuneClassifier", "export_onnx", "__version__"]

# Where each public name lives. They are imported on first use: `import skconv` stays
# light, so that torch-free parts (splitting, reading an exported ONNX model) need
# neither torch nor skorch.
_LAZY = {
    "ConvFeatureTransformer": "features",
    "FineTuneClassifier": "finetune",
    "export_onnx": "export",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
