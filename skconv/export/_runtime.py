"""OnnxClassifier: the torch-free runtime of an exported file (onnxruntime, NumPy, Pillow)."""

from __future__ import annotations

import json
import os
from contextlib import closing
from typing import Any

import numpy as np

from ..engine import ParallelSession, available_cores
from ..images import Preprocessing, check_images, crop_batch


class OnnxClassifier:
    """An image classifier from a file written by :func:`export_onnx`.

    It needs onnxruntime, NumPy and Pillow only: the images are decoded, resized and
    cropped as the exported model's metadata says (:func:`skconv.images.crop_batch`),
    and the graph does the rest. A few images at a time are decoded and run on one
    thread, ``n_threads`` of them at once (:class:`skconv.engine.ParallelSession`).

    Parameters
    ----------
    path : str or path-like
        The ``.onnx`` file.
    n_threads : int or None, default=None
        Threads, each decoding and running its own images; None: one per core this
        process may use.
    batch_size : int, default=32
        The most images decoded and run in one step of a thread (it takes at most 8).

    Attributes
    ----------
    classes_ : ndarray
        The class labels, in the order of ``predict_proba``'s columns.
    preprocessing_ : Preprocessing
        The resize and crop applied before the graph.
    metadata_ : dict
        The file's metadata.

    Examples
    --------
    See :func:`export_onnx`.
    """

    def __init__(self, path: str | os.PathLike, *, n_threads: int | None = None, batch_size=32):
        self.path = os.fspath(path)
        try:
            self._runs = ParallelSession(self.path, n_threads or available_cores())
        except Exception as exc:
            raise ValueError(f"Cannot load the ONNX model {self.path!r}: {exc}") from exc
        self.session = self._runs.session
        self.metadata_ = dict(self.session.get_modelmeta().custom_metadata_map)
        if "skconv_preprocessing" not in self.metadata_:
            raise ValueError(
                f"{self.path!r} is an ONNX model, but not one written by skconv.export_onnx "
                "(no skconv_preprocessing metadata)."
            )
        p = json.loads(self.metadata_["skconv_preprocessing"])
        self.preprocessing_ = Preprocessing(
            image_size=p["image_size"],
            crop_pct=p["crop_pct"],
            mean=tuple(p["mean"]),
            std=tuple(p["std"]),
            interpolation=p["interpolation"],
            crop_mode=p["crop_mode"],
            resize=p["resize"],
        )
        self.classes_ = np.asarray(json.loads(self.metadata_["skconv_classes"]))
        outputs = [o.name for o in self.session.get_outputs()]
        self.scores_name_ = "probabilities" if "probabilities" in outputs else "scores"
        self.batch_size = batch_size

    def _run(self, X) -> tuple[np.ndarray, np.ndarray]:
        images = check_images(X)

        def outputs_of(rows: slice) -> list:
            pixels = crop_batch(images, range(rows.start, rows.stop), self.preprocessing_)
            return self.session.run(["label", self.scores_name_], {"image": pixels})

        labels, scores = [], []
        runs = self._runs.map_chunks(
            outputs_of, len(images), most=self.batch_size, window=2 * self._runs.n_threads
        )
        with closing(runs):
            for _, (label, score) in runs:
                labels.append(np.asarray(label))
                scores.append(score)
        return np.concatenate(labels), np.concatenate(scores)

    def predict(self, X) -> np.ndarray:
        """The class of each image.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images in any form :func:`skconv.images.check_images` accepts.

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        labels, _ = self._run(X)
        return labels.astype(self.classes_.dtype)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of each image, columns in the order of ``classes_``.

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images in any form :func:`skconv.images.check_images` accepts.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)

        Raises
        ------
        AttributeError
            If the exported head has no probabilities (e.g. LinearSVC): use
            :meth:`decision_function`.
        """
        if self.scores_name_ != "probabilities":
            raise AttributeError(
                "This exported model has no probabilities (its head has no predict_proba); "
                "use decision_function."
            )
        return self._run(X)[1]

    def decision_function(self, X) -> np.ndarray:
        """The head's scores of each image (probabilities when the head has them).

        Parameters
        ----------
        X : sequence of paths or PIL images, or ndarray
            Images in any form :func:`skconv.images.check_images` accepts.

        Returns
        -------
        scores : ndarray of shape (n_images, n_classes) or (n_images,)
            One column per class, or one value per image for a binary head's
            decision function, as scikit-learn gives it.
        """
        scores = self._run(X)[1]
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - attribute errors only
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
