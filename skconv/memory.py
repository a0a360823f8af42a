"""Kept so that imports written for skconv 0.1 keep working; the code lives in skconv.engine."""

from .engine.memory import MMAP_THRESHOLD, TRIM_THRESHOLD, reuse_freed_memory  # noqa: F401

__all__ = ["reuse_freed_memory"]
