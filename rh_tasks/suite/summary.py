"""What ``rh-eval suite`` prints when it is done: one table of the answers' rows, one answer per task, where the
report is.

Every number comes from the report's own model (the forest plot's rows, :func:`rh_tasks.report.narrative.answers`'
sentences); this only lays them out for a terminal: one table, a row per task and K, intervals on a second line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from rh_tasks.report import ReportFiles
from rh_tasks.report.narrative import format_value, stars
from rh_tasks.report.schema import Estimate, ForestRow, ModelReport

GAP = "  "
WIDTH = 100  # at most, whatever the terminal
COLUMNS = ("unmasked", "\u0394 retrieval", "\u0394 random", "contrast")
MIN_LABEL = 12


def summary(files: ReportFiles, width: int = WIDTH) -> str:
    """The suite's findings in a screenful of text at most ``width`` (and 100) columns wide."""
    report = files.report
    width = min(width, WIDTH)
    lines = [
        *textwrap.wrap(
            f"\u0394 = masked minus unmasked score (points for [0, 1] scores) [{report.settings.confidence:.0%} CI]; "
            f"Holm-corrected over {report.family_size} tests: * p < 0.05, ** p < 0.01, *** p < 0.001; "
            "\u2020 exploratory (outside the corrected family).",
            width,
        ),
    ]
    for model in report.models:
        lines += ["", model.model, *table(model, width), ""]
        lines += textwrap.wrap(design(model), width) + ["", "Answers:"]
        for sentence in model.answers:
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


def table(model: ModelReport, width: int = WIDTH) -> list[str]:
    """One table of the forest plot's rows (each headline task at each K and window): the unmasked score, then
    Δ retrieval, Δ random and their contrast, each with its interval on the line below. The task's name and
    metric share the first column, on two lines; a name too long for it goes on a line of its own above."""
    swept = len({(row.k, row.window) for row in model.forest}) > 1
    header = ["task \u00b7 metric", *(["K"] if swept else []), *COLUMNS]
    rows = []
    for row in model.forest:
        first, second = _cells(row)
        setting = [f"{row.k}" + (f", w={row.window}" if row.window is not None else "")] if swept else []
        metric = f"\u00b7 {row.metric}" + (f", {row.filter}" if row.filter != "none" else "")
        rows.append(([row.task, *setting, *first], [metric, *([""] if swept else []), *second]))
    lines_of = [header] + [line for pair in rows for line in pair]
    widths = [max(len(line[i]) for line in lines_of) for i in range(len(header))]
    rest = sum(widths[1:]) + len(GAP) * (len(widths) - 1)
    widths[0] = max(MIN_LABEL, min(widths[0], width - rest))
    out = [_line(header, widths)]
    for first, second in rows:
        if len(first[0]) > widths[0]:  # a name cut short could read as another task's: it gets a line of its own
            out.append(first[0][:width])
            first, second = [second[0], *first[1:]], ["", *second[1:]]
        out += [_line(first, widths), _line(second, widths)]
    return out


def design(model: ModelReport) -> str:
    """Items, contexts and random seeds per headline task (its first filter, as the table)."""
    seeds = {row.task: row.random for row in model.forest if row.random is not None}
    parts = []
    for task in (t for t in model.tasks if t.headline):
        f = next(iter(task.filters.values()))
        text = f"{task.task}: {f.n} items" + (f" in {f.n_clusters} contexts" if f.n_clusters < f.n else "")
        parts.append(text + (f", {_seeds(model, task.task)} random seeds" if task.task in seeds else ""))
    return "Design: " + "; ".join(parts) + "."


def _seeds(model: ModelReport, task: str) -> str:
    counts = sorted({c.result.n_seeds for c in model.comparisons if c.task == task and c.arm.kind == "random"})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def _cells(row: ForestRow) -> tuple[list[str], list[str]]:
    """(values, intervals) of the unmasked score, Δ retrieval, Δ random and the contrast."""
    contrast = row.effect if row.effect.reference != "none" else None  # else no random control: vs none
    retrieval = row.retrieval or (row.effect if contrast is None else None)
    first, second = [format_value(row.baseline, row.bounded)], [""]
    for estimate in (retrieval, row.random, contrast):
        value, interval = _estimate(estimate, row.bounded)
        first.append(value)
        second.append(interval)
    return first, second


def _estimate(e: Estimate | None, bounded: bool) -> tuple[str, str]:
    if e is None:
        return "\u2014", ""
    mark = "\u2020" if e.p_holm is None else stars(e.p_holm)
    low, high = (format_value(v, bounded, signed=True) for v in (e.ci_low, e.ci_high))
    return f"{format_value(e.delta, bounded, signed=True)}{mark}", f"[{low}, {high}]"


def _line(cells: list[str], widths: list[int]) -> str:
    label = cells[0] if len(cells[0]) <= widths[0] else cells[0][: widths[0] - 1] + "\u2026"
    return GAP.join([label.ljust(widths[0]), *(c.ljust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()
