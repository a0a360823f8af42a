"""Kept so that imports written for skconv 0.1 keep working; the code lives in skconv.report.

``duplicate_summary`` lives in :mod:`skconv.model_selection`.
"""

from .model_selection import duplicate_summary
from .report import activation_gallery, html_report, model_card, plot_curves

__all__ = ["activation_gallery", "duplicate_summary", "html_report", "model_card", "plot_curves"]
