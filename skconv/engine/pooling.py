"""Global pooling of feature maps into vectors."""

from __future__ import annotations

import torch

__all__ = ["POOLINGS", "pool_features"]

#: Pooling names accepted by ``ConvFeatureTransformer(pooling=...)``.
POOLINGS = ("avg", "max", "gem", "avgmax")

#: Exponent of generalised-mean pooling; 3 is the value retrieval work settled on.
GEM_P = 3.0


def pool_features(feature_map: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    """Pool a ``(n, c, h, w)`` feature map over space into ``(n, c)`` (``2c`` for avgmax).

    Parameters
    ----------
    feature_map : torch.Tensor of shape (n, c, h, w)
        Activations of one stage.
    pooling : {"avg", "max", "gem", "avgmax"}, default="avg"
        Average, maximum, generalised mean with p=3 (activations clamped at
        1e-6 first, as GeM requires non-negative inputs), or average and maximum
        concatenated.

    Returns
    -------
    pooled : torch.Tensor of shape (n, c) or (n, 2c)
        The pooled features.

    Examples
    --------
    >>> import torch
    >>> from skconv.engine import pool_features
    >>> pool_features(torch.ones(2, 4, 3, 3), "avgmax").shape
    torch.Size([2, 8])
    """
    if feature_map.ndim == 3:  # token maps (n, tokens, c) of transformer-like stages
        feature_map = feature_map.transpose(1, 2).unsqueeze(-1)
    if feature_map.ndim != 4:
        raise ValueError(
            f"Expected a (n, c, h, w) feature map, got shape {tuple(feature_map.shape)}."
        )
    if pooling == "avg":
        return feature_map.mean(dim=(2, 3))
    if pooling == "max":
        return feature_map.amax(dim=(2, 3))
    if pooling == "gem":
        clamped = feature_map.clamp(min=1e-6).pow(GEM_P)
        return clamped.mean(dim=(2, 3)).pow(1.0 / GEM_P)
    if pooling == "avgmax":
        return torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=1)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
