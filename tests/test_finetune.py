"""FineTuneClassifier: the practice that makes fine-tuning work, and skorch's contract."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.class_weight import compute_class_weight
from skorch.callbacks import Callback
from skorch.dataset import Dataset, ValidSplit
from skorch.helper import predefined_split

from skconv import FineTuneClassifier
from skconv.datasets import make_ultrasound
from skconv.engine import cpu_chunk_size
from skconv.finetune import WarmupCosineLR
from skconv.images import load_image

# Random-weight ResNet-18 on 32 px images: fast enough for contract tests.
# refit=False: one training pass per fit keeps the suite fast; the refit has its own tests.
TINY = dict(
    backbone="resnet18", weights=None, image_size=32, batch_size=16, random_state=0, refit=False
)


@pytest.fixture(scope="module")
def synthetic():
    X, y = make_ultrasound(n_per_class=12, image_size=48, random_state=0)
    return X, y


class EpochSnapshots(Callback):
    """Record the backbone's weights and batch-norm buffers (running means, variances and
    batch counts) and the head's weights, at the start and after each epoch."""

    def initialize(self):
        self.states = []
        return self

    def on_train_begin(self, net, **kwargs):
        self.on_epoch_end(net)

    def on_epoch_end(self, net, **kwargs):
        backbone, head = net.module_.backbone, net.module_.head
        parts = {
            "backbone": backbone.named_parameters(),
            "statistics": backbone.named_buffers(),
            "head": head.named_parameters(),
        }
        self.states.append(
            {part: {k: v.detach().clone() for k, v in named} for part, named in parts.items()}
        )

    def changed(self, part: str, epoch: int) -> list[bool]:
        """For each tensor of ``part``: did epoch ``epoch`` (1-based) change it?"""
        before, after = self.states[epoch - 1][part], self.states[epoch][part]
        return [not torch.equal(before[k], after[k]) for k in before]


def test_head_only_warm_up_keeps_the_backbone_and_its_batch_norm_statistics(synthetic):
    X, y = synthetic
    recorder = EpochSnapshots()
    clf = FineTuneClassifier(
        **TINY,
        train_layers="all",
        freeze_epochs=2,
        max_epochs=3,
        train_split=None,
        callbacks=[recorder],
    ).fit(X, y)
    for epoch in (1, 2):  # frozen: neither a weight nor a running statistic moves
        assert not any(recorder.changed("backbone", epoch))
        assert not any(recorder.changed("statistics", epoch))
        assert all(recorder.changed("head", epoch))
    assert any(recorder.changed("backbone", 3)) and all(recorder.changed("head", 3))
    assert all(recorder.changed("statistics", 3))  # every batch norm's mean, var and count
    assert all(p.requires_grad for p in clf.module_.backbone.parameters())


def test_last_layers_train_on_cached_views_and_the_trunk_stays_as_loaded(synthetic):
    X, y = synthetic
    recorder = EpochSnapshots()
    clf = FineTuneClassifier(
        **TINY, train_layers="layer3", n_views=2, freeze_epochs=1, max_epochs=3,
        train_split=None, callbacks=[recorder],
    ).fit(X, y)  # fmt: skip
    names = list(recorder.states[0]["backbone"])
    tail = [not name.split(".")[2].startswith(("conv1", "bn1", "layer1", "layer2", "layer3"))
            for name in names]  # fmt: skip
    for epoch in (2, 3):  # after the head-only epoch, the layers after layer3 (layer4) move
        changed = recorder.changed("backbone", epoch)
        assert all(c for c, t in zip(changed, tail) if t)
        assert not any(c for c, t in zip(changed, tail) if not t)
        assert not any(recorder.changed("statistics", epoch))  # batch norms in eval mode
    assert all(p.requires_grad for p in clf.module_.backbone.parameters())
    # The cached views' network is the network that predicts: trunk, then tail.
    trunk, tail_part = clf.module_.parts("layer3")
    assert {id(p) for p in tail_part.parameters()} <= {id(p) for p in clf.module_.parameters()}
    # The views were computed by a copy of the trunk with its batch norms folded.
    fast = clf.module_.frozen_trunk("layer3")

    def batch_norms(module):
        return sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())

    assert batch_norms(trunk) == 15 and batch_norms(fast) == 1  # the stem's is a stage
    assert not {id(p) for p in fast.parameters()} & {id(p) for p in trunk.parameters()}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), trunk.eval()(x), atol=1e-4, rtol=1e-4)


