"""compare_ways: the three ways of transfer learning side by side, on one split: a leaderboard."""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from threadpoolctl import threadpool_limits

from ._contenders import _ensemble, _fit_features, _fit_finetune
from ._leaderboard import (
    SCORINGS,
    _leaderboard_markdown,
    _leaderboard_text,
    _metrics,
    _row,
    _score,
)
from ._records import describe_model

#: The inverse regularisation strengths the feature heads are chosen from.
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def offline_backbones() -> list[str]:
    """The packaged backbones whose weights are installed: they load with no network.

    Returns
    -------
    names : list of str
        Names from :func:`skconv.zoo.list_backbones` with source ``"packaged"`` and
        ``available_offline``, in the order it lists them.

    Examples
    --------
    >>> from skconv.compare import offline_backbones
    >>> "efficientnet_lite0" in offline_backbones()
    True
    """
    from ..zoo import list_backbones

    return [b.name for b in list_backbones() if b.source == "packaged" and b.available_offline]


@validate_params(
    {
        "X_train": ["array-like", list],
        "y_train": ["array-like"],
        "X_val": ["array-like", list],
        "y_val": ["array-like"],
        "X_test": ["array-like", list],
        "y_test": ["array-like"],
        "groups_train": ["array-like", None],
        "groups_val": ["array-like", None],
        "backbones": [list, tuple, None],
        "finetune_params": [dict, None],
        "image_size": [Interval(Integral, 16, None, closed="left"), None],
        "Cs": ["array-like"],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "scoring": [StrOptions(set(SCORINGS))],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "verbose": [Interval(Real, 0, None, closed="left"), "boolean"],
    },
    prefer_skip_nested_validation=True,
)
def compare_ways(
    X_train,
    y_train,
    X_val,
    y_val,
    X_test,
    y_test,
    *,
    groups_train=None,
    groups_val=None,
    backbones=None,
    finetune_params=None,
    image_size=None,
    Cs=DEFAULT_CS,
    cv=5,
    scoring="balanced_accuracy",
    random_state=0,
    verbose=0,
) -> Bunch:
    """Fit fixed features, fine-tuning and their ensemble on one split; rank them.

    The contenders, in this order:

    1. For each backbone, the first way: a :class:`~skconv.ConvFeatureTransformer`
       before a ``LogisticRegression(max_iter=2000)`` head fitted on train and
       validation together. The features of those images are computed once per
       backbone; the head's ``C`` is chosen among ``Cs`` by a cross-validated grid
       search on the cached features (:class:`~sklearn.model_selection.StratifiedGroupKFold`
       on the groups when they are given, else
       :class:`~sklearn.model_selection.StratifiedKFold`), so that no ConvNet runs
       once per fold, and the head is refitted on all of them.
    2. The second way: a :class:`~skconv.FineTuneClassifier` trained on the train
       part that stops early on the validation part (as ``skconv fit --mode
       finetune`` trains it), with ``finetune_params`` on top.
    3. The ensemble of the feature model with the best validation score and the
       fine-tuned model: the mean of their predicted probabilities (a soft-voting
       :class:`~sklearn.ensemble.VotingClassifier` of the two fitted models).

    Every contender gets a score on the same validation images, and the best score
    chooses the model: for a feature model, the out-of-fold predictions of the
    cross-validation above on the validation images (heads that never saw them); for
    the fine-tuned model, its own predictions (it chose its epoch on these images, so
    its score is optimistic); for the ensemble, the mean of those two. Ties go to
    the earlier contender. The test part is only scored, never used to choose.

    Parameters
    ----------
    X_train, X_val, X_test : array-like of shape (n_images,)
        The images of each part, in any form :func:`skconv.images.check_images`
        takes (normally file paths).
    y_train, y_val, y_test : array-like of shape (n_images,)
        Their classes; validation and test classes must occur in ``y_train``.
    groups_train, groups_val : array-like of shape (n_images,) or None, default=None
        Group labels of the train and validation images, such as near-duplicate
        groups from :func:`skconv.model_selection.find_near_duplicates` computed on
        all images at once: the cross-validation keeps each group in one fold, and
        the fine-tuned model gets them in ``fit``. Both or neither.
    backbones : list of str or None, default=None
        Backbones of the feature models, names from
        :func:`skconv.zoo.list_backbones`; None takes :func:`offline_backbones`.
        An empty list leaves out the feature models and the ensemble.
    finetune_params : dict or None, default=None
        :class:`~skconv.FineTuneClassifier` parameters over the ones given here
        (``image_size``, ``random_state``, the validation part as ``train_split``,
        a progress bar when ``verbose``); for instance ``{"backbone":
        "efficientnet_lite2", "max_epochs": 10}``. ``{"backbone": None}`` leaves out
        the fine-tuned model and the ensemble.
    image_size : int or None, default=None
        Input side for every network; None uses each backbone's own.
    Cs : array-like of float, default=(0.001, 0.01, 0.1, 1.0, 10.0)
        The ``C`` values of the heads' grid search.
    cv : int, default=5
        Folds of the heads' cross-validation, at most the number of images of the
        smallest class (and of groups) in train and validation together.
    scoring : {"balanced_accuracy", "accuracy", "roc_auc_ovr"}, default="balanced_accuracy"
        The score of the grid search and of the choice: balanced accuracy, accuracy,
        or the macro one-vs-rest ROC AUC.
    random_state : int or None, default=0
        Seed of the folds and of the fine-tuning.
    verbose : int, default=0
        0 prints nothing; 1 prints one line when each contender starts and ends,
        the feature extractors' and the fine-tuning's progress bars, and the
        leaderboard.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        With the keys

        leaderboard : list of dict
            One row per contender, best validation score first: ``model`` (its
            name), ``way`` (``"features"``, ``"finetune"`` or ``"ensemble"``),
            ``backbone``, ``chosen`` (the head's ``C`` or the epochs run),
            ``val_score`` (the choosing score) and ``cv_score`` (the grid search's
            best mean score; None but for feature models), then on the test part
            ``accuracy``, ``balanced_accuracy``, ``roc_auc_ovr_macro`` and
            ``recall_<class>`` for each class, then ``fit_s`` (seconds to fit,
            feature extraction and search included), ``predict_images_per_s`` (the
            test part through the fitted model) and ``model_bytes`` (of the model
            pickled by joblib).
        best : str
            The name of the chosen contender (the first row).
        models : dict of str to fitted classifier
            Every contender's model by name: a :class:`~sklearn.pipeline.Pipeline`,
            a :class:`~skconv.FineTuneClassifier` or a
            :class:`~sklearn.ensemble.VotingClassifier`.
        metrics : dict of str to dict
            For each name, ``"val"`` (the predictions that scored it, as above)
            and ``"test"`` metrics, as :func:`skconv.report.classification_metrics`
            returns them.
        predictions : dict of str to dict
            For each name, ``"val"`` and ``"test"``: the predicted classes and the
            class probabilities those metrics were computed from.
        selection : str
            How the model was chosen, in one sentence for reports.

    Raises
    ------
    ValueError
        If a parameter is invalid, an unknown backbone is named, only one of the
        groups is given, no contender is left, or the folds cannot be made.

    See Also
    --------
    skconv.experiment.fit_folder : ``compare=True`` runs this on a folder.

    Examples
    --------
    >>> from skconv.compare import compare_ways
    >>> from skconv.datasets import make_ultrasound
    >>> from skconv.model_selection import train_val_test_split
    >>> X, y = make_ultrasound(n_per_class=8, image_size=48, random_state=0)
    >>> parts = train_val_test_split(X, y, stratify=y, random_state=0)
    >>> X_tr, X_va, X_te, y_tr, y_va, y_te = parts
    >>> result = compare_ways(
    ...     X_tr, y_tr, X_va, y_va, X_te, y_te, backbones=["squeezenet1_1_caffe"],
    ...     finetune_params={"backbone": "squeezenet1_1_caffe", "max_epochs": 1},
    ...     image_size=32, cv=2)
    >>> [row["model"] for row in result.leaderboard]  # doctest: +SKIP
    ['features squeezenet1_1_caffe', 'ensemble', 'finetune squeezenet1_1_caffe']
    >>> sorted(row["way"] for row in result.leaderboard)
    ['ensemble', 'features', 'finetune']
    >>> result.models[result.best].predict(X_te).shape
    (6,)
    """
    X_train, X_val, X_test = (_as_array(X) for X in (X_train, X_val, X_test))
    y_train, y_val, y_test = (np.asarray(y) for y in (y_train, y_val, y_test))
    if (groups_train is None) != (groups_val is None):
        raise ValueError("groups_train and groups_val go together: give both or neither.")
    from ..zoo import check_backbone_name

    backbones = offline_backbones() if backbones is None else list(backbones)
    backbones = [check_backbone_name(b) for b in backbones]
    ft_params = {"backbone": "efficientnet_lite0", **(finetune_params or {})}
    if ft_params["backbone"] is not None:
        ft_params["backbone"] = check_backbone_name(ft_params["backbone"])
    if not backbones and ft_params["backbone"] is None:
        raise ValueError("Nothing to compare: no backbones and no fine-tuning backbone.")
    classes = np.unique(y_train)
    unseen = np.setdiff1d(np.concatenate([y_val, y_test]), classes)
    if len(unseen):
        raise ValueError(f"y_val or y_test hold classes that y_train lacks: {unseen.tolist()}.")

    # The heads are small: one BLAS thread fits them fastest, and on a shared CPU more
    # threads can thrash (a LogisticRegression on BUSI's Lite0 features took 19 s with
    # 2 OpenBLAS threads on a busy 2-core machine, 0.6 s with one).
    with threadpool_limits(limits=1, user_api="blas"):
        entries = _contenders(
            backbones,
            ft_params,
            X_train,
            y_train,
            X_val,
            y_val,
            X_test,
            groups_train,
            groups_val,
            image_size=image_size,
            Cs=Cs,
            cv=cv,
            scoring=scoring,
            random_state=random_state,
            verbose=verbose,
        )

    metrics, predictions, rows = {}, {}, []
    for e in entries:
        val_pred = classes[np.argmax(e["val_proba"], axis=1)]
        test_pred = classes[np.argmax(e["test_proba"], axis=1)]
        predictions[e["name"]] = {
            "val": (val_pred, e["val_proba"]),
            "test": (test_pred, e["test_proba"]),
        }
        metrics[e["name"]] = {
            "val": _metrics(y_val, val_pred, e["val_proba"], classes),
            "test": _metrics(y_test, test_pred, e["test_proba"], classes),
        }
        rows.append(_row(e, metrics[e["name"]], scoring, classes))
    # A stable sort: equal scores keep the contenders' order.
    rows.sort(key=lambda r: np.inf if r["val_score"] is None else -r["val_score"])
    selection = (
        f"the best {_SCORING_NAMES[scoring]} on the validation part ({len(X_val)} images): "
        "out-of-fold predictions of the heads' cross-validation on train and validation "
        "for feature models, the fine-tuned model's own predictions (it stopped early on "
        "these images, so its score is optimistic), and their mean for the ensemble; "
        "not the test score"
    )
    if verbose:
        print("\nLeaderboard (test part; chosen by validation score):")
        print("\n".join(_leaderboard_text(rows)), flush=True)
    return Bunch(
        leaderboard=rows,
        best=rows[0]["model"],
        models={e["name"]: e["model"] for e in entries},
        metrics=metrics,
        predictions=predictions,
        selection=selection,
    )


