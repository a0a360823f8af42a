"""FineTuneClassifier: every layer of a pretrained ConvNet trained further, as skorch does it.

The class is a thin :class:`skorch.NeuralNetClassifier`: its module is a backbone
from :mod:`skconv.zoo` plus a fresh linear head, and the practice that makes
fine-tuning work on a few hundred images lives in callbacks and a few overridden
hooks: a head-only warm-up, a lower learning rate for the pretrained layers, a
warm-up-then-cosine schedule, training-only augmentation, class weights, early
stopping that restores the best epoch, and test-time augmentation.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from skorch import NeuralNetClassifier
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    EpochScoring,
    LRScheduler,
    PassthroughScoring,
)
from skorch.callbacks.scoring import ScoringBase
from skorch.dataset import ValidSplit
from skorch.history import History
from torch import nn

from . import zoo
from ._inference import mean_of_views, mirror_views
from .images import Preprocessing, check_images, load_image
from .pooling import pool_features

__all__ = [
    "FineTuneClassifier",
    "FineTuneNet",
    "TrainAugmentation",
    "BackboneFreezer",
    "WarmupCosineLR",
    "EpochCheckpoint",
]


# --------------------------------------------------------------------------- module


class FineTuneNet(nn.Module):
    """A backbone from :mod:`skconv.zoo` with global average pooling and a new linear head.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Any name :func:`skconv.zoo.load_backbone` accepts.
    weights : str, path-like or None, default="DEFAULT"
        Pretrained weights of the backbone (see :func:`skconv.zoo.load_backbone`).
    n_classes : int, default=2
        Outputs of the head.
    dropout : float, default=0.2
        Dropout before the head; the usual regulariser of EfficientNet heads.

    Examples
    --------
    >>> import torch
    >>> from skconv.finetune import FineTuneNet
    >>> net = FineTuneNet("resnet18", weights=None, n_classes=3).eval()
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: Any = "DEFAULT",
        n_classes: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        loaded = zoo.load_backbone(backbone, weights)  # without the ImageNet classifier
        self.backbone = loaded.module
        self.preprocessing = loaded.preprocessing
        self.backbone_identity = loaded.identity
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            size = self.preprocessing.image_size  # some backbones (ViT) take one size only
            (probe,) = self.backbone(torch.zeros(1, 3, size, size))
            self.backbone.train(was_training)
        self.n_features = int(probe.shape[-1] if probe.ndim == 3 else probe.shape[1])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.n_features, n_classes)
        # Start from near-uniform predictions: pretrained features can be large (Caffe
        # SqueezeNet's reach hundreds), and a default-initialised head would begin with
        # a loss far above chance that pushes big gradients into the backbone.
        nn.init.normal_(self.head.weight, std=0.01 / max(1.0, probe.abs().mean().item()))
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (feature_map,) = self.backbone(x)
        return self.head(self.dropout(pool_features(feature_map, "avg")))


# --------------------------------------------------------------------------- data


