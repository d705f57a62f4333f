"""Writing a report: report.json (every number), report.md (findings and tables) with forest.svg beside it,
and a self-contained report.html (jinja2 with autoescape, inline SVG figures, a few lines of inline JS to sort
tables).

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

from . import cot_classes, plots
from .analysis import analyse, dose_response
from .failures import OUTCOMES, classify_runs
from .narrative import format_p, format_value, listing_order, nulls, rank_words, stars
from .picks import headline_picks, k_note
from .runs import ReportInputError, load_runs, refuse_untrusted
from .schema import Comparison, ForestRow, ModelReport, Report, Settings, TaskSummary, to_json
from .token_records import check_token_records

logger = logging.getLogger(__name__)

UNIT_NOTE = (
    "items that share a context (a needle and haystack, an article) are one cluster, and random head sets "
    "(seeds) are a sample of sets. One condition against another is tested exactly by flipping the signs of "
    "whole cluster sums, so G clusters cannot give p below 2/2^G. A pooled random control or contrast is "
    "about new head sets and new contexts alike, so its test and interval use the spread between seeds plus "
    "the spread between clusters, with the degrees of freedom of the smaller sample. With fewer than 3 seeds "
    "the spread between head sets cannot be estimated and results hold only for the drawn sets."
)
QUESTION = "Does masking a model's retrieval heads lower a task's score more than masking as many random heads?"
WINDOW_QUESTION = (
    "With every other head restricted to a window, does keeping a model's retrieval heads whole keep a task's score "
    "better than keeping as many random heads?"
)


def question(report: Report) -> str:
    """The question the report answers: about masking, or, when every intervention is a window, about keeping."""
    changed = [r.condition for r in report.runs if r.condition.kind != "none" or r.condition.window is not None]
    return WINDOW_QUESTION if changed and all(c.window is not None for c in changed) else QUESTION


def engines(report: Report) -> str:
    """Which engine computed the runs, e.g. "Engines: hf (4 runs); rh-masked (4 runs)." (rh-masked: the hooks)."""
    counts: dict[str, int] = {}
    for run in report.runs:
        counts[run.engine] = counts.get(run.engine, 0) + 1
    named = [f"{engine} ({n} run{'s' * (n != 1)})" for engine, n in sorted(counts.items())]
    return f"Engine{'s' * (len(named) > 1)}: {'; '.join(named)}."


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    html: Path
    forest: Path | None  # the headline figure report.md shows; None when no task has a retrieval condition
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
    check_token_records(runs)
    classify_runs(runs)
    report = analyse(runs, settings)
    forest_svg = forest_figure(report)  # each figure drawn once: report.html inlines it, report.md links it
    class_svgs = [class_figure(model, number) for number, model in enumerate(report.models)]
    texts = {
        "report.json": json.dumps(to_json(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        "report.md": render_markdown(report),
        "report.html": render_html(report, forest_svg, class_svgs),
    }
    if forest_svg:
        texts["forest.svg"] = forest_svg
    for number, svg in enumerate(class_svgs):
        if svg:
            texts[class_figure_name(report, number)] = svg
    output = writable_folder(output_dir)
    for name, text in texts.items():
        atomic_write_text(output / name, text)
    forest = output / "forest.svg" if forest_svg else None
    return ReportFiles(output / "report.md", output / "report.json", output / "report.html", forest, report)


def class_figure(model: ModelReport, number: int) -> str | None:
    """A model's token-class figure as SVG; None when it ran no teacher-forced chain of thought."""
    rows = cot_classes.class_rows(model)
    return plots.token_classes(rows, model.headline_k, f"c{number}") if rows else None


def class_figure_name(report: Report, number: int) -> str:
    """The token-class figure's file: one per model, numbered only when the report has several."""
    return "token_classes.svg" if len(report.models) == 1 else f"token_classes_{number + 1}.svg"