def test_the_head_starts_from_the_linear_probe(synthetic):
    from sklearn.linear_model import LogisticRegression

    from skconv import ConvFeatureTransformer

    X, y = synthetic
    clf = FineTuneClassifier(
        **TINY,
        train_layers="head",
        head_init="linear_probe",
        augment=None,
        max_epochs=0,
        train_split=None,
        tta=False,
    ).fit(X, y)
    features = ConvFeatureTransformer(
        "resnet18", weights=None, image_size=32, engine="torch"
    ).fit_transform(X)
    probe = LogisticRegression(max_iter=1000).fit(features, y)
    # The probe inside fit sees the trunk outputs stored in float16: close, not equal.
    np.testing.assert_allclose(clf.predict_proba(X), probe.predict_proba(features), atol=1e-2)
    assert (clf.predict(X) == probe.predict(features)).mean() >= 0.95


def test_pretrained_layers_get_the_scaled_learning_rate(synthetic):
    X, y = synthetic
    clf = FineTuneClassifier(
        **TINY, lr=0.01, backbone_lr_scale=0.1, max_epochs=1, train_split=None
    ).fit(X, y)
    groups = clf.optimizer_.param_groups
    backbone_ids = {id(p) for p in clf.module_.backbone.parameters()}
    by_kind = {all(id(p) in backbone_ids for p in g["params"]): g["initial_lr"] for g in groups}
    assert by_kind == {True: pytest.approx(0.001), False: pytest.approx(0.01)}


def test_warmup_cosine_schedule_holds_warms_and_decays():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = WarmupCosineLR(optimizer, max_epochs=6, hold_epochs=1, warmup_epochs=1)
    factors = [schedule.factor(epoch) for epoch in range(6)]
    assert factors[0] == 1.0 and factors[1] == 0.5 and factors[2] == 1.0
    assert factors[2] > factors[3] > factors[4] > factors[5] == pytest.approx(0.01)


@pytest.mark.real_data
def test_learns_the_synthetic_task_better_than_chance():
    X, y = make_ultrasound(n_per_class=30, image_size=64, random_state=0)
    X_test, y_test = make_ultrasound(n_per_class=20, image_size=64, random_state=1)
    clf = FineTuneClassifier(
        "squeezenet1_1_caffe",
        image_size=96,
        max_epochs=6,
        lr=3e-3,
        backbone_lr_scale=0.3,
        random_state=0,
    ).fit(X, y)
    accuracy = np.mean(clf.predict(X_test) == y_test)
    assert accuracy >= 0.6, accuracy  # chance is 1/3


def test_early_stopping_restores_the_best_epoch(synthetic):
    X, y = synthetic
    X_val, y_val = make_ultrasound(n_per_class=6, image_size=48, random_state=5)
    clf = FineTuneClassifier(
        **TINY,
        lr=0.05,
        max_epochs=6,
        patience=2,
        augment=None,
        label_smoothing=0.0,  # the validation loss is then the negative log-likelihood
        tta=False,  # and it sees no mirrored images
        blend_probe=False,  # the early-stopped network itself (TINY: no refit)
        train_split=predefined_split(Dataset(X_val, y_val)),
    ).fit(X, y)
    losses = clf.history[:, "valid_loss"]
    proba = clf.predict_proba(X_val)
    codes = np.searchsorted(clf.classes_, y_val)
    restored_loss = -np.mean(np.log(proba[np.arange(len(codes)), codes]))
    # The validation loss comes from the cached trunk outputs, the restored one from whole
    # images: the same network, summed in another order.
    assert restored_loss == pytest.approx(min(losses), rel=1e-3)
    assert np.argmin(losses) < len(losses) - 1 or len(losses) == 6


