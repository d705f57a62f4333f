"""``rh-eval report``: paired statistics, leaderboards and heatmaps from lm-eval output folders."""

from .render import ReportFiles, write_report
from .runs import ReportInputError
from .schema import Report

__all__ = ["Report", "ReportFiles", "ReportInputError", "write_report"]
