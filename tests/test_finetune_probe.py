"""The safety net of fine-tuning (skconv.finetune._probe): the probe and the blend's weight."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import FunctionTransformer

from skconv.finetune._probe import BLEND_WEIGHTS, LinearProbe, choose_network_weight


def _log_loss(proba, codes):
    return -np.mean(np.log(proba[np.arange(len(codes)), codes]))


def test_the_weight_with_the_lower_validation_log_loss_wins_and_ties_go_to_the_network():
    codes = np.array([0, 0, 1, 1])
    right = np.eye(2)[codes] * 0.98 + 0.01
    uniform = np.full((4, 2), 0.5)
    assert choose_network_weight(right, uniform, codes)[0] == 1.0
    assert choose_network_weight(uniform, right, codes)[0] == 0.0
    assert choose_network_weight(uniform, uniform, codes)[0] == 1.0  # a tie
    # Each sure and right on one half, sure and wrong on the other: a blend beats both.
    network = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    probe = np.array([[0.1, 0.9], [0.1, 0.9], [0.1, 0.9], [0.1, 0.9]])
    weight, losses = choose_network_weight(network, probe, codes)
    assert weight == 0.5 and sorted(losses) == list(BLEND_WEIGHTS)
    assert losses[0.5] == pytest.approx(_log_loss(0.5 * network + 0.5 * probe, codes))
    assert losses[0.5] < min(losses[0.0], losses[1.0])


def test_the_probe_predicts_every_class_and_searches_folds_that_lack_one():
    rng = np.random.default_rng(0)
    codes = np.array([0] * 10 + [2] * 10 + [3] * 2)  # code 1 absent, code 3 rare
    F = rng.normal(size=(len(codes), 5)) + codes[:, None]
    groups = np.arange(len(codes)) // 2  # the two of code 3 form one group: a fold lacks it
    probe = LinearProbe(FunctionTransformer(), n_classes=4, random_state=0)
    assert np.array_equal(probe.search(F, codes, groups), F)
    proba = probe.predict_proba(F)
    assert proba.shape == (len(codes), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.all(proba[:, 1] == 0)  # never seen, never predicted
    assert np.mean(proba.argmax(axis=1) == codes) > 0.8
    # Refitted on other features, with the C the search chose.
    C = probe.head_[-1].C
    probe.refit(F[:20], codes[:20])
    assert probe.head_[-1].C == C and list(probe.head_.classes_) == [0, 2]
