"""The callbacks of fine-tuning, one concern each, as skorch's own are."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import joblib
import numpy as np
import torch
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    EpochScoring,
    LRScheduler,
    PassthroughScoring,
)
from skorch.callbacks.scoring import ScoringBase
from skorch.history import History

from ._random import gpu_index

__all__ = [
    "BackboneFreezer",
    "EpochCheckpoint",
    "EpochLRScheduler",
    "NextView",
    "WarmupCosine",
    "WarmupCosineLR",
]


class EpochLRScheduler(LRScheduler):
    """skorch's :class:`~skorch.callbacks.LRScheduler`, without its scheduler when pickled.

    The live scheduler holds the optimizer, whose state (two moment buffers per
    parameter for AdamW) a pickled net already stores once as ``optimizer_``: pickled
    again through the scheduler it tripled the size of a saved model. The scheduler is
    rebuilt in ``on_train_begin`` anyway, so nothing is lost.
    """

    def __getstate__(self):
        state = self.__dict__.copy()
        state["lr_scheduler_"] = None
        return state


class BackboneFreezer(Callback):
    """Train only the head for the first ``epochs`` epochs (a head-only warm-up).

    A new, randomly initialised head sends large gradients into the pretrained
    layers; freezing them until the head has settled protects what they learnt.
    :class:`FineTuneClassifier` keeps a frozen backbone in eval mode, so its
    batch-norm statistics stay those of ImageNet meanwhile.

    Parameters
    ----------
    epochs : int, default=1
        Number of head-only epochs at the start of training. The backbone's layers
        that are trained afterwards are those of the net's
        ``trainable_backbone_parameters()``.

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
        for param in net.trainable_backbone_parameters():
            param.requires_grad_(not frozen)

    def on_train_end(self, net, **kwargs):
        for param in net.module_.backbone.parameters():
            param.requires_grad_(True)


