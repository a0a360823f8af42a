"""The one fit recipe: the models of skconv fit, fit_folder and compare_ways, and its checks."""

from __future__ import annotations

import numpy as np

MODES = ("features", "finetune")
DEFAULT_BACKBONE = "efficientnet_lite0"  # small, CPU-friendly, packaged: works offline


class RecipeError(ValueError):
    """A combination of ``mode``, ``compare``, ``epochs`` and ``precision`` not in the recipe.

    Parameters
    ----------
    message : str
        What is wrong, in the library's words.
    rule : {"mode", "compare", "epochs", "precision_value", "precision", "int8_missing"}
        The rule broken, so that the command line can say it in its own flags.
    """

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


def check_recipe(
    mode: str, *, compare: bool = False, epochs: int | None = None, precision: str = "fp32"
) -> None:
    """Check that ``mode``, ``compare``, ``epochs`` and ``precision`` go together.

    Parameters
    ----------
    mode : str
        ``"features"`` or ``"finetune"``.
    compare : bool, default=False
        Fit both modes and choose (then ``mode`` stays ``"features"``).
    epochs : int or None, default=None
        Epochs of fine-tuning; only with ``mode="finetune"`` or ``compare``.
    precision : {"fp32", "int8"}, default="fp32"
        Precision of the feature extractor (:class:`~skconv.ConvFeatureTransformer`'s
        ``precision``); ``"int8"`` only with ``mode="features"`` and without
        ``compare``, and only where OpenVINO and NNCF are installed.

    Returns
    -------
    None
        Nothing; a bad combination raises.

    Raises
    ------
    RecipeError
        A :class:`ValueError` that names the parameter and the allowed values.

    Examples
    --------
    >>> from skconv.experiment import check_recipe
    >>> check_recipe("finetune", epochs=3)
    >>> check_recipe("svm")
    Traceback (most recent call last):
    ...
    skconv.experiment.RecipeError: mode must be 'features' or 'finetune', got 'svm'.
    """
    if mode not in MODES:
        raise RecipeError(f"mode must be 'features' or 'finetune', got {mode!r}.", "mode")
    if compare and mode != "features":
        raise RecipeError(
            f"compare=True fits both modes; leave mode at 'features', got {mode!r}.", "compare"
        )
    if epochs is not None and mode != "finetune" and not compare:
        raise RecipeError(
            "epochs applies to mode='finetune' only; the features mode has no epochs.", "epochs"
        )
    from ..engine import PRECISIONS, int8_available

    if precision not in PRECISIONS:
        raise RecipeError(
            f"precision must be 'fp32' or 'int8', got {precision!r}.", "precision_value"
        )
    if precision != "fp32" and (mode != "features" or compare):
        raise RecipeError(
            "precision='int8' applies to mode='features' alone (fine-tuning trains in "
            "fp32; compare fits every backbone).",
            "precision",
        )
    if precision == "int8" and not int8_available():
        raise RecipeError(
            "precision='int8' needs the openvino and nncf packages, which are not installed "
            "(pip install 'skconv[openvino]'); available precisions: 'fp32'.",
            "int8_missing",
        )


def linear_head(**params):
    """The head of a feature model: ``LogisticRegression(max_iter=2000, **params)``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, **params)


def feature_transformer(backbone: str, *, image_size, verbose, precision: str = "fp32"):
    """The feature extractor of a feature model, quiet unless ``verbose``."""
    from ..features import ConvFeatureTransformer

    return ConvFeatureTransformer(
        backbone, image_size=image_size, precision=precision, verbose=1 if verbose else 0
    )


def features_model(backbone: str, *, image_size, verbose, head=None, precision: str = "fp32"):
    """A pipeline of :func:`feature_transformer` and ``head`` (:func:`linear_head`)."""
    from sklearn.pipeline import Pipeline

    features = feature_transformer(
        backbone, image_size=image_size, verbose=verbose, precision=precision
    )
    return Pipeline(
        [
            ("features", features),
            ("head", linear_head() if head is None else head),
        ]
    )


def finetune_model(validation, *, image_size, random_state, verbose, **params):
    """A FineTuneClassifier whose early stopping watches ``validation = (X_val, y_val)``.

    The test part stays unseen. ``params`` (``backbone``, ``max_epochs``, ...) go to the
    classifier and take precedence over these settings.
    """
    from skorch.callbacks import ProgressBar
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    from ..finetune import FineTuneClassifier

    X_val, y_val = validation
    settings = {
        "image_size": image_size,
        "train_split": predefined_split(Dataset(np.asarray(X_val), np.asarray(y_val))),
        "callbacks": [ProgressBar()] if verbose else None,
        "verbose": 1 if verbose else 0,
        "random_state": random_state,
        **params,
    }
    return FineTuneClassifier(**settings)


def build_model(
    mode, backbone, *, image_size, epochs, random_state, validation, verbose, precision="fp32"
):
    """The unfitted model of ``mode``: :func:`features_model` or :func:`finetune_model`."""
    if mode == "features":
        return features_model(
            backbone, image_size=image_size, verbose=verbose, precision=precision
        )
    extra = {} if epochs is None else {"max_epochs": epochs}
    return finetune_model(
        validation,
        image_size=image_size,
        random_state=random_state,
        verbose=verbose,
        backbone=backbone,
        **extra,
    )