def test_refit_trains_on_every_image_for_the_epochs_early_stopping_chose(synthetic, monkeypatch):
    from skconv.finetune import _data

    X, y = synthetic
    X_val, y_val = make_ultrasound(n_per_class=4, image_size=48, random_state=5)
    params = dict(TINY, lr=0.05, max_epochs=3, patience=1, blend_probe=False, refit=True,
                  train_split=predefined_split(Dataset(X_val, y_val)))  # fmt: skip
    runs = []  # (images, views, maps) of each trunk run

    def recorded(trunk, images, *args, **kwargs):
        maps = trunk_views(trunk, images, *args, **kwargs)
        runs.append((len(images), maps.shape[0], maps))
        return maps

    trunk_views = _data.trunk_views
    monkeypatch.setattr(_data, "trunk_views", recorded)
    clf = FineTuneClassifier(**params).fit(X, y)
    losses = clf.validation_history_[:, "valid_loss"]
    assert clf.refit_epochs_ == np.argmin(losses) + 1 == len(clf.history)
    assert "valid_loss" not in clf.history[-1]  # nothing held out any more
    seen = sum(batch["train_batch_size"] for batch in clf.history[-1]["batches"])
    assert seen == len(X) + len(X_val)
    # The refit reuses the training part's views: the trunk runs on the validation
    # images alone (all their views), not on every image again.
    n_views = clf.n_views
    assert [r[:2] for r in runs] == [(len(X), n_views), (len(X_val), 1), (len(X_val), n_views)]
    # ... of those images: the refit's view 0 of them is their plain validation view.
    torch.testing.assert_close(runs[2][2][0].float(), runs[1][2][0], atol=2e-3, rtol=2e-3)
    assert "_train_views" not in vars(clf)  # dropped: it would be pickled with the model
    # The held-out probabilities are those of the early-stopped network, before the refit.
    plain = FineTuneClassifier(**{**params, "refit": False}).fit(X, y)
    assert plain.refit_epochs_ is None and plain.validation_history_ is None
    np.testing.assert_allclose(clf.validation_proba_, plain.predict_proba(X_val), atol=1e-6)
    assert not np.allclose(clf.predict_proba(X_val), plain.predict_proba(X_val), atol=1e-3)


@pytest.mark.parametrize("refit", [True, False])
def test_safety_net_replaces_a_network_that_learnt_nothing(synthetic, capsys, refit):
    from skorch import NeuralNetClassifier

    X, y = synthetic
    X_val, y_val = make_ultrasound(n_per_class=4, image_size=48, random_state=5)
    clf = FineTuneClassifier(
        **{**TINY, "refit": refit}, lr=0.0, max_epochs=1, verbose=1, blend_probe=True,
        train_split=predefined_split(Dataset(X_val, y_val)),
    ).fit(X, y)  # fmt: skip
    assert "predicting with the" in capsys.readouterr().out
    losses = clf.blend_losses_
    assert losses[0.0] < losses[1.0]  # the probe does better on the validation images
    weight = clf.network_weight_
    assert weight < 1 and clf.chosen_ == ("probe" if weight == 0 else "blend")
    assert losses[weight] == min(losses.values())
    network = NeuralNetClassifier.predict_proba(clf, X_val)
    expected = weight * network + (1 - weight) * clf.probe_.predict_proba(X_val)
    np.testing.assert_allclose(clf.predict_proba(X_val), expected, atol=1e-6)
    if refit:
        assert clf.refit_epochs_ is None if weight == 0 else clf.refit_epochs_ == 1
    else:
        assert clf.refit_epochs_ is None
    # The probe learns from the images the network learns from: all of them with refit.
    seen = clf.probe_.head_.named_steps["scale"].n_samples_seen_
    assert seen == len(X) + len(X_val) if refit else seen == len(X)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X_val), clf.predict_proba(X_val))