def class_table(model: ModelReport) -> list[list[str]]:
    """The chain-of-thought section's rows (:data:`cot_classes.COLUMNS`), as text."""
    table = []
    for row in cot_classes.class_rows(model):
        contrast = row.contrast
        p = "—" if contrast is None else format_p(contrast.result.p_value)
        if contrast is not None and contrast.p_holm is not None:
            p += f" ({format_p(contrast.p_holm)}{stars(contrast.p_holm)})"
        if contrast is not None and contrast.rank is not None:
            p += f"; {rank_words(contrast)}"
        table.append(
            [row.task, row.title, "—" if row.tokens is None else str(row.tokens), str(row.questions)]
            + [format_value(row.baseline, False)]
            + [_cell_text(c) for c in (row.retrieval, row.random, contrast)]
            + [p]
        )
    return table


def _cell_text(c: Comparison | None) -> str:
    return "—" if c is None else _interval(c, False)


def forest_figure(report: Report) -> str | None:
    """The headline figure as SVG; None when no task has a retrieval condition to plot."""
    rows = forest_rows(report)
    return plots.forest(rows, "forest", several=len(report.models) > 1) if rows else None


def forest_rows(report: Report) -> list[ForestRow]:
    """The headline figure's rows: every model's headline tasks, the most dependent model first."""
    return [row for model in ranked_models(report) for row in model.forest]


def ranked_models(report: Report) -> list[ModelReport]:
    """Models in cross-model rank order (report order for one model), so the top of a report reads as one list."""
    rank = {row.model: row.rank for row in report.cross_model}
    return sorted(report.models, key=lambda model: rank.get(model.model, 0))


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
    """Δ [CI] with Holm marks, or † when exploratory; HTML puts the interval on a line of its own so narrow tables
    fit."""
    if c is None:
        return _cell("—", None)
    r = c.result
    mark = stars(c.p_holm) if c.in_family else " †"
    ci = f"[{format_value(r.ci_low, bounded, signed=True)}, {format_value(r.ci_high, bounded, signed=True)}]"
    cell = _cell(_interval(c, bounded) + ("" if c.in_family else mark), r.delta, bool(stars(c.p_holm)))
    return cell | {"main": format_value(r.delta, bounded, signed=True) + mark, "ci": ci}


def _headline_columns(model: ModelReport) -> list[tuple[TaskSummary, str]]:
    """(task, filter) of every headline task, in report order."""
    return [(task, f) for task in model.tasks if task.headline for f in task.filters]


LEADERBOARD_COLUMNS = [
    "task · metric",
    "unmasked",
    "Δ retrieval",
    "Δ random",
    "contrast",
    "items (contexts)",
    "random seeds",
    "smallest attainable p (Holm)",
    "detectable Δ",
]


def leaderboard(model: ModelReport) -> list[dict]:
    """One row per headline task (and filter): the unmasked score, Δ retrieval, Δ random and their contrast at the
    headline K, then the design that bounds what the row can show."""
    rows = []
    for task, f in _headline_columns(model):
        pick, summary = headline_picks(model, task, f), task.filters[f]
        cells = [_cell(format_value(summary.baseline, task.bounded), summary.baseline)]
        cells += [_significance_cell(pick.get(kind), task.bounded) for kind in ("retrieval", "random", "contrast")]
        random = pick.get("random")
        design_cells = [
            f"{summary.n}" + (f" ({summary.n_clusters})" if summary.n_clusters < summary.n else ""),
            "—" if random is None else str(random.result.n_seeds),
            format_p(summary.min_attainable_p)
            + (f" ({format_p(summary.min_attainable_p_holm)})" if summary.min_attainable_p_holm is not None else ""),
            format_value(summary.mde, task.bounded),
        ]
        rows.append({"task": _task_name(task, f), "cells": cells + [_cell(text, text) for text in design_cells]})
    return rows


