"""Writing a report: report.json (every number), report.md (findings and tables) and a self-contained
report.html (jinja2 with autoescape, inline SVG figures, a few lines of inline JS to sort tables).

Everything is rendered in memory first and each file is then replaced atomically, so a failed report never
leaves a half-written or clobbered file behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from model_wrappers.files import atomic_write_text, writable_folder

from . import plots
from .analysis import analyse
from .failures import OUTCOMES, classify_runs
from .narrative import design, format_p, format_value, listing_order, stars
from .runs import ReportInputError, load_runs, refuse_untrusted
from .schema import Comparison, ModelReport, Report, Settings, TaskSummary, to_json

logger = logging.getLogger(__name__)

UNIT_NOTE = (
    "items that share a context (a needle and haystack, an article) are one cluster, and random head sets "
    "(seeds) are a sample of sets. One condition against another is tested exactly by flipping the signs of "
    "whole cluster sums, so G clusters cannot give p below 2/2^G. A pooled random control or contrast is "
    "about new head sets and new contexts alike, so its test and interval use the spread between seeds plus "
    "the spread between clusters, with min(S, G) - 1 degrees of freedom. With fewer than 3 seeds the spread "
    "between head sets cannot be estimated and results hold only for the drawn sets."
)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    html: Path
    report: Report


def write_report(
    run_dirs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    seed: int = Settings.seed,
    n_resamples: int = Settings.n_resamples,
    confidence: float = Settings.confidence,
    headline_k: int | None = Settings.headline_k,
) -> ReportFiles:
    """Read lm-eval output folders, compare every masked condition with the unmasked run, write the report.

    Raises ReportInputError (nothing written) when a folder has no results or samples, or runs differ in model,
    task version or prompts.
    """
    if not 0 < confidence < 1:
        raise ReportInputError(f"confidence={confidence} must be between 0 and 1, e.g. 0.95.")
    if n_resamples < 100:
        raise ReportInputError(
            f"n_resamples={n_resamples} is too few for a stable Monte Carlo p-value; use at least 1000."
        )
    settings = Settings(confidence=confidence, n_resamples=n_resamples, seed=seed, headline_k=headline_k)
    runs = load_runs(list(run_dirs))
    refuse_untrusted(runs)
    classify_runs(runs)
    report = analyse(runs, settings)
    texts = {
        "report.json": json.dumps(to_json(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        "report.md": render_markdown(report),
        "report.html": render_html(report),
    }
    output = writable_folder(output_dir)
    for name, text in texts.items():
        atomic_write_text(output / name, text)
    return ReportFiles(output / "report.md", output / "report.json", output / "report.html", report)


# ---- tables shared by Markdown and HTML ---------------------------------------------------------------------


def _cell(text: str, sort, significant: bool = False) -> dict:
    return {
        "text": text,
        "sort": "" if sort is None else sort,
        "cls": "sig" if significant else ("null" if sort is None else ""),
    }


def _interval(c: Comparison, bounded: bool) -> str:
    r = c.result
    return (
        f"{format_value(r.delta, bounded, signed=True)} [{format_value(r.ci_low, bounded, signed=True)}, "
        f"{format_value(r.ci_high, bounded, signed=True)}]{stars(c.p_holm)}"
    )


def _significance_cell(c: Comparison | None, bounded: bool) -> dict:
    return _cell("—", None) if c is None else _cell(_interval(c, bounded), c.result.delta, bool(stars(c.p_holm)))


def _headline_columns(model: ModelReport) -> list[tuple[TaskSummary, str]]:
    """(task, filter) of every headline task, in report order."""
    return [(task, f) for task in model.tasks if task.headline for f in task.filters]


def leaderboard(model: ModelReport) -> dict:
    """Conditions x headline tasks: the unmasked score, then Δ [CI] with Holm significance marks."""
    columns = _headline_columns(model)
    arms = sorted({c.arm.label: c for c in model.comparisons if c.in_family}.values(), key=listing_order)
    labels = [c.arm.label for c in arms]
    index = {(c.task, c.filter, c.metric, c.arm.label): c for c in model.comparisons}
    rows = [
        {
            "label": "none (score)",
            "cells": [_cell(format_value(t.filters[f].baseline, t.bounded), t.filters[f].baseline) for t, f in columns],
        }
    ]
    for label in labels:
        cells = [_significance_cell(index.get((t.task, f, t.primary_metric, label)), t.bounded) for t, f in columns]
        rows.append({"label": label, "cells": cells})
    summaries = [(t, t.filters[f]) for t, f in columns]
    return {
        "columns": [f"{t.task}{f' ({f})' if len(t.filters) > 1 else ''} · {t.primary_metric}" for t, f in columns],
        "rows": rows,
        "counts": [f"{s.n}" + (f" ({s.n_clusters})" if s.n_clusters < s.n else "") for _, s in summaries],
        "seeds": [_seeds(model, t.task) for t, _ in columns],
        "min_p": [
            format_p(s.min_attainable_p)
            + (f" ({format_p(s.min_attainable_p_holm)} Holm)" if s.min_attainable_p_holm is not None else "")
            for _, s in summaries
        ],
        "mde": [
            format_value(s.mde, t.bounded) + (" pts" if t.bounded and s.mde is not None else "") for t, s in summaries
        ],
    }


def _seeds(model: ModelReport, task: str) -> str:
    """Random head sets per pooled control of a task, e.g. ``5``, or ``1, 5`` when Ks differ."""
    counts = sorted({c.result.n_seeds for c in model.comparisons if c.task == task and c.arm.kind == "random"})
    return ", ".join(map(str, counts)) if counts else "—"


def _comparison_cells(model: ModelReport) -> list[list[dict]]:
    bounded = {t.task: t.bounded for t in model.tasks}
    rows = []
    for c in model.comparisons:
        b, r, label = bounded[c.task], c.result, c.arm.label
        clustered = "" if r.se_clustered is None else format_value(r.se_clustered, b)
        unit = r.unit + (" (conditional on the drawn sets)" if r.conditional else "")
        rows.append(
            [
                _cell(c.task, c.task),
                _cell(c.filter, c.filter),
                _cell(c.metric, c.metric),
                _cell(label + ("" if c.in_family else " †"), label),
                _cell(c.arm.reference_label, c.arm.reference_label),
                _cell(str(r.n), r.n),
                _cell(str(r.n_clusters), r.n_clusters),
                _cell("" if r.n_seeds is None else str(r.n_seeds), r.n_seeds),
                _cell(unit, unit),
                _cell(format_value(r.baseline, b), r.baseline),
                _cell(format_value(r.treated, b), r.treated),
                _cell(format_value(r.delta, b, signed=True), r.delta),
                _cell(format_value(r.ci_low, b, signed=True), r.ci_low),
                _cell(format_value(r.ci_high, b, signed=True), r.ci_high),
                _cell("n/a" if r.se_design is None else f"{format_value(r.se_design, b)} ({r.df:.3g} df)", r.se_design),
                _cell(clustered, r.se_clustered),
                _cell(r.test, r.test),
                _cell(c.null, c.null),
                _cell(
                    "" if c.rank is None else f"{c.rank.beaten} of {c.rank.sets} (p = {format_p(c.rank.p_value)})",
                    None if c.rank is None else c.rank.p_value,
                ),
                _cell(format_p(r.min_attainable_p), r.min_attainable_p),
                _cell(format_p(r.p_value), r.p_value),
                _cell(format_p(c.p_holm), c.p_holm),
                _cell(format_p(c.p_bh), c.p_bh),
            ]
        )
    return rows


def cross_model_table(report: Report) -> tuple[list[str], list[dict]]:
    columns = sorted({task for row in report.cross_model for task in row.tasks})
    rows = []
    for row in report.cross_model:
        cells = []
        for task in columns:
            entry = row.tasks.get(task)
            if entry is None:
                cells.extend(_cell("—", None) for _ in range(4))
                continue
            cells.append(_cell(format_value(entry.baseline, entry.bounded), entry.baseline))
            cells += [_significance_cell(c, entry.bounded) for c in (entry.retrieval, entry.random, entry.contrast)]
        dependence = row.dependence
        rows.append(
            {
                "rank": row.rank,
                "model": row.model,
                "k": row.headline_k,
                "cells": cells,
                "dependence": "n/a" if dependence is None else f"{dependence * 100:.1f}",
                "dependence_sort": "" if dependence is None else dependence,
            }
        )
    return columns, rows


def design_line(model: ModelReport) -> str:
    """One sentence per model: each headline task's items, clusters, seeds and smallest attainable p."""
    parts = []
    for task, f in _headline_columns(model):
        summary, seeds = task.filters[f], _seeds(model, task.task)
        parts.append(
            f"{task.task}{f' ({f})' if len(task.filters) > 1 else ''}: {design(summary)}"
            + (f", {seeds} random seeds" if seeds != "—" else "")
            + f", smallest attainable p {format_p(summary.min_attainable_p)}"
            + (
                f" ({format_p(summary.min_attainable_p_holm)} after Holm)"
                if summary.min_attainable_p_holm is not None
                else ""
            )
        )
    return ("Design: " + "; ".join(parts) + ".") if parts else ""


