"""The contenders of compare_ways: feature heads by cross-validation, fine-tuning, the ensemble."""

from __future__ import annotations

import time

import numpy as np

from ._recipe import feature_transformer, finetune_model, linear_head


def _fit_features(
    backbone, X_fit, y_fit, groups_fit, is_val, X_test, *, image_size, Cs, folds, scoring, verbose
) -> dict:
    from sklearn.model_selection import GridSearchCV, cross_val_predict
    from sklearn.pipeline import Pipeline

    start = time.perf_counter()
    features = feature_transformer(backbone, image_size=image_size, verbose=verbose)
    F_fit = features.fit(X_fit).transform(X_fit)  # once: the search reuses it per fold
    search = GridSearchCV(
        linear_head(),
        {"C": [float(c) for c in Cs]},
        scoring=scoring,
        cv=folds,
        n_jobs=1,
    ).fit(F_fit, y_fit, groups=groups_fit)
    head = search.best_estimator_
    oof = cross_val_predict(
        linear_head(C=head.C),
        F_fit,
        y_fit,
        groups=groups_fit,
        cv=folds,
        method="predict_proba",
    )
    fit_s = time.perf_counter() - start
    model = Pipeline([("features", features), ("head", head)])

    start = time.perf_counter()
    test_proba = head.predict_proba(features.transform(X_test))
    predict_s = time.perf_counter() - start
    return {
        "name": f"features {backbone}",
        "way": "features",
        "backbone": backbone,
        "model": model,
        "chosen": f"C={head.C:g}",
        "cv_score": float(search.best_score_),
        "val_proba": oof[is_val],
        "test_proba": test_proba,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "n_test": len(X_test),
    }


def _fit_finetune(
    params,
    X_train,
    y_train,
    groups_train,
    X_val,
    y_val,
    X_test,
    *,
    image_size,
    random_state,
    verbose,
) -> dict:
    # As skconv fit --mode finetune builds it (the one recipe).
    model = finetune_model(
        (X_val, y_val), image_size=image_size, random_state=random_state, verbose=verbose, **params
    )
    start = time.perf_counter()
    model.fit(X_train, y_train, groups=groups_train)
    fit_s = time.perf_counter() - start
    # Held out: the classifier's refit trains on the validation images too.
    val_proba = getattr(model, "validation_proba_", None)
    if val_proba is None:
        val_proba = model.predict_proba(X_val)
    start = time.perf_counter()
    test_proba = model.predict_proba(X_test)
    predict_s = time.perf_counter() - start
    return {
        "name": f"finetune {model.backbone}",
        "way": "finetune",
        "backbone": model.backbone,
        "model": model,
        "chosen": _epochs(model),
        "cv_score": None,
        "val_proba": val_proba,
        "test_proba": test_proba,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "n_test": len(X_test),
    }


def _epochs(model) -> str:
    """The epoch whose weights were kept (the lowest validation loss), of those run."""
    history = getattr(model, "validation_history_", None) or model.history
    losses = [h.get("valid_loss", np.inf) for h in history]
    if not losses or not np.isfinite(min(losses)):
        return f"{len(losses)} epochs"
    chosen = f"epoch {int(np.argmin(losses)) + 1} of {len(losses)}"
    if getattr(model, "refit_epochs_", None) is not None:
        chosen += f", refitted on all images for {model.refit_epochs_}"
    if getattr(model, "chosen_", "network") != "network":
        weight = model.network_weight_
        chosen += f", predicting with the {model.chosen_} (network weight {weight:g})"
    return chosen


def _ensemble(features: dict, finetune: dict, X_val, y_val) -> dict:
    from sklearn.ensemble import VotingClassifier
    from sklearn.frozen import FrozenEstimator

    members = (features["model"], finetune["model"])
    if not np.array_equal(members[0].classes_, members[1].classes_):  # pragma: no cover
        raise ValueError("The feature and fine-tuned models know different classes.")
    # Frozen: fit only records the classes; the members stay as fitted.
    model = VotingClassifier(
        [("features", FrozenEstimator(members[0])), ("finetune", FrozenEstimator(members[1]))],
        voting="soft",
    ).fit(X_val, y_val)
    return {
        "name": "ensemble",
        "way": "ensemble",
        "backbone": f"{features['backbone']} + {finetune['backbone']}",
        "model": model,
        "chosen": f"mean of {features['backbone']} features and the fine-tuned",
        "cv_score": None,
        "val_proba": (features["val_proba"] + finetune["val_proba"]) / 2,
        "test_proba": (features["test_proba"] + finetune["test_proba"]) / 2,
        "fit_s": features["fit_s"] + finetune["fit_s"],
        "predict_s": features["predict_s"] + finetune["predict_s"],
        "n_test": features["n_test"],
    }