_SCORING_NAMES = {
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "roc_auc_ovr": "macro ROC AUC (one-vs-rest)",
}


def _contenders(
    backbones,
    ft_params,
    X_train,
    y_train,
    X_val,
    y_val,
    X_test,
    groups_train,
    groups_val,
    *,
    image_size,
    Cs,
    cv,
    scoring,
    random_state,
    verbose,
) -> list[dict]:
    """Fit every contender in turn: one dict each (model, probabilities, timings)."""
    # Feature heads: fitted and cross-validated on train and validation together.
    X_fit = np.concatenate([X_train, X_val])
    y_fit = np.concatenate([y_train, y_val])
    groups_fit = None if groups_train is None else np.concatenate([groups_train, groups_val])
    is_val = np.r_[np.zeros(len(X_train), bool), np.ones(len(X_val), bool)]
    folds = _folds(y_fit, groups_fit, cv, random_state) if backbones else None

    n_contenders = len(backbones) + (ft_params["backbone"] is not None) * (1 + bool(backbones))
    say = _Say(verbose, n_contenders)
    entries = []
    for backbone in backbones:
        say.start(
            f"features {backbone}",
            f"{len(X_fit)} images; C by {folds.get_n_splits()}-fold "
            f"{type(folds).__name__} on the cached features",
        )
        entry = _fit_features(
            backbone,
            X_fit,
            y_fit,
            groups_fit,
            is_val,
            X_test,
            image_size=image_size,
            Cs=Cs,
            folds=folds,
            scoring=scoring,
            verbose=verbose,
        )
        entries.append(entry)
        say.end(entry, scoring, y_val)

    if ft_params["backbone"] is not None:
        say.start(
            f"finetune {ft_params['backbone']}",
            f"{len(X_train)} images, early stopping on {len(X_val)}",
        )
        entry = _fit_finetune(
            ft_params,
            X_train,
            y_train,
            groups_train,
            X_val,
            y_val,
            X_test,
            image_size=image_size,
            random_state=random_state,
            verbose=verbose,
        )
        entries.append(entry)
        say.end(entry, scoring, y_val)
        if backbones:
            best_features = max(
                (e for e in entries if e["way"] == "features"),
                key=lambda e: _score(scoring, y_val, e),
            )  # max keeps the first of equals
            say.start("ensemble", f"{best_features['name']} and {entry['name']}")
            ensemble = _ensemble(best_features, entry, X_val, y_val)
            entries.append(ensemble)
            say.end(ensemble, scoring, y_val)
    return entries