class TrainAugmentation:
    """Training-only augmentation for grayscale medical images and photos alike.

    Random resized crop (``scale`` of the area), horizontal flip, a small
    rotation and brightness/contrast jitter, then the backbone's normalisation.
    No vertical flip: ultrasound and X-ray images have a meaningful top.

    Parameters
    ----------
    preprocessing : Preprocessing
        Output size, interpolation and normalisation of the backbone.
    scale : tuple of float, default=(0.6, 1.0)
        Range of the crop's share of the image area.
    rotation : float, default=10
        Largest rotation in degrees.
    brightness, contrast : float, default=0.2
        Strength of the colour jitter.

    Examples
    --------
    >>> from PIL import Image
    >>> from skconv.images import Preprocessing
    >>> from skconv.finetune import TrainAugmentation
    >>> augment = TrainAugmentation(Preprocessing(image_size=32))
    >>> augment(Image.new("RGB", (64, 48))).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        preprocessing: Preprocessing,
        scale: tuple = (0.6, 1.0),
        rotation: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
    ):
        self.preprocessing = preprocessing
        self.scale = scale
        self.rotation = rotation
        self.brightness = brightness
        self.contrast = contrast

    def _pipeline(self):
        from torchvision.transforms import v2

        modes = {
            "bicubic": v2.InterpolationMode.BICUBIC,
            "bilinear": v2.InterpolationMode.BILINEAR,
            "nearest": v2.InterpolationMode.NEAREST,
        }
        mode = modes.get(self.preprocessing.interpolation, v2.InterpolationMode.BILINEAR)
        size = self.preprocessing.image_size
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=self.scale, interpolation=mode, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomRotation(self.rotation, interpolation=v2.InterpolationMode.BILINEAR),
                v2.ColorJitter(brightness=self.brightness, contrast=self.contrast),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def __call__(self, image) -> torch.Tensor:
        if getattr(self, "_compiled", None) is None:
            self._compiled = self._pipeline()
        return self.preprocessing.normalize(self._compiled(image))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_compiled", None)  # rebuilt on first use; keeps pickles small and portable
        return state


class _ImageSet(torch.utils.data.Dataset):
    """Images and integer targets; ``y`` keeps the original labels for skorch's scorers."""

    def __init__(self, X, codes, labels, transform):
        self.X = X
        self.codes = codes
        self.y = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int):
        image = load_image(self.X[index], where=f"X[{index}]")
        code = 0 if self.codes is None else int(self.codes[index])
        return self.transform(image), code

    def with_transform(self, transform) -> _ImageSet:
        return _ImageSet(self.X, self.codes, self.y, transform)


# --------------------------------------------------------------------------- callbacks