class WarmupCosine:
    """The factor of :class:`WarmupCosineLR` at each epoch: hold, linear warm-up, cosine.

    A plain picklable callable (no lambda), for :class:`torch.optim.lr_scheduler.LambdaLR`.

    Parameters
    ----------
    max_epochs : int
        Total number of epochs; the factor reaches ``min_factor`` at the last one.
    hold_epochs : int, default=0
        Epochs at factor 1 first (the head-only warm-up).
    warmup_epochs : int, default=1
        Epochs of linear warm-up after the hold.
    min_factor : float, default=0.01
        The final factor.

    Examples
    --------
    >>> from skconv.finetune import WarmupCosine
    >>> [round(WarmupCosine(max_epochs=4)(epoch), 3) for epoch in range(4)]
    [0.5, 1.0, 0.505, 0.01]
    """

    def __init__(
        self, max_epochs: int, hold_epochs: int = 0, warmup_epochs: int = 1, min_factor=0.01
    ):
        self.max_epochs = max_epochs
        self.hold_epochs = hold_epochs
        self.warmup_epochs = warmup_epochs
        self.min_factor = min_factor

    def __call__(self, epoch: int) -> float:
        if epoch < self.hold_epochs:
            return 1.0
        epoch -= self.hold_epochs
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        span = max(1, self.max_epochs - self.hold_epochs - self.warmup_epochs - 1)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Constant during the head-only epochs, linear warm-up, then cosine decay.

    torch's :class:`~torch.optim.lr_scheduler.LambdaLR` with the factors of
    :class:`WarmupCosine`, so that skorch's
    :class:`~skorch.callbacks.LRScheduler` builds it from keyword arguments. Each
    group's rate is its initial rate times the factor, so ratios between groups (the
    pretrained layers' lower rate) stay.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer whose groups' learning rates are scaled.
    max_epochs : int
        Total number of epochs; the rate reaches ``min_factor`` at the last one.
    hold_epochs : int, default=0
        Epochs at the full rate first (the head-only warm-up).
    warmup_epochs : int, default=1
        Epochs of linear warm-up after the hold.
    min_factor : float, default=0.01
        Final fraction of each group's initial rate.
    last_epoch : int, default=-1
        As in :class:`torch.optim.lr_scheduler.LambdaLR`.

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
        self.schedule = WarmupCosine(max_epochs, hold_epochs, warmup_epochs, min_factor)
        super().__init__(optimizer, self.schedule, last_epoch)

    def factor(self, epoch: int) -> float:
        """Multiplier of the initial rates at ``epoch`` (0-based)."""
        return self.schedule(epoch)


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
    epochs : int or None, default=None
        The epochs a run trains, unless stopped early; None: the net's ``max_epochs``.
        (The refit of :class:`FineTuneClassifier` trains fewer.)

    Examples
    --------
    >>> from skconv.finetune import EpochCheckpoint
    >>> EpochCheckpoint("runs/ft").path.name
    'checkpoint.pt'
    """

    FILENAME = "checkpoint.pt"
    FORMAT = "skconv-checkpoint-3"

    def __init__(self, dirname, epochs: int | None = None):
        self.dirname = dirname
        self.epochs = epochs

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
        self.last_epoch_ = len(net.history) + (self.epochs or net.max_epochs)
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
        if not self.finished_ and (stopped_early(net) or self.saved_epochs_ >= self.last_epoch_):
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
        net.view_seed_ = int(state["view_seed"])  # the augmented views are drawn again alike
        # Last: from here on, every random draw is the one the interrupted run made next.
        torch.set_rng_state(state["rng"])
        gpu = gpu_index(net.device)
        if state["cuda_rng"] and gpu is not None:
            torch.cuda.set_rng_state(state["cuda_rng"][0], gpu)

    def _save(self, net, finished: bool) -> None:
        from .._io import atomic_write

        gpu = gpu_index(net.device)
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
            "view_seed": int(getattr(net, "view_seed_", 0)),
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


class NextView(Callback):
    """Train each epoch on the next cached view of the images (see ``TrunkViews``).

    Epoch ``k`` (from 0) takes view ``k % n_views``: the plain crop first, then the
    augmented ones in turn, so that every view is seen as often as the epochs allow.

    Examples
    --------
    >>> from skconv.finetune import NextView
    >>> NextView().on_epoch_begin  # doctest: +ELLIPSIS
    <bound method NextView.on_epoch_begin of ...>
    """

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        maps = getattr(dataset_train, "maps", None)
        if maps is not None:
            dataset_train.view = (len(net.history) - 1) % maps.shape[0]


def accuracy_on_codes(net, X, y) -> float:
    """Accuracy of ``net`` against integer targets (its ``predict`` gives the labels)."""
    return float(np.mean(net.predict_proba(X).argmax(axis=1) == np.asarray(y)))


def stopped_early(net) -> bool:
    """Whether early stopping ended the training (skorch's EarlyStopping, like Ctrl-C,
    ends it by raising KeyboardInterrupt)."""
    return any(
        isinstance(cb, EarlyStopping) and getattr(cb, "misses_", 0) >= cb.patience
        for _, cb in net.callbacks_
    )


def training_finished(net) -> bool:
    """Whether the last training ran to its end: early stopping or ``max_epochs``,
    not a Ctrl-C that skorch swallowed."""
    history = net.history
    complete = len(history) >= net.max_epochs and (not len(history) or "train_loss" in history[-1])
    return stopped_early(net) or complete


def fine_tuning_callbacks(net, skorch_defaults) -> list:
    """skorch's default callbacks of ``net``, with those that fine-tuning adds.

    skorch's ``valid_acc`` compares ``predict()`` with the batch targets; a
    :class:`FineTuneClassifier` predicts the original labels while its targets are
    codes, so it scores on codes. The schedule, view rotation, head-only warm-up and
    early stopping come before ``print_log``, so that the epoch table shows what they
    record; the checkpoint comes last, since it saves what every other callback did
    in the epoch and restores their state after they began training.
    """
    callbacks = [
        (name, cb)
        if name != "valid_acc"
        else (name, EpochScoring(accuracy_on_codes, name="valid_acc", lower_is_better=False))
        for name, cb in skorch_defaults
    ]
    extra = [
        (
            "lr_scheduler",
            EpochLRScheduler(
                policy=WarmupCosineLR,
                max_epochs=net.max_epochs,
                hold_epochs=net.freeze_epochs,
                warmup_epochs=net.warmup_epochs,
                step_every="epoch",
            ),
        ),
    ]
    if net.train_layers != "all":
        extra.append(("next_view", NextView()))
    if net.freeze_epochs:
        extra.append(("freezer", BackboneFreezer(net.freeze_epochs)))
    # The refit on all images (its epochs, else None): no validation.
    final_pass = getattr(net, "_final_pass", None)
    if net.patience is not None and net.train_split is not None and final_pass is None:
        extra.append(
            (
                "early_stopping",
                EarlyStopping(monitor="valid_loss", patience=net.patience, load_best=True),
            )
        )
    callbacks = callbacks[:-1] + extra + callbacks[-1:]
    if net.checkpoint_dir is not None:
        if final_pass is None:
            callbacks.append(("checkpoint", EpochCheckpoint(net.checkpoint_dir)))
        else:
            folder = os.path.join(net.checkpoint_dir, "refit")
            callbacks.append(("checkpoint", EpochCheckpoint(folder, epochs=final_pass)))
    return callbacks