def _as_array(X):
    """A 1-D object array of paths or images, or the array as given."""
    if isinstance(X, np.ndarray):
        return X
    if X and isinstance(X[0], (str, os.PathLike)):
        return np.asarray([os.fspath(x) for x in X])
    array = np.empty(len(X), dtype=object)
    array[:] = list(X)
    return array


def _folds(y, groups, cv, random_state):
    """The splitter of the heads' cross-validation, with as many folds as the data allow."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n_splits = min(cv, int(np.unique(y, return_counts=True)[1].min()))
    if groups is not None:
        n_splits = min(n_splits, len(np.unique(groups)))
    if n_splits < 2:
        raise ValueError(
            "The heads' cross-validation needs two folds, but a class has a single image "
            "(or a single group) in train and validation together."
        )
    if groups is None:
        return StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
    return StratifiedGroupKFold(n_splits, shuffle=True, random_state=random_state)


class _Say:
    """One line when a contender starts and one when it ends, when verbose."""

    def __init__(self, verbose, total):
        self.verbose, self.total, self.k = verbose, total, 0

    def start(self, name, what):
        self.k += 1
        if self.verbose:
            print(f"\n[{self.k}/{self.total}] {name}: {what}", flush=True)

    def end(self, entry, scoring, y_val):
        if self.verbose:
            fitted = "members fitted" if entry["way"] == "ensemble" else "fitted"
            print(
                f"[{self.k}/{self.total}] {entry['name']}: {fitted} in {entry['fit_s']:.1f} s "
                f"({entry['chosen']}); validation {_SCORING_NAMES[scoring]} "
                f"{_score(scoring, y_val, entry):.3f}",
                flush=True,
            )


def choose(parts, *, backbone, image_size, epochs, random_state, verbose) -> Bunch:
    """:func:`compare_ways` on a folder's parts: the chosen model, with what the report needs.

    The work of :func:`skconv.experiment.fit_folder` with ``compare=True``, once the
    parts are loaded: ``backbone`` and ``epochs`` are the fine-tuned model's, the
    feature models take every offline backbone. ``fit_folder`` then evaluates the
    chosen model and writes it as it writes any other, with the leaderboard added.
    """
    finetune = {"backbone": backbone}
    if epochs is not None:
        finetune["max_epochs"] = epochs
    groups = getattr(parts, "groups", None) or {}
    comparison = compare_ways(
        parts.paths["train"],
        parts.target["train"],
        parts.paths["val"],
        parts.target["val"],
        parts.paths["test"],
        parts.target["test"],
        groups_train=groups.get("train"),
        groups_val=groups.get("val"),
        finetune_params=finetune,
        image_size=image_size,
        random_state=random_state,
        verbose=verbose,
    )
    best = comparison.leaderboard[0]
    model = comparison.models[best["model"]]
    return Bunch(
        model=model,
        mode=best["way"],
        title=f"skconv comparison: {best['model']}",
        name=f"{best['model']} ({best['chosen']}), the best of {len(comparison.leaderboard)}",
        description=_describe(model, best),
        fit_s=best["fit_s"],
        # What the leaderboard scored: on val, out-of-fold for feature heads (their
        # final fit saw val), so fit_folder reports these instead of predicting again.
        predictions=comparison.predictions[best["model"]],
        finetuned=_finetuned(model) if best["way"] in ("finetune", "ensemble") else None,
        leaderboard=comparison.leaderboard,
        selection=comparison.selection,
        markdown=_leaderboard_markdown(comparison.leaderboard, comparison.selection),
    )


def _finetuned(model):
    """The fine-tuned model itself, or the one inside an ensemble."""
    if hasattr(model, "named_estimators_"):
        return model.named_estimators_["finetune"].estimator
    return model


def _describe(model, row: dict) -> dict:
    if row["way"] in ("features", "finetune"):
        return describe_model(model, row["way"])
    members = model.named_estimators_
    return {
        "mode": "ensemble",
        "combination": "mean of predicted probabilities",
        "members": [
            describe_model(members["features"].estimator, "features"),
            describe_model(members["finetune"].estimator, "finetune"),
        ],
    }