def test_string_labels_and_balanced_class_weights(synthetic):
    X, y = synthetic
    keep = np.r_[0:12, 12:16, 24:36]  # 12 benign, 4 malignant, 12 normal
    clf = FineTuneClassifier(**TINY, class_weight="balanced", max_epochs=1, train_split=None)
    clf.fit(X[keep], y[keep])
    expected = compute_class_weight("balanced", classes=np.unique(y[keep]), y=y[keep])
    np.testing.assert_allclose(clf.criterion_.weight.cpu().numpy(), expected, rtol=1e-6)
    assert list(clf.classes_) == ["benign", "malignant", "normal"]
    assert set(clf.predict(X[:6])) <= set(clf.classes_)
    proba = clf.predict_proba(X[:6])
    assert proba.shape == (6, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def one_epoch(synthetic):
    """A one-epoch model without tta, in eval mode, and 20 preprocessed images."""
    X, y = synthetic
    clf = FineTuneClassifier(**TINY, max_epochs=1, train_split=None, tta=False).fit(X, y)
    clf.module_.eval()
    return clf, torch.stack([clf.preprocessing_(load_image(x)) for x in X[:20]])


def test_tta_averages_image_and_mirror(one_epoch):
    clf, batch = one_epoch
    with torch.no_grad():
        plain, mirrored = clf.infer(batch), clf.infer(batch.flip(3))
        clf.set_params(tta=True)
        try:
            averaged = clf.infer(batch)
        finally:
            clf.set_params(tta=False)  # the model is shared with other tests
    torch.testing.assert_close(averaged, (plain + mirrored) / 2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, mirrored)


def test_inference_in_cpu_chunks_matches_one_batch(one_epoch):
    # On a CPU, prediction runs a few images at a time (faster there); the logits must
    # be those of the whole batch at once.
    clf, batch = one_epoch
    with torch.no_grad():
        whole = clf.module_(batch)
        chunked = clf.infer(batch)
    assert len(batch) > cpu_chunk_size(len(batch), "cpu")  # really chunked
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_same_seed_same_model_and_torch_global_rng_left_alone(synthetic):
    X, y = synthetic
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = FineTuneClassifier(**TINY, max_epochs=2).fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)  # fit drew from its own generator
    torch.rand(7)  # another state of the global generator: the fit must not care
    second = FineTuneClassifier(**TINY, max_epochs=2).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))


@pytest.mark.parametrize(
    "params, y_change, message",
    [
        (
            dict(augment="heavy"),
            None,
            r"'augment' parameter .* among \{'default'\} or None\. Got 'heavy'",
        ),
        (dict(class_weight="auto"), None, r"'class_weight' parameter .* Got 'auto'"),
        (dict(freeze_epochs=-1), None, r"'freeze_epochs' parameter .* range \[0, inf\)\. Got -1"),
        (dict(image_size=8.0), None, r"'image_size' parameter .* Got 8\.0"),
        (dict(checkpoint_dir=3), None, r"'checkpoint_dir' parameter .* Got 3"),
        ({}, "one_class", "single class"),
        ({}, "short", "X has 36 images but y has 35"),
    ],
)
def test_bad_input_raises_clear_errors(synthetic, params, y_change, message):
    X, y = synthetic
    if y_change == "one_class":
        y = np.full(len(y), "benign")
    elif y_change == "short":
        y = y[:-1]
    with pytest.raises(ValueError, match=message):
        FineTuneClassifier(**{**TINY, "max_epochs": 1, "train_split": None, **params}).fit(X, y)