def _task_name(task: TaskSummary, f: str) -> str:
    return f"{task.task}{f' ({f})' if len(task.filters) > 1 else ''} · {task.primary_metric}"


def headline_conditions(model: ModelReport) -> str:
    """The conditions behind the leaderboard's Δ columns, e.g. ``retrieval@5, random@5``."""
    picks = [c for t, f in _headline_columns(model) for c in headline_picks(model, t, f).values()]
    picked = {c.arm.label: c for c in picks if c.arm.kind != "contrast"}
    return ", ".join(label for label, c in sorted(picked.items(), key=lambda item: listing_order(item[1])))


def other_conditions(model: ModelReport) -> tuple[list[str], list[dict]]:
    """The headline tasks' other conditions (other Ks and windows, variants, explicit sets) as rows, headline tasks
    as columns, Δ [CI] in each cell († when exploratory)."""
    columns = _headline_columns(model)
    picked = {id(c) for t, f in columns for c in headline_picks(model, t, f).values()}
    others = [c for c in model.comparisons if c.headline and id(c) not in picked]
    index = {(c.task, c.filter, c.arm.label): c for c in others}
    labels = [c.arm.label for c in sorted({c.arm.label: c for c in others}.values(), key=listing_order)]
    rows = [
        {"label": label, "cells": [_significance_cell(index.get((t.task, f, label)), t.bounded) for t, f in columns]}
        for label in labels
    ]
    return [_task_name(t, f) for t, f in columns], rows


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
                    "" if c.rank is None else rank_words(c),
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
    """Models in rank order, each headline task's causal contrast with its interval beside the dependence."""
    tasks = sorted({task for row in report.cross_model for task in row.tasks})
    long_context = {task for row in report.cross_model for task, entry in row.tasks.items() if entry.long_context}
    rows = []
    for row in report.cross_model:
        entries = [row.tasks.get(task) for task in tasks]
        cells = [_cell("—", None) if e is None else _significance_cell(e.contrast, e.bounded) for e in entries]
        dependence = row.dependence
        rows.append(
            {
                "rank": row.rank,
                "model": row.model,
                "k": row.headline_k,
                "cells": cells,
                "dependence": _dependence(row),
                "dependence_sort": "" if dependence is None else dependence,
            }
        )
    return [task + (" (long context)" if task in long_context else "") for task in tasks], rows


def _dependence(row) -> str:
    """Points over long-context (or all) tasks; nats per token over chain of thought against direct answers."""
    if row.dependence is None:
        return "n/a"
    if row.dependence_basis == "chain of thought against direct answers":
        return format_value(row.dependence, False) + " nats (chain of thought − direct)"
    return format_value(row.dependence, True) + (" (all tasks)" if row.dependence_basis == "all tasks" else "")


def cross_model_rule(report: Report) -> str:
    """The one line that says how the cross-model table is ranked and what its cells hold."""
    return (
        "Ranked by dependence on retrieval heads: the mean causal contrast Δ(retrieval) − Δ(random), signed so "
        "that damage is positive, over the long-context tasks (for a model with none, chain of thought minus direct "
        "answers in NLL per token, else all tasks), at "
        "each model's headline K; the most dependent model first. Each task's cell is its contrast with its "
        f"{report.settings.confidence:.0%} interval (— where the task has no random control)."
    )


# ---- HTML ---------------------------------------------------------------------------------------------------


MEMORY_NOTE = (
    "Windowed conditions: every KV group outside the kept set attends only to its sinks and its window. Kept "
    "fraction: the share of the full KV cache (KV groups × positions) the condition would keep, at each item's "
    "context length, averaged over the items; a KV group stays whole when any of its query heads is kept, so equal "
    "memory means equal kept KV groups. Nothing was evicted in these runs: attention was restricted, and this is "
    "what a cache would need. Δ against the unmasked run; a contrast is retrieval kept − random kept at equal K."
)
_MEMORY_ORDER = {"none": 0, "retrieval": 1, "random": 2, "explicit": 3, "contrast": 4}
MEMORY_COLUMNS = ["task", "condition", "window", "kept KV groups", "kept fraction", "Δ [CI]", "Holm p", "equal memory"]


