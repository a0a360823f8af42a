"""GroupValidSplit: skorch's internal validation split, keeping groups of images whole."""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from skorch.dataset import ValidSplit

__all__ = ["GroupValidSplit", "check_group_split"]


class GroupValidSplit(ValidSplit):
    """skorch's :class:`~skorch.dataset.ValidSplit` that keeps each group in one part.

    Without ``groups`` it is skorch's ``ValidSplit``, draw for draw. With ``groups``
    (passed to ``fit(X, y, groups=groups)``, which skorch hands to its ``train_split``)
    and a number as ``cv``, the validation part is the first fold of
    :class:`~sklearn.model_selection.StratifiedGroupKFold` with ``round(1 / cv)``
    folds (``cv`` folds for an int), stratified unless ``stratified=False`` or no
    class has a member for every fold. Near-duplicate images (the same scan
    re-cropped, as in many medical sets) then never sit on both sides, so early
    stopping does not watch copies of training images. With a cross-validation
    object as ``cv``, ``groups`` go to its ``split`` as in skorch.

    Parameters
    ----------
    cv : int, float or cross-validation generator, default=5
        As in :class:`skorch.dataset.ValidSplit`: a fraction for the validation part,
        or a number of folds.
    stratified : bool, default=False
        Keep class proportions in both parts.
    random_state : int or None, default=None
        Seeds the shuffling of a fractional split.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.finetune import GroupValidSplit
    >>> y = np.array([0, 1] * 10)
    >>> groups = np.arange(20) // 2            # ten groups of two images
    >>> train, valid = GroupValidSplit(0.2, random_state=0)(np.arange(20), y, groups)
    >>> set(groups[train.indices]) & set(groups[valid.indices])
    set()
    """

    def __call__(self, dataset, y=None, groups=None):
        if groups is None or not isinstance(self.cv, Real):
            return super().__call__(dataset, y, groups=groups)
        groups = np.asarray(groups)
        n_images = len(dataset)
        if groups.shape != (n_images,):
            raise ValueError(
                f"groups must be 1-D with one entry per image ({n_images}), "
                f"got shape {groups.shape}."
            )
        fraction = not float(self.cv).is_integer()
        n_folds = max(2, round(1 / self.cv)) if fraction else int(self.cv)
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise ValueError(
                f"groups has {n_groups} distinct values, too few to keep each group whole "
                f"in the validation part of train_split={type(self).__name__}({self.cv!r}), "
                f"which needs at least {n_folds}. Pass a validation part of your own, "
                "train_split=predefined_split(Dataset(X_val, y_val)), for example from "
                "skconv.model_selection.train_val_test_split(..., groups=groups)."
            )
        y = np.zeros(n_images) if y is None else np.asarray(y)
        if not self.stratified or np.unique(y, return_counts=True)[1].max() < n_folds:
            y = np.zeros(n_images)  # one class: folds of whole groups, balanced in size
        folds = StratifiedGroupKFold(
            n_folds, shuffle=fraction, random_state=self.random_state if fraction else None
        )
        train, valid = next(folds.split(np.zeros(n_images), y, groups))
        return torch.utils.data.Subset(dataset, train), torch.utils.data.Subset(dataset, valid)


def check_group_split(split) -> None:
    """Refuse skorch's own ``ValidSplit`` with a number as ``cv`` when groups are given."""
    if type(split) is ValidSplit and isinstance(split.cv, Real):
        raise ValueError(
            f"groups are kept whole by skconv.finetune.GroupValidSplit, not by skorch's "
            f"ValidSplit({split.cv!r}), which would put members of a group on both sides; "
            f"pass train_split=GroupValidSplit({split.cv!r}, stratified={split.stratified!r}, "
            f"random_state={split.random_state!r})."
        )
