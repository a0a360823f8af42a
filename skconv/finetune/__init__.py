"""FineTuneClassifier: a pretrained ConvNet trained further on a new task, as skorch does it.

The classifier is a thin :class:`skorch.NeuralNetClassifier`: its module
(:class:`FineTuneNet`) is a backbone from :mod:`skconv.zoo` plus a new linear head, and
the practice that makes fine-tuning pay on a few hundred images lives in callbacks and a
few overridden hooks. The package holds one concern a module: the network
(``_net``), the data (augmentation and cached trunk outputs, ``_data``), the callbacks
(``_callbacks``), the group-keeping validation split (``_split``), the safety net (the
linear probe and the blend chosen on validation images, ``_probe``) and the classifier
(``_classifier``).
"""

from ._callbacks import BackboneFreezer, EpochCheckpoint, NextView, WarmupCosine, WarmupCosineLR
from ._classifier import FineTuneClassifier
from ._data import TrainAugmentation
from ._net import FineTuneNet
from ._probe import LinearProbe
from ._split import GroupValidSplit

__all__ = [
    "FineTuneClassifier",
    "FineTuneNet",
    "TrainAugmentation",
    "BackboneFreezer",
    "NextView",
    "WarmupCosine",
    "WarmupCosineLR",
    "EpochCheckpoint",
    "GroupValidSplit",
    "LinearProbe",
]

# Pickles and the documentation name the public path, not the private module.
for _cls in (
    FineTuneClassifier,
    FineTuneNet,
    TrainAugmentation,
    BackboneFreezer,
    NextView,
    WarmupCosine,
    WarmupCosineLR,
    EpochCheckpoint,
    GroupValidSplit,
    LinearProbe,
):
    _cls.__module__ = __name__
del _cls