def memory_rows(model: ModelReport) -> list[list[str]]:
    """One row per windowed condition (pooled seeds, contrasts) of each task's primary metric."""
    bounded = {t.task: t.bounded for t in model.tasks}
    points = sorted(model.memory, key=lambda p: (p.task, p.filter, p.window, _MEMORY_ORDER[p.keep], p.k or 0))
    return [
        [
            p.task + (f" ({p.filter})" if p.filter != "none" else ""),
            p.label,
            f"{p.window} + {p.sink} sinks",
            f"{p.kept_kv_groups:g} of {p.kv_groups}",
            f"{p.kept_fraction:.1%}",
            _interval(p.comparison, bounded.get(p.task, False)),
            format_p(p.comparison.p_holm) if p.comparison.p_holm is not None else "—",
            "yes" if p.equal_memory else "no",
        ]
        for p in points
    ]


def render_html(report: Report, forest_svg: str | None, class_svgs: list[str | None]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("rh_tasks.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    cross_columns, cross_rows = cross_model_table(report)
    models = [
        _html_model(model, number) | {"class_svg": svg}
        for (number, model), svg in zip(enumerate(report.models), class_svgs)
    ]
    return environment.get_template("report.html.j2").render(
        question=question(report),
        answers=[(model.model, model.headline_k, model.answers) for model in ranked_models(report)],
        forest_svg=forest_svg,
        forest_caption=forest_caption(report),
        runs=report.runs,
        engines=engines(report),
        settings=report.settings,
        methods=report.methods,
        family_size=report.family_size,
        models=models,
        outcomes=OUTCOMES,
        cross_model=report.cross_model,
        cross_columns=cross_columns,
        cross_rows=cross_rows,
        cross_rule=cross_model_rule(report) if report.cross_model else None,
        leaderboard_columns=LEADERBOARD_COLUMNS,
        unit_note=UNIT_NOTE,
        memory_note=MEMORY_NOTE,
        memory_columns=MEMORY_COLUMNS,
        class_columns=cot_classes.COLUMNS,
        class_note=cot_classes.NOTE,
    )


def forest_caption(report: Report) -> str:
    """How to read the headline figure, in one line."""
    return (
        f"Diamonds: Δ(retrieval) − Δ(random) with its {report.settings.confidence:.0%} interval, filled "
        f"and starred when significant after Holm correction over {report.family_size} tests; one row per K (and "
        "window) of the design, as the answers read them; circles and squares: the retrieval and random deltas "
        "against the unmasked run. Scores in [0, 1] in points; losses (NLL per token, in nats) on an axis of their "
        "own, where damage is positive."
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
    other_columns, other_rows = other_conditions(model)
    swept = dose_response(model.k_sweep)
    return {
        "name": model.model,
        "headline_k": model.headline_k,
        "k_note": k_note(model),
        "nulls": nulls(model),
        "runs": model.runs,
        "statements": model.statements,
        "leaderboard": leaderboard(model),
        "headline_conditions": headline_conditions(model),
        "other_columns": other_columns,
        "other_rows": other_rows,
        "skipped_figures": model.skipped_figures,
        "k_sweep_svg": plots.k_sweep(swept, bounded, f"{salt}k") if swept else None,
        "heatmaps": [{"task": h.task, "svg": plots.heatmap(h, f"{salt}h{i}")} for i, h in enumerate(model.heatmaps)],
        "failures": [
            {"task": f.task, "panels": f.panels, "svg": plots.failure_bars(f, f"{salt}f{i}")}
            for i, f in enumerate(model.failures)
        ],
        "head_map_svg": plots.head_map(head_map, f"{salt}m") if head_map and head_map.means is not None else None,
        "head_map_source": head_map.head_scores if head_map else None,
        "head_map_note": note,
        "comparisons": _comparison_cells(model),
        "memory_rows": memory_rows(model),
        "class_rows": class_table(model),
        "memory_svg": plots.memory(model.memory, bounded, f"{salt}w") if model.memory else None,
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
    lines = ["# Which abilities depend on retrieval heads?", "", question(report), ""]
    for model in ranked_models(report):
        if len(report.models) > 1:
            lines += [f"**{_md(model.model)}** (K = {model.headline_k}):", ""]
        lines += [f"- {_md(sentence)}" for sentence in model.answers] + [""]
    if forest_rows(report):
        lines += ["![Δ retrieval − Δ random per task](forest.svg)", "", forest_caption(report), ""]
    if report.cross_model:
        columns, rows = cross_model_table(report)
        lines += ["## Across models", "", cross_model_rule(report), ""] + _md_table(
            ["rank", "model", "K", "dependence"] + columns,
            [
                [str(r["rank"]), r["model"], str(r["k"]), r["dependence"]] + [c["text"] for c in r["cells"]]
                for r in rows
            ],
        )
    lines += [
        "## Methods",
        "",
        f"{len(report.runs)} runs. Δ = masked minus unmasked score on the same items; scores in [0, 1] in "
        f"points (×100). {settings.confidence:.0%} intervals: {methods.intervals}. Tests: {methods.tests} "
        f"({settings.n_resamples} Monte Carlo sign flips where enumeration is too large, seed {settings.seed}). "
        f"Marks: * p < 0.05, ** p < 0.01, *** p < 0.001 after Holm correction over {report.family_size} tests.",
        "",
        f"Family: {methods.family}.",
        "",
        f"Answers: {methods.answers}.",
        "",
        engines(report),
        "",
        f"Unit of analysis: {UNIT_NOTE}",
        "",
    ]
    for model in report.models:
        lines += [f"## {_md(model.model)}", "", k_note(model), ""]
        lines += ["### Findings", ""]
        lines += [f"- {_md(p)}" for p in model.statements] + [""]
        lines += ["What each comparison tests:", ""]
        lines += _md_table(["comparison", "null hypothesis", "test"], nulls(model))
        lines += ["### Leaderboard", "", f"At K = {model.headline_k} ({_md(headline_conditions(model))}).", ""]
        lines += _md_table(
            LEADERBOARD_COLUMNS, [[r["task"]] + [c["text"] for c in r["cells"]] for r in leaderboard(model)]
        )
        other_columns, other_rows = other_conditions(model)
        if other_rows:
            lines += ["Other conditions († = exploratory, outside the corrected family):", ""] + _md_table(
                ["condition"] + other_columns, [[r["label"]] + [c["text"] for c in r["cells"]] for r in other_rows]
            )
        lines += [f"{_md(note)}" for note in model.skipped_figures] + ([""] if model.skipped_figures else [])
        if class_rows := class_table(model):
            figure = class_figure_name(report, report.models.index(model))
            lines += ["### Chain of thought: where masking hurts", "", cot_classes.NOTE, ""]
            lines += [f"![ΔNLL per token by token class]({figure})", ""]
            lines += _md_table(cot_classes.COLUMNS, class_rows)
        if model.memory:
            lines += ["### Memory: windowed conditions", "", MEMORY_NOTE, ""]
            lines += _md_table(MEMORY_COLUMNS, memory_rows(model))
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
                "rank among random sets",
                "min p",
                "p",
                "Holm p",
                "BH p",
            ],
            [[cell["text"] for cell in row] for row in _comparison_cells(model)],
        )
    lines.append("Figures (heatmaps, K-sweep, layer × head map) are in report.html; every number is in report.json.")
    return "\n".join(lines) + "\n"
