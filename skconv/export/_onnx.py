"""export_onnx: a fitted model as one ONNX file (torch and skl2onnx, imported when it runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from .._io import atomic_write, to_python
from ..images import Preprocessing

#: ONNX opsets of exported files: the default domain (onnxruntime 1.16 and later run
#: opset 17) and scikit-learn's ai.onnx.ml converters.
OPSETS = {"": 17, "ai.onnx.ml": 3}

_IR_VERSION = 8


def export_onnx(estimator, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a fitted model as one ONNX file: image pixels in, labels and probabilities out.

    The file runs with onnxruntime, NumPy and Pillow alone (:class:`OnnxClassifier`, or
    ``skconv predict MODEL.onnx IMAGES``). Before anything is written, the exported
    graph is run on a few random images and compared with the estimator: the same
    labels, and probabilities (or scores) within 1e-4.

    Parameters
    ----------
    estimator : Pipeline or FineTuneClassifier
        A fitted :class:`~sklearn.pipeline.Pipeline` whose first step is a
        :class:`~skconv.ConvFeatureTransformer` followed by steps skl2onnx converts
        (StandardScaler, PCA, ...) and a classifier (LogisticRegression, LinearSVC,
        RidgeClassifier, ...), or a fitted :class:`~skconv.FineTuneClassifier`.
    path : str or path-like
        The ``.onnx`` file to write, atomically.
    overwrite : bool, default=False
        Replace ``path`` if it exists; otherwise an existing file raises
        :class:`FileExistsError` before any work.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If the estimator, or one of its steps, cannot be exported; the message names
        it. Nothing is written then.
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skconv import ConvFeatureTransformer, export_onnx
    >>> from skconv.export import OnnxClassifier
    >>> X = np.random.default_rng(0).integers(0, 256, (8, 40, 40), dtype=np.uint8)
    >>> y = np.array(["a", "b"] * 4)
    >>> clf = make_pipeline(ConvFeatureTransformer("resnet18", weights=None, image_size=32),
    ...                     LogisticRegression()).fit(X, y)
    >>> path = export_onnx(clf, os.path.join(tempfile.mkdtemp(), "model.onnx"))
    >>> onnx_model = OnnxClassifier(path)
    >>> bool((onnx_model.predict(X) == clf.predict(X)).all())
    True
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"File {os.fspath(path)!r} exists; refusing to overwrite it (pass overwrite=True)."
        )
    model = _build(estimator)  # fails, naming the step, before any file exists
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(model.SerializeToString())
    return path


def _build(estimator):
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline) and hasattr(estimator, "best_estimator_"):
        estimator = estimator.best_estimator_  # a fitted search: its chosen model
    from ..finetune import FineTuneClassifier

    if isinstance(estimator, FineTuneClassifier):
        return _finetuned_graph(estimator)
    if isinstance(estimator, Pipeline):
        return _pipeline_graph(estimator)
    raise ValueError(
        f"export_onnx exports a fitted Pipeline that starts with a ConvFeatureTransformer, "
        f"or a fitted FineTuneClassifier; got a {type(estimator).__name__}."
    )


def _pipeline_graph(pipeline):
    import onnx
    from sklearn.utils.validation import check_is_fitted

    from ..engine import TorchEngine, export_features
    from ..features import ConvFeatureTransformer

    steps = [(n, s) for n, s in pipeline.steps if s is not None and s != "passthrough"]
    if len(steps) < 2 or not isinstance(steps[0][1], ConvFeatureTransformer):
        kinds = ", ".join(type(s).__name__ for _, s in steps) or "none"
        raise ValueError(
            "export_onnx needs a Pipeline of a ConvFeatureTransformer, then a classifier; "
            f"this one has {kinds}."
        )
    (_, features), rest = steps[0], steps[1:]
    check_is_fitted(features, "module_")
    features._check_configuration()
    head_name, head = rest[-1]
    if not hasattr(head, "classes_"):
        raise ValueError(
            f"export_onnx needs a classifier as the Pipeline's last step; {head_name!r} is a "
            f"{type(head).__name__}."
        )
    # The network as the torch engine runs it (batch norms folded); the same copy serves
    # as the reference the exported graph is checked against.
    spec = features._spec()
    engine = TorchEngine(features.module_, spec, features.device_)
    feature_bytes = export_features(engine.model.net, spec)
    head_graphs, scores = _sklearn_graphs(rest, features.n_features_out_)
    model = _chained([onnx.load_from_string(feature_bytes), *head_graphs], scores)
    if scores == "scores" and len(head.classes_) == 2:
        _set_width(model, scores, 1)  # a binary decision function: one column, not two
    classes = head.classes_
    _describe(model, estimator=pipeline, classes=classes, preprocessing=features.preprocessing_)
    _verify(model, _pipeline_reference(engine, features, rest), features.preprocessing_, scores)
    return model


def _sklearn_graphs(rest: list, n_features: int) -> tuple[list, str]:
    """skl2onnx's graphs of the steps after the features, each fed by the one before.

    The transformers (scaler, PCA, ...) become one graph from ``features`` to
    ``transformed``, the classifier another from there to ``label`` and its scores:
    skl2onnx converts a Pipeline that ends in a classifier without probabilities
    (LinearSVC) only when the classifier stands alone.
    """
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import Pipeline

    *transformers, (_, head) = rest
    graphs, link, width = [], "features", n_features
    try:
        if transformers:
            middle = Pipeline(transformers)
            graph = to_onnx(
                middle,
                initial_types=[(link, FloatTensorType([None, width]))],
                target_opset=OPSETS,
            )
            _rename_output(graph, graph.graph.output[0].name, "transformed")
            graphs.append(graph)
            link = "transformed"
            width = middle.transform(np.zeros((1, width), dtype=np.float32)).shape[1]
        initial_types = [(link, FloatTensorType([None, width]))]
        try:
            # Probabilities as a plain tensor (not skl2onnx's list of maps)...
            graph = to_onnx(
                head,
                initial_types=initial_types,
                options={id(head): {"zipmap": False}},
                target_opset=OPSETS,
            )
        except NameError as exc:  # a converter that has no such option
            if "zipmap" not in str(exc):
                raise
            graph = to_onnx(head, initial_types=initial_types, target_opset=OPSETS)
        # skl2onnx names the second output "probabilities" even where it holds a
        # decision function (LinearSVC, RidgeClassifier): say what it is.
        scores = "probabilities" if hasattr(head, "predict_proba") else "scores"
        _rename_output(graph, "probabilities", scores)
    except Exception as exc:  # skl2onnx raises many types; each names the step it met
        names = ", ".join(f"{n!r} ({type(s).__name__})" for n, s in rest)
        raise ValueError(
            f"export_onnx cannot convert the steps after the features, {names}, with "
            f"skl2onnx: {type(exc).__name__}: {exc}"
        ) from exc
    graphs.append(graph)
    return graphs, scores


def _chained(graphs: list, scores: str):
    """One model from graphs that feed each other by name; outputs label and scores."""
    import onnx
    from onnx import compose

    opsets: dict = {}
    for graph in graphs:
        for entry in graph.opset_import:
            opsets[entry.domain] = max(entry.version, opsets.get(entry.domain, 0))
    prepared = []
    for k, graph in enumerate(graphs):
        graph.ir_version = _IR_VERSION
        del graph.opset_import[:]
        graph.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
        prepared.append(
            compose.add_prefix(graph, f"part{k}/", rename_inputs=False, rename_outputs=False)
        )
    merged = prepared[0]
    for graph in prepared[1:]:
        wanted = {i.name for i in graph.graph.input}
        links = [(o.name, o.name) for o in merged.graph.output if o.name in wanted]
        merged = compose.merge_models(merged, graph, io_map=links)
    outputs = [o for o in merged.graph.output if o.name in ("label", scores)]
    del merged.graph.output[:]
    merged.graph.output.extend(outputs)
    return merged


def _set_width(model, output: str, width: int) -> None:
    for value in model.graph.output:
        if value.name == output:
            value.type.tensor_type.shape.dim[1].dim_value = width


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def _finetuned_graph(net):
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from ..engine import FromPixels, export_onnx_bytes, mean_of_views, mirror_views

    if not getattr(net, "initialized_", False) or not hasattr(net, "label_encoder_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError("This FineTuneClassifier is not fitted yet; call fit first.")
    module = net.module_
    was_training = module.training
    module.eval()

    class _Logits(torch.nn.Module):
        def __init__(self, inner, tta: bool):
            super().__init__()
            self.inner = inner
            self.tta = tta

        def forward(self, x):
            return mean_of_views([self.inner(view) for view in mirror_views(x, self.tta)])

    preprocessing = net.preprocessing_
    size = preprocessing.image_size
    wrapper = FromPixels(_Logits(module, bool(net.tta)), preprocessing).to("cpu").eval()
    try:
        exported = export_onnx_bytes(
            wrapper, torch.zeros((2, size, size, 3), dtype=torch.uint8), "image", ["logits"]
        )
    except Exception as exc:
        raise ValueError(
            f"export_onnx cannot export the network of this FineTuneClassifier "
            f"(backbone {net.backbone!r}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)
    model = onnx.load_from_string(exported)
    classes = np.asarray(net.classes_)
    string_labels = classes.dtype.kind in "OUS"
    label_type = TensorProto.STRING if string_labels else TensorProto.INT64
    values = classes.astype(object) if string_labels else classes.astype(np.int64)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.asarray(values), "classes"))
    graph.node.extend(
        [
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["index"], axis=1, keepdims=0),
            helper.make_node("Gather", ["classes", "index"], ["label"], axis=0),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("label", label_type, ["batch"]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", len(classes)]
            ),
        ]
    )
    model.ir_version = _IR_VERSION
    _describe(model, estimator=net, classes=classes, preprocessing=preprocessing)
    _verify(model, _finetuned_reference(net), preprocessing, "probabilities")
    return model


def _pipeline_reference(engine, features, rest):
    """What the fitted pipeline predicts for crop-sized pixels, computed in torch."""
    import torch
    from sklearn.pipeline import Pipeline

    rest = Pipeline(rest)

    def predict(pixels: np.ndarray):
        floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        X = engine(features.preprocessing_.normalize(floats))
        if hasattr(rest, "predict_proba"):
            return rest.predict(X), rest.predict_proba(X)
        scores = rest.decision_function(X)
        return rest.predict(X), scores if scores.ndim == 2 else scores[:, None]

    return predict


def _finetuned_reference(net):
    import torch

    def predict(pixels: np.ndarray):
        floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        batch = net.preprocessing_.normalize(floats).to(net.device)
        was_training = net.module_.training
        net.module_.eval()
        try:
            with torch.no_grad():
                proba = torch.softmax(net.infer(batch), dim=1).cpu().numpy()
        finally:
            net.module_.train(was_training)
        return net.classes_[proba.argmax(axis=1)], proba

    return predict


def _verify(model, reference, preprocessing: Preprocessing, scores: str, atol: float = 1e-4):
    """Run the graph on random pixels: the estimator's labels, and scores within ``atol``."""
    import onnxruntime as ort

    size = preprocessing.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, values = session.run(["label", scores], {"image": pixels})
    want_labels, want_values = reference(pixels)
    gap = float(np.abs(values - want_values).max())
    if not np.array_equal(np.asarray(labels), np.asarray(want_labels)) or gap > atol:
        raise ValueError(
            f"The exported graph does not reproduce the estimator (largest difference of "
            f"{scores} {gap:.3g}); nothing was written."
        )


def _describe(model, *, estimator, classes, preprocessing: Preprocessing) -> None:
    import onnx

    metadata = {
        "skconv_version": __version__,
        "skconv_classes": json.dumps([to_python(c) for c in classes]),
        "skconv_preprocessing": json.dumps(_preprocessing_dict(preprocessing)),
        "skconv_input": "uint8 RGB pixels (n, s, s, 3): the center crop at image_size",
        "skconv_estimator": repr(estimator)[:2000],
    }
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "skconv"
    model.producer_version = __version__
    model.doc_string = (
        "Image classifier exported by skconv.export_onnx; run it with "
        "skconv.export.OnnxClassifier or 'skconv predict'."
    )


def _preprocessing_dict(p: Preprocessing) -> dict:
    return {
        "image_size": p.image_size,
        "crop_pct": p.crop_pct,
        "resize": p.resize_size,
        "crop_mode": p.crop_mode,
        "interpolation": p.interpolation,
        "mean": list(p.mean),
        "std": list(p.std),
    }
