"""Kept so that imports written for skconv 0.1 keep working; the code lives in skconv.engine."""

from .engine.pooling import GEM_P, POOLINGS, pool_features  # noqa: F401

__all__ = ["POOLINGS", "pool_features"]