class SplitRecorder(Callback):
    """Record the indices of the training and validation parts."""

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.train, self.valid = dataset_train.indices, dataset_valid.indices


def test_groups_stay_whole_in_the_internal_validation_split(synthetic):
    X, y = synthetic
    groups = np.arange(len(y)) // 3  # 12 groups of 3 images, each group of one class
    codes = np.unique(y, return_inverse=True)[1]
    # The default split, image by image, puts members of a group on both sides ...
    train, valid = ValidSplit(0.15, stratified=True, random_state=0)(np.arange(len(y)), codes)
    assert set(groups[train.indices]) & set(groups[valid.indices])
    # ... while with groups (which must not reach the module's forward) none straddles.
    split = SplitRecorder()
    FineTuneClassifier(**TINY, max_epochs=1, callbacks=[split]).fit(X, y, groups=groups)
    assert len(split.valid) and not set(groups[split.train]) & set(groups[split.valid])
    assert sorted([*split.train, *split.valid]) == list(range(len(y)))
    with pytest.raises(ValueError, match=r"groups has 3 distinct values, too few .* at least 7"):
        FineTuneClassifier(**TINY, max_epochs=1).fit(X, y, groups=y)


def test_skorchs_own_valid_split_with_groups_is_refused_by_name(synthetic):
    X, y = synthetic
    clf = FineTuneClassifier(**TINY, max_epochs=1, train_split=ValidSplit(0.2))
    with pytest.raises(ValueError, match=r"GroupValidSplit\(0\.2, stratified=False"):
        clf.fit(X, y, groups=np.arange(len(y)) // 3)


def test_parameters_are_validated_once_per_fit(synthetic, monkeypatch):
    import skconv.finetune._classifier as module

    calls = []
    original = module.validate_parameter_constraints

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "validate_parameter_constraints", counted)
    X, y = synthetic
    clf = FineTuneClassifier(**TINY, max_epochs=1, train_split=None).fit(X, y)
    assert len(calls) == 1
    clf.partial_fit(X, y)
    assert len(calls) == 2


def test_num_workers_reach_skorchs_loaders_unless_set_there():
    clf = FineTuneClassifier(**TINY, num_workers=2)
    assert clf.get_params_for("iterator_train")["num_workers"] == 2
    assert clf.get_params_for("iterator_valid")["num_workers"] == 2
    clf.set_params(iterator_train__num_workers=0)
    assert clf.get_params_for("iterator_train")["num_workers"] == 0
    assert "num_workers" not in FineTuneClassifier(**TINY).get_params_for("iterator_train")


def test_as_thin_over_skorch_as_skorchs_own_classifier():
    from skorch import NeuralNetClassifier

    # Methods and properties of skorch's classifier that FineTuneClassifier redefines
    # (its __init__, which only stores parameters, aside); skorch's NeuralNetClassifier
    # itself redefines 6 of NeuralNet's by the same count. predict_proba: the blend
    # with the linear probe (blend_probe).
    overridden = sorted(
        name
        for name, value in vars(FineTuneClassifier).items()
        if (callable(value) or isinstance(value, property))
        and name != "__init__"
        and hasattr(NeuralNetClassifier, name)
    )
    assert len(overridden) <= 11, overridden


def test_trunk_views_are_kept_in_the_dtype_asked_for():
    from skconv.finetune._data import trunk_views
    from skconv.images import Preprocessing

    torch.manual_seed(0)
    trunk = torch.nn.Conv2d(3, 4, 3, stride=2).eval()
    prep = Preprocessing(image_size=16)
    X = np.random.default_rng(0).integers(0, 256, (5, 20, 20), dtype=np.uint8)
    full = trunk_views(trunk, X, prep, None, 1, seed=0, dtype=torch.float32)
    half = trunk_views(trunk, X, prep, None, 1, seed=0)
    assert full.dtype == torch.float32 and half.dtype == torch.float16
    with torch.no_grad():
        expected = trunk(torch.stack([prep(load_image(x)) for x in X]))
    torch.testing.assert_close(full[0], expected, atol=1e-6, rtol=1e-6)
    assert not torch.equal(full, half.float())  # float16 rounds; float32 must not


