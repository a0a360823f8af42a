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
from skorch.history import History
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
from ._labels import check_labels, encode_labels, fit_labels, loss_settings
from ._net import FineTuneNet, resolve_train_layers
from ._probe import LinearProbe, choose_network_weight
from ._random import seeded_rng
from ._split import GroupValidSplit, check_group_split

__all__ = ["FineTuneClassifier"]


class FineTuneClassifier(NeuralNetClassifier):
    """Fine-tune a pretrained ConvNet on a new image classification task.

    The second way of transfer learning, as a skorch classifier: callbacks,
    ``history``, ``partial_fit``, ``GridSearchCV`` and pickling all work as in
    skorch. ``X`` takes every form :func:`skconv.images.check_images` accepts
    (normally an array of file paths) and ``y`` may hold strings or integers.

    By default the backbone's last two stages and a new head train
    (``train_layers="auto"``) on the outputs of the frozen early layers, computed
    once for each of ``n_views`` augmented views, and predictions average each image
    with its mirror (``tta=True``). On BUSI's five duplicate-aware 70:15:15 splits
    (``benchmarks/results/finetune_ablation.md``, 2-core CPU) these defaults reached
    83.0 ± 4.7 % test accuracy against 76.2 ± 2.4 % for Lite0 features and a logistic
    regression (macro AUC 0.933, 110 to 207 s per fit); training every layer
    (``train_layers="all"``) reached 77.9 ± 5.4 % in 927 s. What each default is
    worth is given with its parameter below; the others follow the practice that
    works on a few hundred images on a CPU: AdamW, ``lr=1e-3`` for the head and ten
    times less for the pretrained layers, one head-only epoch, one epoch of linear
    warm-up and a cosine decay, early stopping after 4 epochs without a better
    validation loss (best weights restored), at most 15 epochs.

    Early stopping watches a validation part split off the training images. Sets
    with near-duplicates (the same scan re-cropped or re-annotated, as in many
    medical sets) need that split to keep them together, or early stopping watches
    copies of training images: pass their group labels, for example from
    :func:`skconv.model_selection.find_near_duplicates`, as ``fit(X, y,
    groups=groups)``, and every group lands whole on one side of the split.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        A name from :func:`skconv.zoo.list_backbones`.
    weights : str, path-like or None, default="DEFAULT"
        Pretrained weights of the backbone, as in :func:`skconv.zoo.load_backbone`.
    train_layers : str, default="auto"
        Which layers train. ``"all"``: every layer, images through the whole network
        each epoch (classic fine-tuning). ``"head"``: the new head alone.
        ``"auto"``: the backbone's last two stages and the head. A stage name (see
        ``module_.backbone.stage_names``): the layers after that stage. Unless
        ``"all"``, the frozen early layers run once per augmented view
        (``n_views``) and their outputs are reused in every epoch, which is what
        makes fine-tuning affordable on a CPU.
    n_views : int, default=6
        Views of each training image computed through the frozen layers when
        ``train_layers`` is not ``"all"``: the plain crop, then augmented ones; epoch
        ``k`` trains on view ``k`` modulo ``n_views``. 1 without augmentation.
    head_init : {"random", "linear_probe"}, default="random"
        ``"random"``: a new head, initialised small so that predictions start near
        uniform. ``"linear_probe"`` starts it from a logistic regression fitted on the
        frozen features of the unaugmented training images (LP-FT, Kumar et al.
        2022), so that training starts where the fixed features stand. Measured, the
        probe did not pay: 82.4 ± 3.6 % on BUSI's five splits against 83.0 ± 4.7 %
        for the random head, the same macro AUC (0.933); on 28-px grey BUSI with
        binary labels at ``image_size=96``, AUC 0.819 against 0.869.
    label_smoothing : float, default=0.1
        Label smoothing of the cross-entropy loss (0 turns it off). Without it, BUSI's
        five splits fell from 82.4 to 76.7 % (measured with the linear-probe head).
    freeze_epochs : int, default=1
        Head-only epochs at the start (see :class:`BackboneFreezer`), the backbone
        in eval mode so that its batch-norm statistics stay the pretrained ones.
    backbone_lr_scale : float, default=0.1
        Learning rate of the pretrained layers relative to ``lr``.
    warmup_epochs : int, default=1
        Linear warm-up epochs after the head-only ones, before the cosine decay.
    augment : {"default"} or None, default="default"
        Training-only augmentation (:class:`TrainAugmentation`); None turns it off
        (and ``n_views`` is then 1). Without it, BUSI's five splits fell from 82.4 to
        74.7 % (measured with the linear-probe head).
    class_weight : {"balanced"} or None, default=None
        Weights passed to the loss; ``"balanced"`` weighs classes inversely to
        their frequency in ``y``.
    patience : int or None, default=4
        Early stopping patience on the validation loss; None trains all epochs.
        Needs a validation split (``train_split``).
    tta : bool, default=True
        At prediction, average the logits of each image and of its mirror. On BUSI's
        five splits it added 2.1 points of accuracy (80.3 to 82.4 %) and 0.006 of macro
        AUC to the same fitted models (with the linear-probe head), for twice the
        prediction time.
    refit : bool, default=True
        After early stopping has chosen the number of epochs on the validation part,
        train the network again from the pretrained weights on every image given to
        ``fit`` (training and validation part) for that many epochs, on the same
        schedule, as ``GridSearchCV(refit=True)`` refits on all the data. No image is
        only watched. Needs a validation part; ``history`` is then the refit's and
        ``validation_history_`` the pass that early stopping watched.
    blend_probe : bool, default=True
        The safety net: also fit a linear probe (:class:`ConvFeatureTransformer`
        features of the same pretrained backbone, scaled, and a logistic regression
        with ``C`` chosen by cross-validation) on the training part, and predict with
        the mix of the probe's and the network's probabilities that has the lowest
        log loss on the validation images (``network_weight_``, in steps of 0.1;
        ties go to the network). So the fitted classifier never predicts worse on
        its validation images than the fixed features it started from. Needs a
        validation part.
    image_size : int or None, default=None
        Side of the square input; None uses the weights' own size.
    num_workers : int, default=0
        DataLoader processes that decode and augment images: for the cached trunk
        views, and for skorch's loaders unless ``iterator_train__num_workers`` or
        ``iterator_valid__num_workers`` is given.
    random_state : int or None, default=None
        Seeds the random draws of ``fit`` (initialisation of the head, shuffling,
        augmentation, dropout) so that two fits on the same CPU machine give the same
        model, bit for bit. ``fit`` draws from its own seeded copy of torch's
        generators: torch's global random state is the same before and after.
        ``partial_fit`` draws from torch's global generators. On a GPU, cuDNN's
        convolution algorithms and bfloat16 autocast are not bitwise deterministic:
        expect predictions that differ in the last digits.
    checkpoint_dir : str, path-like or None, default=None
        A folder where the state after every epoch is saved (see
        :class:`EpochCheckpoint`). If it holds a checkpoint of the same setup
        (parameters, data, labels, validation split), ``fit`` resumes from it
        and, on the same machine, reaches the same model as an uninterrupted run;
        a finished run is restored without training. A checkpoint of another
        setup raises ValueError and is left alone: delete it or choose another
        folder. Use one folder per model, not with ``GridSearchCV``.
    module : type, default=FineTuneNet
        The network class; ``module__dropout`` and others reach it.
    criterion : type, default=torch.nn.CrossEntropyLoss
        The loss.
    optimizer : type, default=torch.optim.AdamW
        The optimizer; ``optimizer__weight_decay`` and others reach it.
    lr : float, default=1e-3
        Learning rate of the head.
    max_epochs : int, default=15
        Most epochs to train.
    batch_size : int, default=32
        Images per step.
    train_split : callable or None, default=GroupValidSplit(0.15, stratified=True, random_state=0)
        How the validation part is made; pass
        ``skorch.helper.predefined_split(skorch.dataset.Dataset(X_val, y_val))``
        to use the part from :func:`skconv.model_selection.train_val_test_split`.
        The default is skorch's ``ValidSplit(0.15, stratified=True, random_state=0)``,
        except that ``groups`` given to ``fit`` stay whole (:class:`GroupValidSplit`);
        with ``groups``, skorch's own ``ValidSplit`` with a number as ``cv`` is
        refused, since it would put members of a group on both sides.
    callbacks : list or None, default=None
        More skorch callbacks.
    verbose : int, default=0
        1 prints skorch's epoch table.
    device : str, default="cpu"
        ``"cuda"`` trains on a GPU, with bfloat16 mixed precision.
    **kwargs
        Any other skorch parameter (``iterator_train__...``, ``module__...``).

    Attributes
    ----------
    classes_ : ndarray
        The original labels, in the order of ``predict_proba``'s columns.
    preprocessing_ : Preprocessing
        The resize, crop and normalisation used.
    class_weight_ : ndarray or None
        The weights given to the loss.
    history : skorch.History
        Per-epoch losses, accuracy and learning rate of the network's training (the
        refit's, when ``refit``).
    validation_history_ : skorch.History or None
        With ``refit``, the history of the pass that early stopping watched (with
        ``valid_loss``); None without a refit.
    refit_epochs_ : int or None
        Epochs of the refit on all images; None without one.
    network_weight_ : float
        The network's weight in the predicted probabilities, the probe having
        ``1 - network_weight_``: 1.0 without ``blend_probe`` or a validation part.
    chosen_ : {"network", "probe", "blend"}
        What ``predict`` uses: ``network_weight_`` 1, 0, or in between.
    probe_ : LinearProbe or None
        The linear probe, refitted on all images; None when ``network_weight_`` is 1.
    blend_losses_ : dict or None
        Validation log loss of each network weight tried.
    validation_proba_ : ndarray or None
        Probabilities of the validation images (in the validation part's order) by
        the model that was chosen, before the refit trained on them: held-out
        predictions, as ``cross_val_predict``'s.

    See Also
    --------
    ConvFeatureTransformer : Keeps the pretrained layers fixed instead.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv import FineTuneClassifier
    >>> X = np.random.default_rng(0).integers(0, 256, (12, 40, 40), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 6)
    >>> clf = FineTuneClassifier("resnet18", weights=None, image_size=32, max_epochs=2,
    ...                          train_split=None, patience=None, random_state=0)
    >>> clf.fit(X, y).predict(X[:2]).shape
    (2,)
    """

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
        blend_probe: bool = True,
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
        with seeded_rng(self.random_state, self.device):
            # The seed of the augmented views: a resumed fit draws the same ones again.
            self.view_seed_ = int(torch.randint(0, 2**31 - 1, ()).item())
            if restart:
                self.initialize()  # as skorch's fit, which would validate a second time
                self._reset_final_model()
            self._train(X, codes, groups, fit_params, entry="fit")
        parts = self.__dict__.pop("_split_parts", (None, None))
        # Not after a warm start (it trains the network further) nor a Ctrl-C.
        if restart and training_finished(self):
            seed = None if self.random_state is None else self.random_state + 1
            with seeded_rng(seed, self.device):
                self._finish_fit(*parts, groups)
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
        return self

    def _reset_final_model(self) -> None:
        self.network_weight_, self.chosen_, self.probe_ = 1.0, "network", None
        self.blend_losses_, self.refit_epochs_, self.validation_history_ = None, None, None
        self.validation_proba_ = None

    def _finish_fit(self, train, valid, groups) -> None:
        """After early stopping: the safety net's choice, then the final model on all images."""
        if valid is None:  # no validation images: nothing to choose with
            return
        train_images, train_codes, _ = images_of(train)
        valid_images, valid_codes, _ = images_of(valid)
        all_images = [*train_images, *valid_images]
        all_codes = np.concatenate([train_codes, valid_codes])
        weight, probe = 1.0, None
        # Held-out predictions, as cross_val_predict's: the refit trains on these images.
        self.validation_proba_ = network_proba = super().predict_proba(valid)
        if self.blend_probe:
            if groups is not None and isinstance(train, torch.utils.data.Subset):
                groups = np.asarray(groups)[np.asarray(train.indices)]
            probe = self._linear_probe()
            train_features = probe.search(train_images, train_codes, groups)
            valid_features = probe.features.transform(valid_images)
            probe_proba = probe.predict_proba(features=valid_features)
            weight, self.blend_losses_ = choose_network_weight(
                network_proba, probe_proba, valid_codes
            )
            self.validation_proba_ = weight * network_proba + (1 - weight) * probe_proba
            if weight < 1:
                probe.refit(np.vstack([train_features, valid_features]), all_codes)
        if self.refit and weight > 0:
            self._refit_network(all_images, all_codes)
        self.network_weight_ = weight
        self.chosen_ = {1.0: "network", 0.0: "probe"}.get(weight, "blend")
        self.probe_ = probe if weight < 1 else None
        if self.verbose:
            print(self._final_model_summary(len(all_codes)))

    def _linear_probe(self) -> LinearProbe:
        from ..features import ConvFeatureTransformer

        features = ConvFeatureTransformer(
            self.backbone,
            weights=self.weights,
            image_size=self.image_size,
            batch_size=self.batch_size,
            device="cuda" if str(self.device).startswith("cuda") else "cpu",
            num_workers=self.num_workers,
        )
        return LinearProbe(features, len(self.classes_), self.random_state)

    def _refit_network(self, images: list, codes: np.ndarray) -> None:
        """Train again from the pretrained weights on every image, for the chosen epochs.

        As many epochs as early stopping chose (or all of them without early
        stopping), on the same schedule, so that the final network follows the path
        that was validated, with the validation images trained on too.
        """
        history = self.history
        losses = [row.get("valid_loss", np.inf) for row in history]
        epochs = int(np.argmin(losses)) + 1 if self.patience is not None else len(history)
        self.validation_history_ = History(list(history))  # initialize() clears history
        data = _ImageSet(images, codes, self.classes_[codes], self.preprocessing_)
        self._final_pass = epochs
        try:
            # Its own stream: the same refit whether or not the probe drew before it.
            seed = None if self.random_state is None else self.random_state + 2
            with seeded_rng(seed, self.device):
                self.initialize()
                self._train(data, codes, None, {"epochs": epochs}, entry="fit")
        finally:
            self._final_pass = None
        self.refit_epochs_ = len(self.history)  # fewer than chosen after a Ctrl-C

    def _final_model_summary(self, n_images: int) -> str:
        parts = []
        if self.blend_losses_ is not None:
            losses = self.blend_losses_
            parts.append(
                f"validation log loss: network {losses[1.0]:.4f}, linear probe {losses[0.0]:.4f}, "
                f"blend at network weight {self.network_weight_:g} "
                f"{losses[self.network_weight_]:.4f}; predicting with the {self.chosen_}"
            )
        if self.refit_epochs_ is not None:
            parts.append(
                f"network refitted on all {n_images} images for {self.refit_epochs_} epochs"
            )
        return "; ".join(parts) + "."

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
        )
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