# ---- HTML ---------------------------------------------------------------------------------------------------


def render_html(report: Report) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("rh_tasks.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    cross_columns, cross_rows = cross_model_table(report)
    models = [_html_model(model, number) for number, model in enumerate(report.models)]
    return environment.get_template("report.html.j2").render(
        runs=report.runs,
        settings=report.settings,
        methods=report.methods,
        family_size=report.family_size,
        models=models,
        outcomes=OUTCOMES,
        cross_model=report.cross_model,
        cross_columns=cross_columns,
        cross_rows=cross_rows,
        unit_note=UNIT_NOTE,
    )


def _html_model(model: ModelReport, number: int) -> dict:
    salt = f"m{number}"
    bounded = {t.task: t.bounded for t in model.tasks}
    head_map = model.head_map
    note = None
    if head_map is None:
        note = "No head-score file is recorded for these runs, so the layer × head map is left out."
    elif head_map.means is None:
        note = f"The head-score file {head_map.head_scores} could not be read, so the layer × head map is left out."
    return {
        "name": model.model,
        "headline_k": model.headline_k,
        "design": design_line(model),
        "runs": model.runs,
        "statements": model.statements,
        "leaderboard": leaderboard(model),
        "k_sweep_svg": plots.k_sweep(model.k_sweep, bounded, f"{salt}k") if model.k_sweep else None,
        "heatmaps": [{"task": h.task, "svg": plots.heatmap(h, f"{salt}h{i}")} for i, h in enumerate(model.heatmaps)],
        "failures": [
            {"task": f.task, "panels": f.panels, "svg": plots.failure_bars(f, f"{salt}f{i}")}
            for i, f in enumerate(model.failures)
        ],
        "head_map_svg": plots.head_map(head_map, f"{salt}m") if head_map and head_map.means is not None else None,
        "head_map_source": head_map.head_scores if head_map else None,
        "head_map_note": note,
        "comparisons": _comparison_cells(model),
    }


# ---- Markdown -----------------------------------------------------------------------------------------------


def _md(text) -> str:
    """Table-safe Markdown text: no pipes, no raw HTML."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(report: Report) -> str:
    settings, methods = report.settings, report.methods
    lines = [
        "# Which abilities depend on retrieval heads?",
        "",
        f"{len(report.runs)} runs. Δ = masked minus unmasked score on the same items; scores in [0, 1] in "
        f"points (×100). {settings.confidence:.0%} intervals: {methods.intervals}. Tests: {methods.tests} "
        f"({settings.n_resamples} Monte Carlo sign flips where enumeration is too large, seed {settings.seed}). "
        f"Marks: * p < 0.05, ** p < 0.01, *** p < 0.001 after Holm correction over {report.family_size} tests.",
        "",
        f"Unit of analysis: {UNIT_NOTE}",
        "",
    ]
    if report.cross_model:
        columns, rows = cross_model_table(report)
        header = ["rank", "model", "K", "dependence"] + [
            f"{c} {part}" for c in columns for part in ("baseline", "Δ retrieval", "Δ random", "contrast")
        ]
        lines += ["## Across models", ""] + _md_table(
            header,
            [
                [str(r["rank"]), r["model"], str(r["k"]), r["dependence"]] + [c["text"] for c in r["cells"]]
                for r in rows
            ],
        )
    for model in report.models:
        board = leaderboard(model)
        lines += [f"## {_md(model.model)}", "", f"Headline K: {model.headline_k}. {design_line(model)}", ""]
        lines += ["### Findings", ""]
        lines += [f"- {_md(p)}" for p in model.statements] + [""]
        lines += ["### Leaderboard", ""] + _md_table(
            ["condition"] + board["columns"],
            [[r["label"]] + [c["text"] for c in r["cells"]] for r in board["rows"]]
            + [
                ["paired items (contexts G)"] + board["counts"],
                ["random head sets S"] + board["seeds"],
                ["smallest attainable p"] + board["min_p"],
                ["minimum detectable effect"] + board["mde"],
            ],
        )
        for breakdown in model.failures:
            lines += [f"### {_md(breakdown.task)}: failure breakdown", ""] + _md_table(
                ["condition", "n"] + list(OUTCOMES),
                [[p.condition, str(p.n)] + [str(p.counts[o]) for o in OUTCOMES] for p in breakdown.panels],
            )
        lines += ["### All comparisons († = exploratory, outside the corrected family)", ""] + _md_table(
            [
                "task",
                "filter",
                "metric",
                "condition",
                "reference",
                "n",
                "G",
                "S",
                "unit",
                "reference score",
                "score",
                "Δ",
                "CI low",
                "CI high",
                "SE of Δ (df)",
                "clustered SE",
                "test",
                "null hypothesis",
                "random sets it is more damaging than",
                "min p",
                "p",
                "Holm p",
                "BH p",
            ],
            [[cell["text"] for cell in row] for row in _comparison_cells(model)],
        )
    lines.append("Figures (heatmaps, K-sweep, layer × head map) are in report.html; every number is in report.json.")
    return "\n".join(lines) + "\n"
