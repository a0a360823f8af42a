"""ONNX Runtime runs side by side: chunks, ordered results, errors, threads."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import numpy as np
import pytest

from skconv.engine._ort import ONNX_CHUNK, ParallelSession, ordered_map


@pytest.mark.parametrize(
    "n, n_threads, most",
    [(0, 2, 0), (1, 2, 0), (19, 3, 0), (33, 2, 0), (11, 2, 4), (5000, 2, 32), (7, 1, 0)],
)
def test_chunks_cover_every_image_once_evenly_and_keep_every_thread_busy(n, n_threads, most):
    chunks = ParallelSession.chunks_of(n, n_threads, most)
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(n))
    sizes = [c.stop - c.start for c in chunks]
    assert all(0 < size <= min(ONNX_CHUNK, most or ONNX_CHUNK) for size in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1
    if n >= n_threads:
        assert len(chunks) % n_threads == 0


def test_ordered_map_keeps_order_and_stops_submitting_after_an_error():
    started = []

    def work(i):
        started.append(i)
        if i == 2:
            raise ValueError("image 2 is broken")
        return i * 10

    with ThreadPoolExecutor(2) as pool:
        assert list(ordered_map(pool, lambda i: i * 10, range(7), window=3)) == list(
            range(0, 70, 10)
        )
        with pytest.raises(ValueError, match="image 2"):
            list(ordered_map(pool, work, range(50), window=3))
    assert max(started) < 2 + 3  # the window ahead of the failure, not all 50


@pytest.fixture(scope="module")
def relu_model(tmp_path_factory):
    """The path of a one-node ONNX model: y = max(x, 0), x of shape (n, 3)."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    path = tmp_path_factory.mktemp("onnx") / "relu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_session_runs_side_by_side_and_remakes_its_threads_in_a_forked_child(
    relu_model, monkeypatch
):
    session = ParallelSession(relu_model, n_threads=2)
    assert session.session.get_session_options().intra_op_num_threads == 1
    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(20, 3)
    seen = set()

    def work(rows):
        seen.add(threading.get_ident())
        return session.session.run(["y"], {"x": x[rows]})[0]

    parts = [y for _, y in session.map_chunks(work, len(x))]
    np.testing.assert_array_equal(np.concatenate(parts), np.maximum(x, 0))
    assert threading.get_ident() not in seen
    pool = session._threads()
    assert session._threads() is pool
    # a forked child inherits the pool but none of its threads: it gets a pool of its own
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert session._threads() is not pool
    assert len(list(session.map_chunks(work, len(x)))) == 4


def test_a_caller_that_stops_early_leaves_no_work_running_once_it_has_closed(relu_model):
    import time

    started, finished = [], []

    def work(i):
        started.append(i)
        time.sleep(0.05)
        finished.append(i)
        return i

    with ThreadPoolExecutor(2) as pool:
        results = ordered_map(pool, work, range(40), window=4)
        with pytest.raises(RuntimeError, match="caller"):
            with closing(results):
                for _ in results:
                    raise RuntimeError("the caller's own error")
        assert sorted(finished) == sorted(started) and len(started) <= 4 + 1
    # the same through a session's map_chunks, which must close its ordered_map
    started.clear(), finished.clear()
    session = ParallelSession(relu_model, n_threads=2)
    chunks = session.map_chunks(lambda rows: work(rows.start), 200, window=4)
    with pytest.raises(RuntimeError, match="caller"):
        with closing(chunks):
            for _ in chunks:
                raise RuntimeError("the caller's own error")
    assert sorted(finished) == sorted(started) and len(started) <= 4 + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_on_threads_of_its_own(relu_model):
    session = ParallelSession(relu_model, n_threads=2)
    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(20, 3)

    def work(rows):
        return session.session.run(["y"], {"x": x[rows]})[0]

    list(session.map_chunks(work, len(x)))  # the parent's pool exists before the fork
    pid = os.fork()
    if pid == 0:  # the child: exit 0 if it computes the same, be killed if it hangs
        signal.alarm(30)
        parts = [y for _, y in session.map_chunks(work, len(x))]
        os._exit(0 if np.array_equal(np.concatenate(parts), np.maximum(x, 0)) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