class BackboneFreezer(Callback):
    """Train only the head for the first ``epochs`` epochs (a head-only warm-up).

    A new, randomly initialised head sends large gradients into the pretrained
    layers; freezing them until the head has settled protects what they learnt.
    :class:`FineTuneClassifier` keeps a frozen backbone in eval mode, so its
    batch-norm statistics stay those of ImageNet meanwhile.

    Parameters
    ----------
    epochs : int, default=1
        Number of head-only epochs at the start of training.

    Examples
    --------
    >>> from skconv.finetune import BackboneFreezer
    >>> BackboneFreezer(epochs=2).epochs
    2
    """

    def __init__(self, epochs: int = 1):
        self.epochs = epochs

    def on_epoch_begin(self, net, **kwargs):
        frozen = len(net.history) <= self.epochs
        for param in net.module_.backbone.parameters():
            param.requires_grad_(not frozen)

    def on_train_end(self, net, **kwargs):
        for param in net.module_.backbone.parameters():
            param.requires_grad_(True)


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Constant during the head-only epochs, linear warm-up, then cosine decay.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer whose groups' learning rates are scaled (their ratios stay).
    max_epochs : int
        Total number of epochs; the rate reaches ``min_factor`` at the last one.
    hold_epochs : int, default=0
        Epochs at the full rate first (the head-only warm-up).
    warmup_epochs : int, default=1
        Epochs of linear warm-up after the hold.
    min_factor : float, default=0.01
        Final fraction of each group's initial rate.
    last_epoch : int, default=-1
        As in :class:`torch.optim.lr_scheduler.LRScheduler`.

    Examples
    --------
    >>> import torch
    >>> from skconv.finetune import WarmupCosineLR
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = WarmupCosineLR(opt, max_epochs=4, warmup_epochs=1)
    >>> rates = []
    >>> for _ in range(4):
    ...     rates.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
    >>> rates
    [0.5, 1.0, 0.505, 0.01]
    """

    def __init__(
        self,
        optimizer,
        max_epochs: int,
        hold_epochs: int = 0,
        warmup_epochs: int = 1,
        min_factor: float = 0.01,
        last_epoch: int = -1,
    ):
        self.max_epochs = max_epochs
        self.hold_epochs = hold_epochs
        self.warmup_epochs = warmup_epochs
        self.min_factor = min_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        """Multiplier of the initial rates at ``epoch`` (0-based)."""
        if epoch < self.hold_epochs:
            return 1.0
        epoch -= self.hold_epochs
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        span = max(1, self.max_epochs - self.hold_epochs - self.warmup_epochs - 1)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self):
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class EpochCheckpoint(Callback):
    """Save the training state after every epoch; resume from it on the next run.

    After every epoch, ``<dirname>/checkpoint.pt`` is replaced atomically (a kill at
    any moment leaves the previous epoch's complete file) by the network and optimizer
    state, the history, the state of :class:`~skorch.callbacks.EarlyStopping` (best
    weights included), torch's random number generator state, and a fingerprint of
    the parameters, classes, images, labels and validation split.

    Like skorch's :class:`~skorch.callbacks.LoadInitState`, the first training after
    the net is initialised resumes from an existing file, read with
    ``torch.load(weights_only=True)``: network, optimizer, history, early stopping,
    learning-rate schedule and random generators are restored, and training stops
    once the history holds the epochs the interrupted run was to train. On the same
    machine the result is an uninterrupted run's model, to the bit; a finished run is
    restored without training. A checkpoint of another setup raises ValueError naming
    what differs and is left untouched. :class:`FineTuneClassifier` adds this
    callback, last, when ``checkpoint_dir`` is set.

    Parameters
    ----------
    dirname : str or path-like
        The folder of the checkpoint; created if missing.

    Examples
    --------
    >>> from skconv.finetune import EpochCheckpoint
    >>> EpochCheckpoint("runs/ft").path.name
    'checkpoint.pt'
    """

    FILENAME = "checkpoint.pt"
    FORMAT = "skconv-checkpoint-2"

    def __init__(self, dirname):
        self.dirname = dirname

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return Path(self.dirname) / self.FILENAME

    def initialize(self):
        self.may_resume_ = True
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.fingerprint_ = _fingerprint(net, X, y)
        self.saved_fingerprint_ = None
        self.last_epoch_ = len(net.history) + net.max_epochs
        self.finished_ = False
        if self.may_resume_ and self.path.is_file():
            self._resume(net, self._load())
        self.may_resume_ = False
        self.saved_epochs_ = len(net.history)

    def on_epoch_begin(self, net, dataset_valid=None, **kwargs):
        if _SPLIT not in self.fingerprint_:  # the split is made after on_train_begin
            self.fingerprint_[_SPLIT] = _digest(getattr(dataset_valid, "indices", None))
            if self.saved_fingerprint_ is not None and _SPLIT in self.saved_fingerprint_:
                self._refuse_another_setup([_SPLIT])
        if len(net.history) > self.last_epoch_:
            del net.history[-1]  # the row skorch opened for an epoch that will not run
            raise KeyboardInterrupt  # ends the loop as EarlyStopping does

    def on_epoch_end(self, net, **kwargs):
        self._save(net, finished=False)

    def on_train_end(self, net, **kwargs):
        # EarlyStopping ends training by raising KeyboardInterrupt, as Ctrl-C does; only
        # the former, or the last epoch saved, makes a finished run.
        stopped = any(
            isinstance(cb, EarlyStopping) and getattr(cb, "misses_", 0) >= cb.patience
            for _, cb in net.callbacks_
        )
        if not self.finished_ and (stopped or self.saved_epochs_ >= self.last_epoch_):
            self._save(net, finished=True)

    def _load(self) -> dict:
        try:
            # weights_only: a checkpoint is data, and loading it must never run code.
            # CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"Cannot read the checkpoint {os.fspath(self.path)!r}: {exc}. Delete it to "
                "train from scratch."
            ) from exc
        if not isinstance(state, dict) or state.get("format") != self.FORMAT:
            raise ValueError(
                f"{os.fspath(self.path)!r} is not a checkpoint this version of skconv can "
                "resume from. Delete it to train from scratch."
            )
        return state

    def _refuse_another_setup(self, keys) -> None:
        differ = [
            key for key in keys if self.saved_fingerprint_.get(key) != self.fingerprint_.get(key)
        ]
        if differ:
            raise ValueError(
                f"The checkpoint in {os.fspath(self.dirname)!r} belongs to another setup "
                f"({', '.join(differ)} differ); it is left untouched. Delete it to train "
                "from scratch, or pass another checkpoint_dir."
            )

    def _resume(self, net, state: dict) -> None:
        self.saved_fingerprint_ = state["fingerprint"]
        self._refuse_another_setup(
            [key for key in {**self.saved_fingerprint_, **self.fingerprint_} if key != _SPLIT]
        )
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        net.history_ = History(json.loads(state["history"]))
        # The callbacks before this one began training on an empty history.
        for name, cb in net.callbacks_:
            if isinstance(cb, EarlyStopping):
                vars(cb).update(state["early_stopping"].get(name, {}))
            elif isinstance(cb, LRScheduler):
                cb.on_train_begin(net)  # the schedule, rebuilt at the restored epoch
            elif isinstance(cb, (ScoringBase, PassthroughScoring)):
                # Each marks the epochs that beat its best score so far.
                score = getattr(cb, "name_", None) or cb.name
                best = [row[score] for row in net.history if row.get(f"{score}_best")]
                cb.best_score_ = best[-1] if best else cb.best_score_
        self.finished_ = state["finished"]
        self.last_epoch_ = len(net.history) if self.finished_ else state["last_epoch"]
        # Last: from here on, every random draw is the one the interrupted run made next.
        torch.set_rng_state(state["rng"])
        gpu = _gpu(net.device)
        if state["cuda_rng"] and gpu is not None:
            torch.cuda.set_rng_state(state["cuda_rng"][0], gpu)

    def _save(self, net, finished: bool) -> None:
        from ._io import atomic_write

        gpu = _gpu(net.device)
        state = {
            "format": self.FORMAT,
            "fingerprint": self.fingerprint_,
            "finished": finished,
            "last_epoch": self.last_epoch_,
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "history": json.dumps(net.history.to_list(), default=_json_number),
            "early_stopping": {
                name: {
                    "misses_": int(cb.misses_),
                    "dynamic_threshold_": float(cb.dynamic_threshold_),
                    "best_epoch_": int(cb.best_epoch_),
                    "best_model_weights_": cb.best_model_weights_,
                }
                for name, cb in net.callbacks_
                if isinstance(cb, EarlyStopping) and hasattr(cb, "best_epoch_")
            },
            "rng": torch.get_rng_state(),
            "cuda_rng": [] if gpu is None else [torch.cuda.get_rng_state(gpu)],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path, "wb", overwrite=True) as handle:
            torch.save(state, handle)
        self.saved_epochs_ = len(net.history)


def _json_number(value):
    if hasattr(value, "item"):  # NumPy and torch scalars in skorch's history
        return value.item()
    raise TypeError(f"Cannot store {type(value).__name__} in a checkpoint's history.")


# Parameters that change neither the trained model nor its data: a checkpoint made with
# other values still resumes.
_RESUME_NEUTRAL = frozenset({"callbacks", "checkpoint_dir", "device", "num_workers", "verbose"})
_SPLIT = "validation split"


def _digest(value) -> str:
    try:
        return joblib.hash(value)
    except Exception:  # unpicklable values (lambdas): their type is all we can compare
        return f"<{type(value).__qualname__}>"


def _fingerprint(net, X, y) -> dict:
    """Digests of what a checkpoint belongs to, under the names an error gives them."""
    params = {
        f"parameter {name!r}": _digest(value)
        for name, value in net.get_params(deep=False).items()
        if not name.startswith("_") and name not in _RESUME_NEUTRAL
    }
    classes = getattr(getattr(net, "label_encoder_", None), "classes_", None)
    return {
        **params,
        "classes": _digest(None if classes is None else list(classes)),
        "X": "dataset" if isinstance(X, torch.utils.data.Dataset) else _digest(X),
        "y": _digest(None if y is None else np.asarray(y)),
    }


# --------------------------------------------------------------------------- classifier


class FineTuneClassifier(NeuralNetClassifier):
    """Fine-tune every layer of a pretrained ConvNet on a new image classification task.

    The second way of transfer learning, as a skorch classifier: callbacks,
    ``history``, ``partial_fit``, ``GridSearchCV`` and pickling all work as in
    skorch. ``X`` takes every form :func:`skconv.images.check_images` accepts
    (normally an array of file paths) and ``y`` may hold strings or integers.

    The defaults are the practice that works on a few hundred images on a CPU:
    AdamW at ``lr=1e-3`` for the new head and ten times less for the
    pretrained layers (``backbone_lr_scale=0.1``), which should move little;
    one head-only epoch first (``freeze_epochs=1``); one epoch of linear warm-up
    and a cosine decay; mild augmentation (crops, flips, small rotations,
    brightness/contrast); early stopping after ``patience=4`` epochs without a
    better validation loss, with the best epoch's weights restored; and at most
    ``max_epochs=15`` epochs, enough for a small pretrained network to converge
    on a few hundred images.

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
    freeze_epochs : int, default=1
        Head-only epochs at the start (see :class:`BackboneFreezer`), the backbone
        in eval mode so that its batch-norm statistics stay the pretrained ones.
    backbone_lr_scale : float, default=0.1
        Learning rate of the pretrained layers relative to ``lr``.
    warmup_epochs : int, default=1
        Linear warm-up epochs after the head-only ones, before the cosine decay.
    augment : {"default"} or None, default="default"
        Training-only augmentation (:class:`TrainAugmentation`); None turns it off.
    class_weight : {"balanced"} or None, default=None
        Weights passed to the loss; ``"balanced"`` weighs classes inversely to
        their frequency in ``y``.
    patience : int or None, default=4
        Early stopping patience on the validation loss; None trains all epochs.
        Needs a validation split (``train_split``).
    tta : bool, default=False
        At prediction, average the logits of each image and of its mirror.
    image_size : int or None, default=None
        Side of the square input; None uses the weights' own size.
    num_workers : int, default=0
        DataLoader processes that decode and augment images.
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
    train_split : callable or None, default=ValidSplit(0.15, stratified=True, random_state=0)
        How the validation part is made; pass
        ``skorch.helper.predefined_split(skorch.dataset.Dataset(X_val, y_val))``
        to use the part from :func:`skconv.model_selection.train_val_test_split`.
        With ``groups`` given to ``fit``, a :class:`skorch.dataset.ValidSplit` with
        a number as ``cv`` keeps groups whole: its validation part is the first
        fold of :class:`~sklearn.model_selection.StratifiedGroupKFold` with
        ``round(1 / cv)`` folds (``cv`` folds for an int), stratified unless no
        class has a member for every fold.
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
        Per-epoch losses, accuracy and learning rate.

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
        "image_size": [Interval(Integral, 16, None, closed="left"), None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "checkpoint_dir": [str, os.PathLike, None],
        "lr": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: Any = "DEFAULT",
        *,
        freeze_epochs: int = 1,
        backbone_lr_scale: float = 0.1,
        warmup_epochs: int = 1,
        augment: str | None = "default",
        class_weight: str | None = None,
        patience: int | None = 4,
        tta: bool = False,
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
        train_split=ValidSplit(0.15, stratified=True, random_state=0),  # noqa: B008
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
        self.freeze_epochs = freeze_epochs
        self.backbone_lr_scale = backbone_lr_scale
        self.warmup_epochs = warmup_epochs
        self.augment = augment
        self.class_weight = class_weight
        self.patience = patience
        self.tta = tta
        self.image_size = image_size
        self.num_workers = num_workers
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir

    # ------------------------------------------------------------------ callbacks

    @property
    def _default_callbacks(self):
        # skorch's valid_acc compares predict() with the batch targets; here predict()
        # returns the original labels while targets are codes, so score on codes.
        callbacks = [
            (name, cb)
            if name != "valid_acc"
            else (name, EpochScoring(_accuracy_on_codes, name="valid_acc", lower_is_better=False))
            for name, cb in super()._default_callbacks
        ]
        extra = [
            (
                "lr_scheduler",
                LRScheduler(
                    policy=WarmupCosineLR,
                    max_epochs=self.max_epochs,
                    hold_epochs=self.freeze_epochs,
                    warmup_epochs=self.warmup_epochs,
                    step_every="epoch",
                ),
            ),
        ]
        if self.freeze_epochs:
            extra.append(("freezer", BackboneFreezer(self.freeze_epochs)))
        if self.patience is not None and self.train_split is not None:
            extra.append(
                (
                    "early_stopping",
                    EarlyStopping(monitor="valid_loss", patience=self.patience, load_best=True),
                )
            )
        # Before print_log, so that the epoch table shows what these callbacks record.
        callbacks = callbacks[:-1] + extra + callbacks[-1:]
        if self.checkpoint_dir is not None:
            # Last: it saves what every other callback did in the epoch, and restores
            # their state after they began training.
            callbacks.append(("checkpoint", EpochCheckpoint(self.checkpoint_dir)))
        return callbacks

    # ------------------------------------------------------------------ labels

    @property
    def classes_(self):
        return self.label_encoder_.classes_

    def _check_params(self) -> None:
        # skorch's _validate_params checks parameter names, not values: hence the
        # direct call rather than scikit-learn's _fit_context.
        validate_parameter_constraints(
            self._parameter_constraints,
            self.get_params(deep=False),
            caller_name=type(self).__name__,
        )

    def _check_targets(self, X, y) -> np.ndarray:
        if y is None:
            raise ValueError("FineTuneClassifier needs y: one label per image.")
        images = check_images(X) if not isinstance(X, torch.utils.data.Dataset) else X
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, one label per image; got shape {y.shape}.")
        if len(y) != len(images):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")
        check_classification_targets(y)
        return y

    def _fit_labels(self, X, y) -> None:
        y = self._check_targets(X, y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y holds a single class ({encoder.classes_[0]!r}); "
                "a classifier needs at least two."
            )
        self.label_encoder_ = encoder
        self.class_weight_ = (
            compute_class_weight("balanced", classes=encoder.classes_, y=y).astype(np.float32)
            if self.class_weight == "balanced"
            else None
        )

    def _codes(self, y) -> np.ndarray:
        y = np.asarray(y)
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if len(unseen):
            raise ValueError(
                f"y contains labels not seen in fit: {unseen.tolist()}; "
                f"known classes are {self.classes_.tolist()}."
            )
        return self.label_encoder_.transform(y).astype(np.int64)

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
            validation split keeps each group whole (see ``train_split``). Too few
            groups for its folds raise ValueError.
        **fit_params : dict
            Passed on to skorch's ``fit``.

        Returns
        -------
        self : FineTuneClassifier
            The fitted classifier.
        """
        self._check_params()
        if not (self.warm_start and self.initialized_):
            self._fit_labels(X, y)  # before initialize: the head and the loss need them
        if groups is not None:
            fit_params["groups"] = groups
        with _seeded_rng(self.random_state, self.device):
            return super().fit(X, y, **fit_params)

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
        self._check_params()
        if not self.initialized_:
            self._fit_labels(X, y)
        codes = self._codes(self._check_targets(X, y))
        if groups is not None:
            fit_params["groups"] = groups
        return super().partial_fit(X, codes, classes=classes, **fit_params)

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

    def initialize_criterion(self):
        super().initialize_criterion()
        weight = getattr(self, "class_weight_", None)
        if weight is not None:
            if not hasattr(self.criterion_, "weight"):
                raise ValueError(
                    f"class_weight='balanced' needs a criterion with a 'weight', "
                    f"got {type(self.criterion_).__name__}."
                )
            self.criterion_.weight = torch.as_tensor(weight, device=self.device)
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        named_parameters = list(named_parameters)
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        backbone = getattr(getattr(self, "module_", None), "backbone", None)
        if prefix != "optimizer" or backbone is None or self.backbone_lr_scale == 1:
            return args, kwargs
        backbone_ids = {id(p) for p in backbone.parameters()}
        groups = []
        for group in args[0]:
            lr = group.get("lr", kwargs["lr"])
            pretrained = [p for p in group["params"] if id(p) in backbone_ids]
            new = [p for p in group["params"] if id(p) not in backbone_ids]
            if pretrained:
                groups.append({**group, "params": pretrained, "lr": lr * self.backbone_lr_scale})
            if new:
                groups.append({**group, "params": new})
        return (groups,), kwargs

    # ------------------------------------------------------------------ data

    def get_dataset(self, X, y=None):
        if isinstance(X, torch.utils.data.Dataset):
            return X
        images = check_images(X)
        labels = None if y is None else self.classes_[np.asarray(y, dtype=np.int64)]
        return _ImageSet(images, y, labels, self.preprocessing_)

    def get_split_datasets(self, X, y=None, **fit_params):
        groups = fit_params.get("groups")
        if groups is not None and _folds_by_number(self.train_split):
            # skorch's ValidSplit passes groups to splitters that ignore them.
            dataset = self.get_dataset(X, y)
            train, valid = _split_keeping_groups(self.train_split, dataset, y, groups)
        else:
            train, valid = super().get_split_datasets(X, y, **fit_params)
        if self.augment is not None:
            train = _retransform(train, TrainAugmentation(self.preprocessing_))
        return train, self._as_eval_dataset(valid)

    def _as_eval_dataset(self, dataset):
        if dataset is None or isinstance(dataset, (_ImageSet, torch.utils.data.Subset)):
            return dataset
        if hasattr(dataset, "X") and hasattr(dataset, "y"):
            # e.g. skorch.helper.predefined_split(skorch.dataset.Dataset(X_val, y_val))
            images = check_images(dataset.X)
            if dataset.y is None:
                raise ValueError("The validation dataset needs labels (y).")
            codes = self._codes(dataset.y)
            return _ImageSet(images, codes, np.asarray(dataset.y), self.preprocessing_)
        return dataset

    def get_iterator(self, dataset, training=False):
        prefix = "iterator_train" if training else "iterator_valid"
        if self.num_workers and f"{prefix}__num_workers" not in self.__dict__:
            setattr(self, f"{prefix}__num_workers", self.num_workers)
            try:
                return super().get_iterator(dataset, training=training)
            finally:
                delattr(self, f"{prefix}__num_workers")
        return super().get_iterator(dataset, training=training)

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        if str(self.device).startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _set_training(self, training=True):
        super()._set_training(training)
        # skorch sets train mode before every step. A backbone with nothing to train (the
        # head-only epochs) runs in eval mode instead, or its batch-norm layers would
        # overwrite their pretrained running statistics.
        backbone = getattr(self.module_, "backbone", None)
        if training and backbone is not None:
            if not any(param.requires_grad for param in backbone.parameters()):
                backbone.eval()

    def train_step_single(self, batch, **fit_params):
        with self._autocast():
            return super().train_step_single(batch, **fit_params)

    def evaluation_step(self, batch, training=False):
        with self._autocast():
            return super().evaluation_step(batch, training=training)

    def infer(self, x, groups=None, **fit_params):
        # skorch hands fit's parameters to both the split and the module's forward;
        # groups are for the split alone.
        if not (self.tta and not self.module_.training and torch.is_tensor(x)):
            return super().infer(x, **fit_params).float()
        views = mirror_views(x, tta=True)  # predictions average the image and its mirror
        return mean_of_views(
            [super(FineTuneClassifier, self).infer(v, **fit_params) for v in views]
        ).float()

    # ------------------------------------------------------------------ predicting

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

    def predict_proba(self, X):
        """Class probabilities of each image, columns in the order of ``classes_``.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
            Softmax probabilities (float32).
        """
        return super().predict_proba(X)

    def __setstate__(self, state):
        # A model trained on a GPU loads on a CPU-only machine: skorch maps the tensors,
        # and this keeps the classifier's device consistent with them.
        if str(state.get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
            state["device"] = "cpu"
        super().__setstate__(state)


@contextlib.contextmanager
def _seeded_rng(seed: int | None, device):
    """Draw from torch's generators seeded with ``seed``, and put them back afterwards.

    The CPU generator and that of the GPU trained on are forked: a seeded fit draws the
    same numbers whatever ran before it, and the caller's random stream is left as it
    was. Without a seed, the fit draws from the caller's stream, as skorch does.
    """
    if seed is None:
        yield
        return
    gpu = _gpu(device)
    gpus = [] if gpu is None else [gpu]
    with torch.random.fork_rng(devices=gpus):
        torch.random.default_generator.manual_seed(seed)
        if gpu is not None:
            torch.cuda.default_generators[gpu].manual_seed(seed)
        yield


def _gpu(device) -> int | None:
    """The index of the GPU that ``device`` names, None for a CPU."""
    if not str(device).startswith("cuda"):
        return None
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def _accuracy_on_codes(net, X, y) -> float:
    return float(np.mean(net.predict_proba(X).argmax(axis=1) == np.asarray(y)))


def _folds_by_number(split) -> bool:
    return isinstance(split, ValidSplit) and isinstance(split.cv, Real)


def _split_keeping_groups(split: ValidSplit, dataset, y, groups):
    """The train and validation parts of ``split``, with every group whole in one."""
    groups = np.asarray(groups)
    if groups.shape != (len(dataset),):
        raise ValueError(
            f"groups must be 1-D with one entry per image ({len(dataset)}), "
            f"got shape {groups.shape}."
        )
    fraction = not float(split.cv).is_integer()
    n_folds = max(2, round(1 / split.cv)) if fraction else int(split.cv)
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ValueError(
            f"groups has {n_groups} distinct values, too few to keep each group whole in "
            f"the validation part of train_split=ValidSplit({split.cv!r}), which needs at "
            f"least {n_folds}. Pass a validation part of your own, train_split="
            "predefined_split(Dataset(X_val, y_val)), for example from "
            "skconv.model_selection.train_val_test_split(..., groups=groups)."
        )
    y = np.zeros(len(groups)) if y is None else np.asarray(y)
    if not split.stratified or np.unique(y, return_counts=True)[1].max() < n_folds:
        y = np.zeros(len(groups))  # one class: folds of whole groups, balanced in size
    folds = StratifiedGroupKFold(
        n_folds, shuffle=fraction, random_state=split.random_state if fraction else None
    )
    train, valid = next(folds.split(np.zeros(len(groups)), y, groups))
    return torch.utils.data.Subset(dataset, train), torch.utils.data.Subset(dataset, valid)


def _retransform(dataset, transform):
    if isinstance(dataset, _ImageSet):
        return dataset.with_transform(transform)
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, _ImageSet):
        return torch.utils.data.Subset(dataset.dataset.with_transform(transform), dataset.indices)
    return dataset
