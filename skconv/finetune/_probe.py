"""The safety net of fine-tuning: a linear probe on the frozen features, blended on validation.

A fine-tuned network can end worse than a logistic regression on the pretrained
features it started from (a small or low-resolution set, a validation part too small
for early stopping to choose well). :class:`FineTuneClassifier` fits that probe too,
and predicts with the mix of the two that scores best on its validation images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLEND_WEIGHTS", "LinearProbe", "choose_network_weight"]

# The network's weights tried in the blend, from the probe alone (0) to the network
# alone (1); steps of 0.1 are as fine as ~100 validation images can tell apart.
BLEND_WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)
# The probe's inverse regularisation strengths, chosen by cross-validated log loss.
PROBE_CS = (0.001, 0.01, 0.1, 1.0)


class LinearProbe:
    """A scaled logistic regression on the pretrained, frozen features of a backbone.

    The feature pipeline of :class:`skconv.ConvFeatureTransformer`, ``StandardScaler``
    and ``LogisticRegression``, with ``C`` chosen by 3-fold cross-validated log loss
    (group-aware when groups are given). Predicts probabilities over all
    ``n_classes`` integer codes, zero for a class absent from its training codes.

    Parameters
    ----------
    features : ConvFeatureTransformer
        The unfitted feature extractor (the fine-tuned backbone with its pretrained
        weights).
    n_classes : int
        Number of classes of the classifier it backs.
    random_state : int or None
        Seeds the folds of the search over ``C``.

    Attributes
    ----------
    head_ : sklearn.pipeline.Pipeline
        The fitted ``StandardScaler`` and ``LogisticRegression``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from skconv.finetune import LinearProbe
    >>> F = np.random.default_rng(0).normal(size=(20, 4))
    >>> codes = np.repeat([0, 2], 10)
    >>> probe = LinearProbe(FunctionTransformer(), n_classes=3, random_state=0)
    >>> _ = probe.search(F + codes[:, None], codes)
    >>> probe.predict_proba(F).shape  # code 1, never seen, gets probability 0
    (20, 3)
    """

    def __init__(self, features, n_classes: int, random_state=None):
        self.features = features
        self.n_classes = n_classes
        self.random_state = random_state

    def search(self, images, codes, groups=None) -> np.ndarray:
        """Fit the features and the head, ``C`` chosen by cross-validation.

        Parameters
        ----------
        images : sequence of images
            What ``features`` transforms.
        codes : ndarray of int
            Class codes, in ``range(n_classes)``.
        groups : array-like or None, default=None
            Group labels: the folds keep each group whole.

        Returns
        -------
        F : ndarray
            The features of ``images``, for a later :meth:`refit`.
        """
        from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold

        F = self.features.fit(images).transform(images)
        smallest = min(np.bincount(codes)[np.unique(codes)])
        folds = min(3, int(smallest), len(np.unique(groups)) if groups is not None else 3)
        if folds < 2:  # too few images of a class to cross-validate: the default C
            self.head_ = _head(1.0).fit(F, codes)
            return F
        cv = (
            StratifiedGroupKFold(folds, shuffle=True, random_state=self.random_state)
            if groups is not None
            else StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        )
        search = GridSearchCV(
            _head(), {"head__C": list(PROBE_CS)}, scoring=self._score, cv=cv, n_jobs=1
        )
        self.head_ = search.fit(F, codes, groups=groups).best_estimator_
        return F

    def _score(self, head, F, codes) -> float:
        # Minus the log loss over all classes: a fold may lack one (neg_log_loss fails).
        proba = np.zeros((len(F), self.n_classes))
        proba[:, head.classes_] = head.predict_proba(F)
        return float(np.mean(np.log(np.clip(proba[np.arange(len(codes)), codes], 1e-15, None))))

    def refit(self, F, codes) -> LinearProbe:
        """Refit the head, with the ``C`` the search chose, on features ``F``.

        Parameters
        ----------
        F : ndarray
            Features, as :meth:`search` returns them.
        codes : ndarray of int
            Class codes.

        Returns
        -------
        self : LinearProbe
        """
        from sklearn.base import clone

        self.head_ = clone(self.head_).fit(F, codes)
        return self

    def predict_proba(self, images=None, *, features=None) -> np.ndarray:
        """Probabilities over the ``n_classes`` codes, of images or of their features.

        Parameters
        ----------
        images : sequence of images, default=None
            Transformed by ``features`` first.
        features : ndarray, default=None
            Features already computed, instead of ``images``.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
        """
        F = self.features.transform(images) if features is None else features
        head = self.head_
        proba = np.zeros((len(F), self.n_classes))
        proba[:, head.classes_] = head.predict_proba(F)
        return proba


def _head(C: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # As skconv's feature recipe (experiment.linear_head), scaled.
    head = LogisticRegression(C=C, max_iter=2000)
    return Pipeline([("scale", StandardScaler()), ("head", head)])


def choose_network_weight(network_proba, probe_proba, codes) -> tuple[float, dict]:
    """The network's weight in the blend with the lowest validation log loss.

    Ties go to the larger weight: the network, unless the probe does better.

    Returns
    -------
    weight : float
        In ``BLEND_WEIGHTS``.
    losses : dict
        Validation log loss of each weight tried.
    """
    codes = np.asarray(codes)
    losses = {}
    for weight in BLEND_WEIGHTS:
        proba = weight * network_proba + (1 - weight) * probe_proba
        picked = np.clip(proba[np.arange(len(codes)), codes], 1e-15, None)
        losses[float(weight)] = float(-np.mean(np.log(picked)))
    best = min(losses.values())
    weight = max(w for w, loss in losses.items() if loss <= best + 1e-12)
    return weight, losses
