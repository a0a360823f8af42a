"""skconv on a Dask cluster: blockwise transform, GridSearchCV via joblib, lost workers.

One LocalCluster (2 worker processes, 1 thread each) serves the whole module. Backbone
builds are counted in each worker process by a plugin that wraps
``skconv.zoo.load_backbone`` there (fit and unpickling both go through it).
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("dask_ml")
distributed = pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
import joblib  # noqa: E402
from distributed import Client, LocalCluster, wait  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from skconv import ConvFeatureTransformer  # noqa: E402
from skconv.distributed import TorchThreads, configure_workers, transform_blockwise  # noqa: E402

SMALL = dict(backbone="resnet18", weights=None, image_size=32)
N_IMAGES = 200
BLOCK = 20  # 10 blocks: per-block shipping would build the backbone 5 times per worker

# Backbone builds in this process; on a worker, the ones of that worker.
BUILDS = {"n": 0}


class _CountBuilds(WorkerPlugin):
    """Count ``skconv.zoo.load_backbone`` calls in each worker process."""

    name = "test-count-backbone-builds"

    def setup(self, worker):
        import skconv.zoo as zoo

        original = getattr(zoo.load_backbone, "__wrapped__", zoo.load_backbone)

        @functools.wraps(original)
        def counted(*args, **kwargs):
            BUILDS["n"] += 1
            return original(*args, **kwargs)

        zoo.load_backbone = counted


def _reset_builds():
    BUILDS["n"] = 0


def _builds():
    return BUILDS["n"]


class _Slow(TransformerMixin, BaseEstimator):
    """Identity that sleeps, so that a computation lasts long enough to lose a worker."""

    def __init__(self, seconds: float = 0.25):
        self.seconds = seconds

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        time.sleep(self.seconds)
        return X

    def __sklearn_is_fitted__(self):
        return True  # stateless


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """200 tiny PNGs of two classes (dark and bright noise), paths and labels."""
    root = tmp_path_factory.mktemp("dask_images")
    rng = np.random.default_rng(0)
    labels = np.arange(N_IMAGES) % 2
    paths = []
    for i, label in enumerate(labels):
        pixels = rng.normal(90 + 70 * label, 40, size=(40, 40, 3)).clip(0, 255)
        path = root / f"img_{i:03d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(str(path))
    return np.asarray(paths, dtype=object), labels


@pytest.fixture(scope="module")
def fitted(images):
    paths, _ = images
    transformer = ConvFeatureTransformer(**SMALL).fit(paths)
    return transformer, transformer.transform(paths)


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(_CountBuilds())
        yield client


@pytest.fixture
def builds(client):
    """A function returning the builds per worker since the test started."""
    client.run(_reset_builds)
    return lambda: client.run(_builds)


@pytest.mark.slow
def test_blockwise_transform_matches_in_process(client, builds, images, fitted):
    paths, _ = images
    transformer, reference = fitted
    X = da.from_array(paths, chunks=BLOCK)

    features = transform_blockwise(transformer, X)
    assert features.shape == (N_IMAGES, transformer.n_features_out_)
    assert features.numblocks == (N_IMAGES // BLOCK, 1)
    with distributed.get_task_stream(client) as stream:
        result = features.compute()

    assert result.dtype == np.float32
    np.testing.assert_allclose(result, reference, rtol=0, atol=1e-5)
    # Scattered once: each worker built the backbone at most once, however many blocks it ran.
    blocks = Counter(t["worker"] for t in stream.data if "skconv-transform" in str(t["key"]))
    assert sum(blocks.values()) == N_IMAGES // BLOCK
    assert max(blocks.values()) > 1
    assert max(builds().values()) <= 1, (builds(), blocks)


def test_bag_series_frame_and_list_build_once_across_calls(client, builds, images, fitted):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    paths, _ = images
    transformer, reference = fitted
    frame = dd.from_pandas(pd.DataFrame({"path": paths.astype(str)}), npartitions=3)
    inputs = {
        "bag": db.from_sequence(paths.tolist(), npartitions=4),
        "series": frame["path"],
        "frame": frame,
        "list": paths.tolist(),
    }
    for kind, X in inputs.items():
        features = transform_blockwise(transformer, X, chunk_size=64)
        np.testing.assert_allclose(features.compute(), reference, atol=1e-5, err_msg=kind)
    # Four calls, four scatters of the same bytes: the workers' cache built it once at most.
    assert max(builds().values()) <= 1, builds()


def test_predict_proba_of_a_pipeline(client, images, fitted):
    paths, labels = images
    transformer, reference = fitted
    clf = Pipeline([("features", transformer), ("head", LogisticRegression(max_iter=500))])
    clf.named_steps["head"].fit(reference, labels)  # the features are already fitted

    proba = transform_blockwise(clf, da.from_array(paths, chunks=50), method="predict_proba")
    pred = transform_blockwise(clf, da.from_array(paths, chunks=50), method="predict")

    assert proba.shape == (N_IMAGES, 2)
    head = clf.named_steps["head"]
    np.testing.assert_allclose(proba.compute(), head.predict_proba(reference), atol=1e-6)
    np.testing.assert_array_equal(pred.compute(), head.predict(reference))


def test_input_errors(client, images, fitted):
    paths, _ = images
    transformer, _ = fitted
    with pytest.raises(ValueError, match="'method' parameter of transform_blockwise"):
        transform_blockwise(transformer, paths, method="fit")
    with pytest.raises(ValueError, match="1-D Dask array"):
        transform_blockwise(transformer, da.from_array(paths.reshape(20, 10), chunks=5))
    with pytest.raises(ValueError, match="single path|sequence of image paths"):
        transform_blockwise(transformer, "one.png")
    with pytest.raises(ValueError, match="pass n_features"):
        transform_blockwise(Pipeline([("f", transformer), ("s", _Slow())]), paths)
    with pytest.raises(NotFittedError):
        transform_blockwise(ConvFeatureTransformer(**SMALL), paths)
    with pytest.raises(ValueError, match=r"'threads' parameter of TorchThreads.*\[1, inf\)"):
        TorchThreads(0)


def test_configure_workers_sets_torch_threads_in_task_threads(client):
    assert set(configure_workers(client, threads=2).values()) == {2}
    # Back to one: task threads that already ran torch are fixed too, not only new ones.
    assert set(configure_workers(client, threads=1).values()) == {1}


@pytest.mark.slow
def test_grid_search_on_cluster_matches_sequential(client, builds, images):
    paths, labels = images
    X, y = paths[:24], labels[:24]
    pipe = Pipeline(
        [("features", ConvFeatureTransformer(**SMALL)), ("head", LogisticRegression())]
    )
    grid = {"features__backbone": ["squeezenet1_1", "resnet18"], "head__C": [0.01, 1.0]}
    cv = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)

    local = GridSearchCV(pipe, grid, cv=cv, n_jobs=1).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(pipe, grid, cv=cv).fit(X, y)

    assert remote.best_params_ == local.best_params_
    for key in ["mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"]:
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    # Every fit ran on a worker (4 candidates x 2 folds); the refit ran here.
    assert sum(builds().values()) == 8


@pytest.mark.slow
def test_killed_worker_loses_no_block(client, images, fitted):
    # Last in the module: it restarts a worker of the shared cluster.
    paths, _ = images
    transformer, reference = fitted
    slow = Pipeline([("features", transformer), ("slow", _Slow(0.25))])
    features = transform_blockwise(slow, da.from_array(paths, chunks=10), n_features=512)
    pids_before = client.run(os.getpid)

    persisted = client.persist(features)
    blocks = distributed.futures_of(persisted)
    deadline = time.monotonic() + 60
    while sum(f.done() for f in blocks) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(f.done() for f in blocks) < len(blocks), "finished before the kill"
    victim = sorted(pids_before)[0]
    os.kill(pids_before[victim], signal.SIGKILL)

    wait(blocks, timeout=120)
    np.testing.assert_allclose(persisted.compute(), reference, atol=1e-5)
    # The nanny brought a fresh process back.
    client.wait_for_workers(2, timeout=60)
    assert pids_before[victim] not in client.run(os.getpid).values()
