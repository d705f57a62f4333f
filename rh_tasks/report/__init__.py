"""``rh-eval report``: paired statistics, leaderboards and heatmaps from lm-eval output folders."""

from .render import ReportFiles, write_report
from .runs import ReportInputError

__all__ = ["ReportFiles", "ReportInputError", "write_report"]