def test_unseen_validation_labels_are_refused(synthetic):
    X, y = synthetic
    split = predefined_split(Dataset(X[:3], np.array(["benign", "cyst", "normal"])))
    with pytest.raises(ValueError, match="cyst"):
        FineTuneClassifier(**TINY, max_epochs=1, train_split=split).fit(X, y)


def test_the_ways_as_one_grid_search_with_groups(synthetic):
    """docs/finetuning.rst: GridSearchCV chooses between fixed features and fine-tuning."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import Pipeline

    from skconv import ConvFeatureTransformer

    X, y = synthetic
    groups = np.arange(len(y)) // 2  # made-up pairs, each of one class
    features = Pipeline(
        [
            (
                "features",
                ConvFeatureTransformer("resnet18", weights=None, image_size=32, engine="torch"),
            ),  # fmt: skip
            ("head", LogisticRegression(max_iter=2000)),
        ]
    )
    finetune = FineTuneClassifier(**TINY, max_epochs=1, train_split=None)  # the search's speed
    assert clone(finetune).get_params()["backbone_lr_scale"] == finetune.backbone_lr_scale
    search = GridSearchCV(
        Pipeline([("model", features)]),
        [{"model": [features]}, {"model": [finetune]}],
        cv=StratifiedGroupKFold(2, shuffle=True, random_state=0),
        error_score="raise",
    ).fit(X, y, groups=groups)
    assert [type(p["model"]) for p in search.cv_results_["params"]] == [
        Pipeline,
        FineTuneClassifier,
    ]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_.named_steps["model"]
    assert best.__class__ is type(search.best_params_["model"])
    assert search.predict(X[:3]).dtype.kind == "U"


FRESH = textwrap.dedent(
    """
    import sys, joblib, numpy as np
    model = joblib.load(sys.argv[1])
    np.save(sys.argv[3], model.predict_proba(np.load(sys.argv[2])))
    """
)


def test_a_pickled_net_stores_the_optimizer_once(synthetic):
    X, y = synthetic
    clf = FineTuneClassifier(**TINY, train_layers="all", max_epochs=1, train_split=None)
    clf.fit(X, y)
    module = len(pickle.dumps(clf.module_))
    # the module, AdamW's two moment buffers per parameter, and little else; the
    # scheduler's reference to the optimizer used to store those buffers a second time
    assert len(pickle.dumps(clf)) < 3.5 * module
    clone = pickle.loads(pickle.dumps(clf))
    clone.partial_fit(X, y)  # the scheduler is rebuilt when training begins
    assert len(clone.history) == 2


@pytest.mark.slow
def test_joblib_round_trip_in_fresh_process(synthetic, tmp_path):
    X, y = synthetic
    clf = FineTuneClassifier(**TINY, max_epochs=1, train_split=None).fit(X, y)
    joblib.dump(clf, tmp_path / "model.joblib")
    np.save(tmp_path / "X.npy", X)
    subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH,
            str(tmp_path / "model.joblib"),
            str(tmp_path / "X.npy"),
            str(tmp_path / "p.npy"),
        ],
        check=True,
        timeout=120,
        # PYTHONPATH kept: the fresh process must import the libraries this one runs on
        # (make test-floor puts the lowest declared versions there).
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", **_pythonpath()},
    )
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), clf.predict_proba(X))


def test_verbose_prints_the_epoch_table(synthetic, capsys):
    X, y = synthetic
    FineTuneClassifier(**TINY, max_epochs=1, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_acc" in out


def _pythonpath() -> dict:
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
