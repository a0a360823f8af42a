"""The final model of a fit: the refit on every image and the safety net's blend.

Run by :meth:`FineTuneClassifier.fit` after the pass that early stopping watched.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.history import History

from ._data import _ImageSet, images_of
from ._probe import LinearProbe, choose_network_weight
from ._random import seeded_rng

__all__ = ["finish_fit", "reset_final_model"]


def reset_final_model(net) -> None:
    net.network_weight_, net.chosen_, net.probe_ = 1.0, "network", None
    net.blend_losses_, net.refit_epochs_, net.validation_history_ = None, None, None
    net.validation_proba_ = None


def finish_fit(net, train, valid, groups) -> None:
    """After early stopping: the safety net's choice, then the final model on all images."""
    if valid is None or not (net.refit or net.blend_probe):
        return  # nothing to choose with, or nothing asked: the early-stopped network
    train_images, train_codes, _ = images_of(train)
    valid_images, valid_codes, _ = images_of(valid)
    all_images = [*train_images, *valid_images]
    all_codes = np.concatenate([train_codes, valid_codes])
    weight, probe = 1.0, None
    # Held-out predictions, as cross_val_predict's: the refit trains on these images.
    net.validation_proba_ = network_proba = NeuralNetClassifier.predict_proba(net, valid)
    if net.blend_probe:
        if groups is not None and isinstance(train, torch.utils.data.Subset):
            groups = np.asarray(groups)[np.asarray(train.indices)]
        probe = _linear_probe(net)
        train_features = probe.search(train_images, train_codes, groups)
        valid_features = probe.features.transform(valid_images)
        probe_proba = probe.predict_proba(features=valid_features)
        weight, net.blend_losses_ = choose_network_weight(network_proba, probe_proba, valid_codes)
        net.validation_proba_ = weight * network_proba + (1 - weight) * probe_proba
        if weight < 1 and net.refit:  # the probe uses every image when the network does
            probe.refit(np.vstack([train_features, valid_features]), all_codes)
    if net.refit and weight > 0:
        _refit_network(net, all_images, all_codes)
    net.network_weight_ = weight
    net.chosen_ = {1.0: "network", 0.0: "probe"}.get(weight, "blend")
    net.probe_ = probe if weight < 1 else None
    summary = _summary(net, len(all_codes))
    if net.verbose and summary:
        print(summary)


def _linear_probe(net) -> LinearProbe:
    from ..features import ConvFeatureTransformer

    features = ConvFeatureTransformer(
        net.backbone,
        weights=net.weights,
        image_size=net.image_size,
        batch_size=net.batch_size,
        device="cuda" if str(net.device).startswith("cuda") else "cpu",
        num_workers=net.num_workers,
    )
    return LinearProbe(features, len(net.classes_), net.random_state)


def _refit_network(net, images: list, codes: np.ndarray) -> None:
    """Train again from the pretrained weights on every image, for the chosen epochs.

    As many epochs as early stopping chose (or all of them without early
    stopping), on the same schedule, so that the final network follows the path
    that was validated, with the validation images trained on too.
    """
    history = net.history
    losses = [row.get("valid_loss", np.inf) for row in history]
    epochs = int(np.argmin(losses)) + 1 if net.patience is not None else len(history)
    net.validation_history_ = History(list(history))  # initialize() clears history
    data = _ImageSet(images, codes, net.classes_[codes], net.preprocessing_)
    net._final_pass = epochs
    try:
        # Its own stream: the same refit whether or not the probe drew before it.
        seed = None if net.random_state is None else net.random_state + 2
        with seeded_rng(seed, net.device):
            net.initialize()
            net._train(data, codes, None, {"epochs": epochs}, entry="fit")
    finally:
        net._final_pass = None
    net.refit_epochs_ = len(net.history)  # fewer than chosen after a Ctrl-C


def _summary(net, n_images: int) -> str:
    parts = []
    if net.blend_losses_ is not None:
        losses = net.blend_losses_
        parts.append(
            f"validation log loss: network {losses[1.0]:.4f}, linear probe {losses[0.0]:.4f}, "
            f"blend at network weight {net.network_weight_:g} "
            f"{losses[net.network_weight_]:.4f}; predicting with the {net.chosen_}"
        )
    if net.refit_epochs_ is not None:
        parts.append(f"network refitted on all {n_images} images for {net.refit_epochs_} epochs")
    return "; ".join(parts) + "." if parts else ""
