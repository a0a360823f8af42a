"""Sphinx configuration of the skconv documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import skconv  # noqa: E402

project = "skconv"
author = "the skconv developers"
copyright = "2026, the skconv developers"
release = skconv.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Sections that refer to names outside our API (torch, sklearn) are plain text here:
# no intersphinx, because the build must work offline and inventories are downloads.
numpydoc_xref_param_type = False
exclude_patterns = ["_build", "examples/*.py"]
templates_path = ["_templates"]
html_theme = "pydata_sphinx_theme"
html_theme_options = {"navigation_with_keys": False, "show_prev_next": False}
html_title = f"skconv {release}"
suppress_warnings = ["autosummary.import_cycle"]
nitpicky = False
