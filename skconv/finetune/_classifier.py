"""FineTuneClassifier: a pretrained ConvNet trained further on a new task, as skorch does it."""

from __future__ import annotations

import functools
import inspect
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from skorch import NeuralNet, NeuralNetClassifier
from torch import nn

from ..engine import forward_in_chunks, mean_of_views, mirror_views
from ..images import Preprocessing, check_images
from ._callbacks import fine_tuning_callbacks, training_finished
from ._data import (
    TrainAugmentation,
    _ImageSet,
    as_eval_dataset,
    images_of,
    retransform,
    trunk_datasets,
)
from ._docstring import CLASSIFIER_DOC
from ._final import finish_fit, reset_final_model
from ._labels import check_labels, encode_labels, fit_labels, loss_settings
from ._net import FineTuneNet, resolve_train_layers
from ._random import seeded_rng
from ._split import GroupValidSplit, check_group_split

__all__ = ["FineTuneClassifier"]


class FineTuneClassifier(NeuralNetClassifier):
    __doc__ = CLASSIFIER_DOC  # long: kept in _docstring.py

    # FineTuneClassifier's own parameters; skorch checks the names of its own.
    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "backbone_lr_scale": [Interval(Real, 0, None, closed="left")],
        "warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "augment": [StrOptions({"default"}), None],
        "class_weight": [StrOptions({"balanced"}), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "tta": ["boolean"],
        "refit": ["boolean"],
        "blend_probe": ["boolean"],
        "image_size": [Interval(Integral, 16, None, closed="left"), None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "checkpoint_dir": [str, os.PathLike, None],
        "train_layers": [str],
        "n_views": [Interval(Integral, 1, None, closed="left")],
        "head_init": [StrOptions({"linear_probe", "random"})],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: Any = "DEFAULT",
        *,
        train_layers: str = "auto",
        n_views: int = 6,
        head_init: str = "random",
        label_smoothing: float = 0.1,
        freeze_epochs: int = 1,
        backbone_lr_scale: float = 0.1,
        warmup_epochs: int = 1,
        augment: str | None = "default",
        class_weight: str | None = None,
        patience: int | None = 4,
        tta: bool = True,
        refit: bool = True,
        blend_probe: bool = False,
        image_size: int | None = None,
        num_workers: int = 0,
        random_state: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        module=FineTuneNet,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.AdamW,
        lr: float = 1e-3,
        max_epochs: int = 15,
        batch_size: int = 32,
        train_split=GroupValidSplit(0.15, stratified=True, random_state=0),  # noqa: B008
        callbacks=None,
        verbose: int = 0,
        device: str = "cpu",
        **kwargs,
    ):
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            callbacks=callbacks,
            verbose=verbose,
            device=device,
            **kwargs,
        )
        self.backbone = backbone
        self.weights = weights
        self.train_layers = train_layers
        self.n_views = n_views
        self.head_init = head_init
        self.label_smoothing = label_smoothing
        self.freeze_epochs = freeze_epochs
        self.backbone_lr_scale = backbone_lr_scale
        self.warmup_epochs = warmup_epochs
        self.augment = augment
        self.class_weight = class_weight
        self.patience = patience
        self.tta = tta
        self.refit = refit
        self.blend_probe = blend_probe
        self.image_size = image_size
        self.num_workers = num_workers
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir

    # ------------------------------------------------------------------ callbacks, labels

    @property
    def _default_callbacks(self):
        return fine_tuning_callbacks(self, super()._default_callbacks)

    @property
    def classes_(self):
        return self.label_encoder_.classes_

    def _checked_codes(self, X, y, *, new_labels: bool) -> np.ndarray:
        """Validate the parameters and ``y`` once per fit; ``y`` as integer codes.

        With ``new_labels``, the classes (and class weights) are learnt from ``y``
        first: the head and the loss are built from them.
        """
        # skorch's _validate_params checks parameter names, not values: hence the
        # direct call rather than scikit-learn's _fit_context.
        validate_parameter_constraints(
            self._parameter_constraints,
            self.get_params(deep=False),
            caller_name=type(self).__name__,
        )
        y = check_labels(X, y)
        if new_labels:
            self.label_encoder_, self.class_weight_ = fit_labels(y, self.class_weight)
        return self._codes(y)

    def _codes(self, y) -> np.ndarray:
        return encode_labels(self.label_encoder_, y)

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, groups=None, **fit_params):
        """Fine-tune on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Training images.
        y : array-like of shape (n_images,)
            Labels, strings or integers.
        groups : array-like of shape (n_images,), default=None
            Group labels, such as those of
            :func:`skconv.model_selection.find_near_duplicates`: the internal
            validation split keeps each group whole (see ``train_split`` and
            :class:`GroupValidSplit`). Too few groups for its folds raise ValueError.
        **fit_params : dict
            Passed on to skorch's ``fit``.

        Returns
        -------
        self : FineTuneClassifier
            The fitted classifier.
        """
        restart = not (self.warm_start and self.initialized_)
        codes = self._checked_codes(X, y, new_labels=restart)
        try:
            with seeded_rng(self.random_state, self.device):
                # The seed of the augmented views: a resumed fit draws the same ones again.
                self.view_seed_ = int(torch.randint(0, 2**31 - 1, ()).item())
                if restart:
                    self.initialize()  # as skorch's fit, which would validate a second time
                    reset_final_model(self)
                self._train(X, codes, groups, fit_params, entry="fit")
            parts = self.__dict__.pop("_split_parts", (None, None))
            # Not after a warm start (it trains the network further) nor a Ctrl-C.
            if restart and training_finished(self):
                seed = None if self.random_state is None else self.random_state + 1
                with seeded_rng(seed, self.device):
                    self._finish_fit(*parts, groups)
        finally:
            self.__dict__.pop("_train_views", None)  # never pickled with the model
        return self

    def partial_fit(self, X, y=None, classes=None, groups=None, **fit_params):
        """Train for more epochs, initialising on the first call.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Training images.
        y : array-like of shape (n_images,)
            Labels; on calls after the first, only classes seen then.
        classes : None
            Ignored; the classes are those of the first ``y``.
        groups : array-like of shape (n_images,), default=None
            Group labels the internal validation split keeps whole, as in ``fit``.
        **fit_params : dict
            Passed on to skorch's ``partial_fit``.

        Returns
        -------
        self : FineTuneClassifier
            The classifier, trained for ``max_epochs`` more epochs.
        """
        codes = self._checked_codes(X, y, new_labels=not self.initialized_)
        if not hasattr(self, "view_seed_"):
            self.view_seed_ = int(torch.randint(0, 2**31 - 1, ()).item())
        self._train(X, codes, groups, fit_params, entry="partial_fit")
        self.__dict__.pop("_split_parts", None)
        self.__dict__.pop("_train_views", None)
        return self

    def _finish_fit(self, train, valid, groups) -> None:
        finish_fit(self, train, valid, groups)

    def _train(self, X, codes, groups, fit_params: dict, entry: str):
        if groups is not None:
            check_group_split(self.train_split)
            fit_params["groups"] = groups  # skorch hands them to train_split
        if _SKORCH_ROUTES_BY_ENTRY:
            fit_params["_routing_method"] = entry
        return super().partial_fit(X, codes, **fit_params)

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        kwargs.setdefault("backbone", self.backbone)
        kwargs.setdefault("weights", self.weights)
        if hasattr(self, "label_encoder_"):
            kwargs.setdefault("n_classes", len(self.classes_))
        self.module_ = self.initialized_instance(self.module, kwargs)
        preprocessing = getattr(self.module_, "preprocessing", Preprocessing())
        if self.image_size is not None:
            preprocessing = preprocessing.replace(image_size=int(self.image_size))
        self.preprocessing_ = preprocessing
        return self

    def get_params_for(self, prefix):
        """skorch's parameters for ``prefix``, with FineTuneClassifier's own folded in.

        ``criterion`` gets ``label_smoothing`` and the balanced class weights,
        ``optimizer`` a group for the pretrained layers at ``lr * backbone_lr_scale``
        (after any ``optimizer__param_groups``), skorch's loaders ``num_workers``
        (unless ``iterator_train__num_workers`` or ``iterator_valid__...`` is given).

        Parameters
        ----------
        prefix : str
            A skorch component: ``"criterion"``, ``"optimizer"``, ``"iterator_train"``...

        Returns
        -------
        kwargs : dict
        """
        kwargs = super().get_params_for(prefix)
        if prefix == "criterion":
            settings = loss_settings(
                self.criterion, self.label_smoothing, getattr(self, "class_weight_", None)
            )
            kwargs = {**settings, **kwargs}
        elif prefix == "optimizer" and self.backbone_lr_scale != 1:
            lr = kwargs.get("lr", self.lr)
            kwargs["param_groups"] = [
                *kwargs.get("param_groups", []),
                ("backbone.*", {"lr": lr * self.backbone_lr_scale}),
            ]
        elif prefix in ("iterator_train", "iterator_valid") and self.num_workers:
            kwargs.setdefault("num_workers", self.num_workers)
        return kwargs

    # ------------------------------------------------------------------ data

    def get_dataset(self, X, y=None):
        if isinstance(X, torch.utils.data.Dataset):
            return X
        images = check_images(X)
        labels = None if y is None else self.classes_[np.asarray(y, dtype=np.int64)]
        return _ImageSet(images, y, labels, self.preprocessing_)

    def get_split_datasets(self, X, y=None, **fit_params):
        if getattr(self, "_final_pass", None) is not None:  # the refit: every image trains
            train, valid = self.get_dataset(X, y), None
        else:
            train, valid = super().get_split_datasets(X, y, **fit_params)
            valid = as_eval_dataset(valid, self.preprocessing_, self._codes)
            self._split_parts = (train, valid)  # for fit's safety net and refit
        stage = resolve_train_layers(self.train_layers, self.module_.backbone.stage_names)
        if stage is None:  # every layer trains: images through the whole network
            if self.augment is not None:
                train = retransform(train, TrainAugmentation(self.preprocessing_))
            return train, valid
        return self._trunk_datasets(stage, train, valid)

    def _trunk_datasets(self, stage: str, train, valid):
        """Cached trunk outputs of the training views and of the validation images."""
        augmentation = TrainAugmentation(self.preprocessing_) if self.augment else None
        refitting = getattr(self, "_final_pass", None) is not None
        train, valid = trunk_datasets(
            self.module_,
            stage,
            train,
            valid,
            preprocessing=self.preprocessing_,
            augmentation=augmentation,
            n_views=self.n_views if augmentation is not None else 1,
            view_seed=self.view_seed_,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device,
            # The refit's first images are the first pass's training part: same views.
            known=self.__dict__.pop("_train_views", None) if refitting else None,
        )
        if not refitting:
            self._train_views = train  # for the refit; fit drops it before returning
        if self.head_init == "linear_probe" and not len(self.history):
            # Not when resuming: the head is restored.
            self.module_.init_head_from_probe(
                train.maps[0], train.codes, balanced=self.class_weight is not None
            )
        return train, valid

    def trainable_backbone_parameters(self) -> list:
        """The backbone's parameters that fine-tuning trains (after any head-only epochs).

        All of them with ``train_layers="all"``; otherwise those of the layers after the
        cut, the trunk's staying frozen (see :meth:`FineTuneNet.trainable_backbone_parameters`).

        Returns
        -------
        parameters : list of torch.nn.Parameter
        """
        return self.module_.trainable_backbone_parameters()

    # ------------------------------------------------------------------ predicting

    def infer(self, x, groups=None, **fit_params):
        # skorch hands fit's parameters to both the split and the module's forward;
        # groups are for the split alone.
        if self.module_.training or not torch.is_tensor(x):
            return super().infer(x, **fit_params).float()
        forward = functools.partial(super().infer, **fit_params)
        views = mirror_views(x, tta=self.tta)  # with tta, the image and its mirror
        return mean_of_views([forward_in_chunks(forward, v, self.device) for v in views]).float()

    def predict_proba(self, X):
        """Probabilities of each class, in the order of ``classes_``.

        Those of the network, of the linear probe, or of their blend, as ``fit``
        chose on the validation images (``network_weight_``).

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
        """
        weight = getattr(self, "network_weight_", 1.0)
        if weight == 1:
            return super().predict_proba(X)
        images = images_of(X)[0] if isinstance(X, torch.utils.data.Dataset) else X
        proba = (1 - weight) * self.probe_.predict_proba(images)
        if weight > 0:
            proba += weight * super().predict_proba(X)
        return proba.astype(np.float32)

    def predict(self, X):
        """Predict the label of each image.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images.

        Returns
        -------
        y_pred : ndarray of shape (n_images,)
            Labels as given to ``fit`` (strings stay strings).
        """
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


# Newer skorch threads the entry point (fit or partial_fit) on, for metadata routing.
_SKORCH_ROUTES_BY_ENTRY = "_routing_method" in inspect.signature(NeuralNet.fit_loop).parameters
