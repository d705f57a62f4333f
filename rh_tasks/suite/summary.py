"""What ``rh-eval suite`` prints when it is done: the leaderboard, one answer per task, where the report is.

Every number comes from the report's own model and renderers (:func:`rh_tasks.report.render.leaderboard`,
:func:`rh_tasks.report.narrative.answers`); this only lays them out for a terminal.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from rh_tasks.report import ReportFiles
from rh_tasks.report.narrative import answers
from rh_tasks.report.render import LEADERBOARD_COLUMNS, leaderboard
from rh_tasks.report.schema import ModelReport

GAP = "  "


def summary(files: ReportFiles, width: int = 100) -> str:
    """The suite's findings in a screenful of text ``width`` columns wide."""
    report = files.report
    lines = [
        f"Δ = masked minus unmasked score (points for [0, 1] scores) [{report.settings.confidence:.0%} CI]; "
        f"Holm-corrected over {report.family_size} tests: * p < 0.05, ** p < 0.01, *** p < 0.001.",
    ]
    for model in report.models:
        lines += ["", f"{model.model} (headline K = {model.headline_k})", *_leaderboard(model, width), ""]
        lines += ["Answers:"]
        for sentence in answers(model):
            lines += textwrap.wrap(sentence, width, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
    lines += ["", f"Report: {files.html} (and report.md, report.json beside it)"]
    return "\n".join(lines)


def runs_only(out: Path) -> str:
    """Where the runs are when no report was written, and how to write it."""
    conditions = out / "conditions"
    return (
        f"Runs (lm-eval's results and samples, one folder per condition): {conditions}\n"
        f"Write the report with: rh-eval report {conditions} -o {out / 'report'}"
    )


def _leaderboard(model: ModelReport, width: int) -> list[str]:
    """Headline tasks x (unmasked, Δ retrieval, Δ random, contrast, items) as the report's leaderboard shows them,
    split into blocks of columns that fit."""
    rows = leaderboard(model)
    labels = [LEADERBOARD_COLUMNS[0], *(row["task"] for row in rows)]
    columns = [
        [header, *(row["cells"][i]["text"] for row in rows)] for i, header in enumerate(LEADERBOARD_COLUMNS[1:6])
    ]
    label_width = max(map(len, labels))
    blocks, block, used = [], [], label_width
    for column in columns:
        size = len(GAP) + max(map(len, column))
        if block and used + size > width:
            blocks.append(block)
            block, used = [], label_width
        block.append(column)
        used += size
    blocks.append(block)
    lines = []
    for block in blocks:
        if lines:
            lines.append("")
        widths = [max(map(len, column)) for column in block]
        for index, label in enumerate(labels):
            cells = [column[index].ljust(w) for column, w in zip(block, widths)]
            lines.append(GAP.join([label.ljust(label_width), *cells]).rstrip())
    return lines
