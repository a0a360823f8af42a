"""Kept so that imports written for skconv 0.1, and joblib files it saved (their engines and
feature specs name this module), keep working; the code lives in skconv.engine."""

from .engine.devices import (  # noqa: F401
    cpu_chunk_size,
    forward_in_chunks,
    mean_of_views,
    mirror_views,
    prepare_module,
    resolve_device,
)
from .engine.engines import ENGINES, LazyEngine, OnnxEngine, TorchEngine, build_engine  # noqa: F401
from .engine.folding import fold_batch_norms  # noqa: F401
from .engine.graphs import (  # noqa: F401
    OPSET,
    FeatureSpec,
    FromPixels,
    PooledFeatures,
    export_features,
    export_onnx_bytes,
)
from .engine.run import extract  # noqa: F401
