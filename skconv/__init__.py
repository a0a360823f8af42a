"""Transfer learning with pretrained ConvNets as ordinary scikit-learn estimators.

The three ways of transfer learning, each a scikit-learn estimator:

* :class:`ConvFeatureTransformer`: a pretrained ConvNet as a fixed feature
  extractor, put before a linear head in a :class:`~sklearn.pipeline.Pipeline`;
* :class:`FineTuneClassifier`: every layer trained further (a skorch classifier);
* the model zoo (:mod:`skconv.zoo`): the backbone is a hyper-parameter.
"""

__version__ = "0.1.0.dev0"

from .features import ConvFeatureTransformer  # noqa: E402
from .finetune import FineTuneClassifier  # noqa: E402

__all__ = ["ConvFeatureTransformer", "FineTuneClassifier", "__version__"]
