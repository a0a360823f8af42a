"""Kept so that imports written for skconv 0.1 keep working; the code lives in
skconv.experiment.
"""

from .experiment import DEFAULT_CS, SCORINGS, compare_ways, offline_backbones

__all__ = ["compare_ways", "offline_backbones", "SCORINGS", "DEFAULT_CS"]
