"""Interrupted fine-tuning: FineTuneClassifier(checkpoint_dir=...) saves every epoch and
resumes after a kill to the same model as an uninterrupted run (same seed, same machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from skconv import FineTuneClassifier
from skconv.datasets import make_ultrasound
from skconv.finetune import EpochCheckpoint

# Augmented views cached once and cycled, a head started from the linear probe, dropout,
# shuffling, a head-only epoch, warm-up, cosine decay and early stopping with
# best-weight restoring all run: each has state a resume must restore or redo alike.
# Early stopping ends the run after 3 of the 4 epochs, so "finished" is more than
# "max_epochs done".
PARAMS = dict(
    backbone="mobilenet_v3_small", weights=None, image_size=32, batch_size=8, lr=1.0,
    max_epochs=4, patience=1, random_state=0, head_init="linear_probe",
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return make_ultrasound(n_per_class=8, image_size=40, random_state=0)


def rows(history) -> list:
    """The history without the epochs' durations, which differ from run to run."""
    return [{key: value for key, value in row.items() if key != "dur"} for row in history]


@pytest.fixture(scope="module")
def reference(data):
    """An uninterrupted run without checkpoints."""
    X, y = data
    clf = FineTuneClassifier(**PARAMS).fit(X, y)
    # Stopped early, after epoch 3; then refitted (checkpointed in refit/ of the folder).
    assert 2 < len(clf.validation_history_) < PARAMS["max_epochs"]
    return clf.predict_proba(X), rows(clf.history)


class CtrlC(Callback):
    """Raise KeyboardInterrupt at the first training batch of ``epoch`` (1-based)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            raise KeyboardInterrupt


class TrainingBatches(Callback):
    """Count the training batches run."""

    def initialize(self):
        self.count = 0
        return self

    def on_batch_begin(self, net, training=False, **kwargs):
        self.count += training


# After epoch 1 the schedule's next rate differs from its first one; after epoch 2 early
# stopping has a best score to beat.
@pytest.mark.parametrize("epoch", [2, 3])
def test_ctrl_c_then_rerun_resumes_to_the_same_model(tmp_path, data, reference, epoch):
    X, y = data
    path = tmp_path / EpochCheckpoint.FILENAME
    interrupted = FineTuneClassifier(**PARAMS, checkpoint_dir=tmp_path, callbacks=[CtrlC(epoch)])
    interrupted.fit(X, y)  # skorch swallows Ctrl-C and returns a half-trained model ...
    state = torch.load(path, weights_only=True)
    assert not state["finished"] and json.loads(state["history"])[-1]["epoch"] == epoch - 1
    resumed = FineTuneClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(X, y)  # ... rerun
    np.testing.assert_array_equal(resumed.predict_proba(X), reference[0])
    # The whole history: losses, learning rates, and the best-so-far marks of the scores.
    assert rows(resumed.history) == reference[1]
    assert torch.load(path, weights_only=True)["finished"]
    # A finished run is restored, not trained again, and its file is left as it was.
    saved, batches = path.read_bytes(), TrainingBatches()
    again = FineTuneClassifier(**PARAMS, checkpoint_dir=tmp_path, callbacks=[batches]).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), reference[0])
    assert rows(again.history) == reference[1] and batches.count == 0
    assert path.read_bytes() == saved


def test_checkpoint_of_another_setup_is_refused_and_kept(tmp_path, data):
    X, y = data
    FineTuneClassifier(**{**PARAMS, "max_epochs": 1}, checkpoint_dir=tmp_path).fit(X, y)
    path = tmp_path / EpochCheckpoint.FILENAME
    before = path.read_bytes()
    one_epoch = {**PARAMS, "max_epochs": 1}
    for params, X_, y_, groups, what in [
        ({**one_epoch, "lr": 0.01}, X, y, None, "parameter 'lr'"),
        (one_epoch, X[::-1], y, None, "X"),
        (one_epoch, X, np.where(y == "normal", "other", y), None, "classes"),
        (one_epoch, X, y, np.arange(len(y)) // 2, "validation split"),
    ]:
        with pytest.raises(ValueError, match=rf"another setup \({what} differ\).*left untouched"):
            FineTuneClassifier(**params, checkpoint_dir=tmp_path).fit(X_, y_, groups=groups)
    assert path.read_bytes() == before


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_corrupt_or_armed_checkpoint_is_refused(tmp_path, data):
    X, y = data
    path = tmp_path / EpochCheckpoint.FILENAME
    path.write_bytes(b"half a checkpoint")
    with pytest.raises(ValueError, match=r"Cannot read the checkpoint .*checkpoint\.pt"):
        FineTuneClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(X, y)
    assert path.read_bytes() == b"half a checkpoint"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(ValueError, match="not a checkpoint this version of skconv can resume"):
        FineTuneClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(X, y)
    marker = tmp_path / "code_ran"
    torch.save({"format": "skconv-checkpoint-1", "module": Payload(marker)}, path)
    with pytest.raises(ValueError, match="Weights only load failed"):
        FineTuneClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(X, y)
    assert not marker.exists()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    import torch
    from skorch.callbacks import Callback
    from skconv import FineTuneClassifier
    from skconv.datasets import make_ultrasound

    torch.set_num_threads(1)
    checkpoint_dir, out, stall_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Stall(Callback):
        # Test only: mid-way through epoch `stall_at`, say so and wait to be killed.
        def on_batch_end(self, net, training=False, **kwargs):
            if training and stall_at and len(net.history) == stall_at:
                Path(out + ".stalled").write_text("killable")
                time.sleep(600)

    X, y = make_ultrasound(n_per_class=8, image_size=40, random_state=0)
    clf = FineTuneClassifier(**PARAMS, checkpoint_dir=checkpoint_dir or None,
                             callbacks=[Stall()]).fit(X, y)
    np.savez(out, proba=clf.predict_proba(X), valid_loss=clf.validation_history_[:, "valid_loss"],
             **{k: v.numpy() for k, v in clf.module_.state_dict().items()})
    """
)


def child(tmp_path: Path, checkpoint_dir: str, out: str, stall_at: int = 0):
    script = tmp_path / "train.py"
    if not script.exists():
        script.write_text(f"PARAMS = {PARAMS!r}\n" + CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), checkpoint_dir, str(tmp_path / out), str(stall_at)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_model_as_an_uninterrupted_one(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    plain = child(tmp_path, "", "plain")  # no checkpoint at all, run alongside
    doomed = child(tmp_path, str(checkpoints), "killed", stall_at=3)
    stalled = tmp_path / "killed.stalled"
    deadline = time.monotonic() + 240
    while not stalled.exists():
        assert doomed.poll() is None, doomed.communicate()[0]
        assert time.monotonic() < deadline, "the run never reached epoch 3"
        time.sleep(0.1)
    saved = torch.load(checkpoints / "checkpoint.pt", weights_only=True)
    assert saved["history"].count('"epoch"') == 2 and not saved["finished"]
    doomed.send_signal(signal.SIGKILL)  # mid-epoch 3: no cleanup, no final save
    doomed.wait()
    assert doomed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint.pt"]  # no temp file
    resumed = child(tmp_path, str(checkpoints), "resumed")  # the same script, run again
    for process in (plain, resumed):
        output = process.communicate(timeout=240)[0]
        assert process.returncode == 0, output
    expected, got = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "resumed.npz")
    # Same machine, same threads, RNG state restored: equal to the bit (tolerance 0).
    assert sorted(expected.files) == sorted(got.files)
    for name in expected.files:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
