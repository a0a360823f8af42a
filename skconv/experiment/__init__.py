"""A whole experiment on a folder of images: split, fit, evaluate, save; or compare the ways.

:func:`fit_folder` is the work behind ``skconv fit`` and ``skconv demo``, callable from
Python: it reads one folder of images per class (or a folder already split into
``train/``, ``val/`` and ``test/``), splits it, fits a classifier, evaluates it on the
validation and test parts and writes the model and its report (``report.md`` and a
self-contained ``report.html``) into a new folder, all of it or nothing.

:func:`compare_ways` fits, on the same train, validation and test parts, a fixed
feature extractor with a linear head for each backbone (by default every packaged
backbone, which works offline), a :class:`~skconv.FineTuneClassifier`, and the
ensemble of the best feature model with the fine-tuned one; it scores each on the
test part and chooses one by its validation score, never by the test score.

The parts: ``_recipe`` (the one fit recipe and its checks, used by both and by the
command line), ``_folder`` (:func:`fit_folder`), ``_compare`` (:func:`compare_ways`),
``_contenders`` (fitting each way), ``_leaderboard`` (scores and tables) and
``_records`` (what a run writes).
"""

from __future__ import annotations

# __all__ is what the API reference documents; the others are shared with the command
# line, and were importable from skconv 0.1's modules.
from ._compare import DEFAULT_CS as DEFAULT_CS
from ._compare import SCORINGS as SCORINGS
from ._compare import choose as choose
from ._compare import compare_ways, offline_backbones
from ._folder import DEFAULT_GROUP_DUPLICATES as DEFAULT_GROUP_DUPLICATES
from ._folder import GALLERY as GALLERY
from ._folder import N_RESAMPLES as N_RESAMPLES
from ._folder import PARTS as PARTS
from ._folder import fit_folder
from ._folder import presplit_layout as presplit_layout
from ._leaderboard import write_csv as write_csv
from ._recipe import DEFAULT_BACKBONE as DEFAULT_BACKBONE
from ._recipe import MODES as MODES
from ._recipe import RecipeError, check_recipe
from ._recipe import build_model as build_model
from ._recipe import feature_transformer as feature_transformer
from ._recipe import features_model as features_model
from ._recipe import finetune_model as finetune_model
from ._recipe import linear_head as linear_head
from ._records import describe_model as describe_model

__all__ = ["compare_ways", "fit_folder", "offline_backbones", "check_recipe", "RecipeError"]

RecipeError.__module__ = __name__  # where users catch it from
