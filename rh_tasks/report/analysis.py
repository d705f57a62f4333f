"""The numbers of a report (:class:`.schema.Report`): paired comparisons against the unmasked run, causal
contrasts, the K-sweep, heatmap grids, failure counts and a cross-model ranking.

Comparisons per (task, filter, metric):

- every masked condition against ``none``;
- ``random@K``: the random-head seeds at one K pooled (each item's score averaged over the seeds). The seeds
  are a sample of head sets, so with enough of them its interval and test account for the spread between
  sets as well as between clusters of items (see ``stats.compare_paired``); each seed is also shown alone,
  as an exploratory row;
- the causal contrast ``retrieval@K − random@K`` = Δ(retrieval) − Δ(random), i.e. the paired difference
  between the retrieval condition and the pooled random control on the same items, also a sample of sets.
  Its null is that the retrieval set's expected effect equals the mean effect of random sets of the same
  size. The other question, "would a random set do as much damage?", is answered beside it by the retrieval
  set's rank among the random sets, with its exact one-sided rank p-value.

Each comparison states its null hypothesis in words.

Every comparison states its unit (items, clusters of items sharing a context, seeds), its number of clusters
G and seeds S, and the smallest p-value its design can reach, before and after Holm correction.

The multiple-testing family is the set of questions the design declares (:mod:`.family`): per headline task's
primary metric (the first metric the task logs) and setting, the contrast and the controls against none. Holm
(1979) controls the family-wise error over it and Benjamini–Hochberg (1995) is given alongside. Other rows are
exploratory. The answers and the forest plot read every setting of the design (:mod:`.picks`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from pathlib import Path

import numpy as np

from model_wrappers.condition import Condition

from . import failures, family, narrative, stats
from .derived import is_interaction
from .memory import memory_points
from .pairing import UNMASKED, ModelRuns, TaskTable, group_by_model, task_table
from .picks import answer_points, headline_picks
from .runs import Run
from .schema import (
    Arm,
    Comparison,
    CrossModelRow,
    CrossModelTask,
    Estimate,
    FailureBreakdown,
    FailurePanel,
    FilterSummary,
    ForestRow,
    HeadMap,
    Heatmap,
    HeatmapPanel,
    Methods,
    ModelReport,
    Report,
    Settings,
    SweepPoint,
    TaskSummary,
)

logger = logging.getLogger(__name__)


def analyse(runs: list[Run], settings: Settings) -> Report:
    """Everything report.json holds; raises ReportInputError when runs cannot be compared."""
    models = [_analyse_model(model_runs, settings) for model_runs in group_by_model(runs)]
    family = [c for m in models for c in m.comparisons if c.in_family]
    p_values = [c.result.p_value for c in family]
    floors = stats.holm([c.result.min_attainable_p for c in family])  # Holm is monotone: its best case
    for comparison, p_holm, p_bh, floor in zip(
        family, stats.holm(p_values), stats.benjamini_hochberg(p_values), floors
    ):
        comparison.p_holm, comparison.p_bh = float(p_holm), float(p_bh)
        comparison.min_attainable_p_holm = float(floor)
    for model in models:
        _design_reach(model)
        model.k_sweep = _k_sweep(model.comparisons)
        model.statements = narrative.statements(model, len(family), settings.confidence)
        model.answers = narrative.answers(model)
        model.forest = _forest(model)
        _skip_empty_figures(model)
    return Report(
        settings=settings,
        methods=Methods(),
        family_size=len(family),
        runs=sorted(runs, key=lambda r: str(r.path)),
        models=models,
        cross_model=_cross_model(models) if len(models) > 1 else [],
    )


def _analyse_model(model_runs: ModelRuns, settings: Settings) -> ModelReport:
    grouped = {t for members in model_runs.groups.values() for t in members}
    exploratory = model_runs.exploratory
    headline = sorted(model_runs.groups) + sorted(t for t in model_runs.tasks if t not in grouped | exploratory)
    headline_k = _headline_k(model_runs.conditions, settings.headline_k, model_runs.model)
    tasks, compared, heatmaps, failure_counts, memory = [], [], [], [], []
    for name in headline + sorted(grouped) + sorted(exploratory):
        table = task_table(model_runs, name)
        is_headline = name in headline
        arms = family.arms(c for c in model_runs.conditions if c in table.scores)
        rows = [
            _compare(model_runs.model, table, arm, f, metric, settings, is_headline and metric == table.metrics[0])
            for arm in arms
            for f in _filters(table)
            for metric in table.metrics
        ]
        compared.extend(rows)
        tasks.append(_task_summary(table, rows, is_headline))
        kv_groups = {c: run.kv_groups for c, run in model_runs.tasks.get(name, {}).items() if run.kv_groups}
        if kv_groups:
            baselines = {f: summary.baseline for f, summary in tasks[-1].filters.items()}
            memory.extend(memory_points(table, rows, kv_groups, baselines))
        if name not in model_runs.groups and table.long_context:
            heatmaps.append(_heatmap(table, arms))
            if all(i.outcome is not None for i in table.items):
                failure_counts.append(_failures(table, arms))
    return ModelReport(
        model=model_runs.model,
        runs=[r.path for r in model_runs.runs],
        conditions=model_runs.conditions,
        headline_k=headline_k,
        tasks=tasks,
        comparisons=compared,
        k_sweep=[],  # filled after Holm, which needs every model's comparisons
        heatmaps=heatmaps,
        failures=failure_counts,
        head_map=_head_map(model_runs, headline_k),
        memory=memory,
    )


def _design_reach(model: ModelReport) -> None:
    """Per task and filter: the smallest p-value its exact tests (one condition against another) could reach,
    before and after Holm, so readers (and the narrative) know when the contexts were too few for any masked
    condition to show an effect. The t tests of pooled controls and contrasts have no such floor."""
    for task in model.tasks:
        for f, summary in task.filters.items():
            mine = [
                c
                for c in model.comparisons
                if c.in_family and c.result.p_exact is not None and (c.task, c.filter) == (task.task, f)
            ]
            summary.min_attainable_p_holm = min((c.min_attainable_p_holm for c in mine), default=None)


def _headline_k(conditions: list[Condition], requested: int | None, model: str) -> int | None:
    retrieval = {c.k for c in conditions if c.kind == "retrieval"}
    seeds: dict[int, int] = {}
    for c in conditions:
        if c.kind == "random" and c.k in retrieval:
            seeds[c.k] = seeds.get(c.k, 0) + 1
    if requested is not None:
        if requested in retrieval:
            return requested
        logger.warning("%s has no retrieval@%d run; choosing the headline K from its runs instead.", model, requested)
    if seeds:
        return min(seeds, key=lambda k: (-seeds[k], k))
    return min(retrieval) if retrieval else None


def _filters(table: TaskTable) -> list[str]:
    return sorted(set(table.filters.tolist()))


def _mean_of(table: TaskTable, conditions: tuple[Condition, ...], metric: str) -> np.ndarray:
    return np.mean([table.scores[c][metric] for c in conditions], axis=0)


def _stack(table: TaskTable, conditions: tuple[Condition, ...], metric: str, rows: np.ndarray) -> np.ndarray:
    """``[len(conditions), items]`` scores: one row per condition, e.g. per random seed."""
    return np.stack([table.scores[c][metric][rows] for c in conditions])


def _compare(
    model: str, table: TaskTable, arm: Arm, filter_name: str, metric: str, settings: Settings, primary: bool
) -> Comparison:
    rows = table.filters == filter_name
    clusters = table.clusters
    key = "|".join((model, table.name, filter_name, metric, arm.label))
    result = stats.compare_paired(
        _stack(table, arm.reference, metric, rows),
        _stack(table, arm.members, metric, rows),
        clusters=None if clusters is None else [c for c, keep in zip(clusters, rows) if keep],
        sampled_sets=arm.sampled_sets,
        bounded=False if metric in table.lower_is_better else None,  # a loss may happen to lie in [0, 1]
        confidence=settings.confidence,
        n_resamples=settings.n_resamples,
        seed=[settings.seed, zlib.crc32(key.encode())],
    )
    rank = None
    if arm.kind == "contrast" and arm.sampled_sets:
        treated = _stack(table, arm.members, metric, rows)
        difference = (treated - _stack(table, arm.reference, metric, rows)).mean(axis=1)
        # Masked: is the retrieval set more damaging than random sets? Kept by a window: less damaging? Damage
        # lowers a score and raises a loss.
        flips = (arm.members[0].window is not None) + (metric in table.lower_is_better)
        rank = stats.rank_among_sets(-difference if flips % 2 else difference)
    return Comparison(
        table.name,
        filter_name,
        metric,
        arm,
        _defined(result),
        in_family=primary and arm.in_family,
        headline=primary and arm.kind != "random_seed",
        null=_interaction_null(arm, result) if is_interaction(table.name) else _null(arm, result),
        rank=rank,
    )


def _interaction_null(arm: Arm, result: stats.PairedResult) -> str:
    """The null of a comparison on chain of thought minus direct answers: the condition changes both alike."""
    if arm.kind == "contrast":
        sets = "the drawn random set(s)" if result.conditional else f"random sets of {arm.k} heads (over new sets)"
        return (
            f"{arm.members[0].label} changes chain-of-thought NLL, relative to direct answers to the same questions, "
            f"as much as {sets} do, on average over questions"
        )
    subject = arm.label if arm.kind != "random" or result.conditional else f"random sets of {arm.k} heads"
    return f"masking {subject} changes chain-of-thought and direct-answer NLL alike, on average over questions"


def _null(arm: Arm, result: stats.PairedResult) -> str:
    """The hypothesis the comparison's test rejects or not, in words."""
    if arm.kind == "contrast":
        if result.conditional:
            return (
                f"{arm.members[0].label} changes the score as much as the drawn random set(s) of {arm.k} heads "
                "on average over contexts (for these sets only)"
            )
        return (
            f"{arm.members[0].label}'s expected change equals the mean change of random sets of {arm.k} heads "
            "(over new random sets and new contexts)"
        )
    windowed = arm.members[0].window is not None
    if arm.kind == "random" and not result.conditional:
        sets = (
            f"keeping random sets of {arm.k} heads whole (windowing the others)"
            if windowed
            else (f"masking random sets of {arm.k} heads")
        )
        return f"{sets} leaves the score unchanged on average over new sets and contexts"
    subject = "the drawn random set(s)" if arm.kind == "random" else arm.label
    verb = "" if windowed else "masking "
    return f"{verb}{subject} leaves the score unchanged: both runs' scores are exchangeable within each context"


def _defined(result: stats.PairedResult) -> stats.PairedResult:
    """Undefined statistics (e.g. an SE from one cluster) as None, so every reader treats them alike."""
    undefined = [f.name for f in dataclasses.fields(result) if _undefined(getattr(result, f.name))]
    return dataclasses.replace(result, **dict.fromkeys(undefined))


def _undefined(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _task_summary(table: TaskTable, rows: list[Comparison], is_headline: bool) -> TaskSummary:
    """Per task: item counts, unmasked score and the minimum detectable effect of its primary metric."""
    primary = table.metrics[0]
    values = np.concatenate([s[m] for s in table.scores.values() for m in table.metrics])
    higher_is_better = primary not in table.lower_is_better
    # Scores in [0, 1] are shown as points x100; a loss is shown as it is, wherever its values fall.
    bounded = higher_is_better and bool(np.all((values >= 0) & (values <= 1)))
    per_filter = {}
    for f in _filters(table):
        mine = [r.result for r in rows if r.filter == f and r.metric == primary and r.arm.reference == (UNMASKED,)]
        ses = [r.se_clustered if r.clustered else r.se for r in mine]
        ses = [s for s in ses if s is not None and np.isfinite(s) and s > 0]
        base = table.scores[UNMASKED][primary][table.filters == f]
        clusters = table.clusters
        groups = len(set(c for c, keep in zip(clusters, table.filters == f) if keep)) if clusters else base.size
        if ses:
            se, basis = float(np.median(ses)), "median paired standard error of this task's comparisons with none"
        elif bounded:  # nothing changed, so the data give no spread: plan with the widest a [0, 1] score has
            se = float(np.sqrt(2) * 0.5 / np.sqrt(groups))
            basis = "no item changed; assumes the worst case for [0, 1] scores (SD 0.5, independent conditions)"
        else:
            se = float(np.sqrt(2) * np.std(base, ddof=1) / np.sqrt(groups)) if base.size > 1 else float("nan")
            basis = "no item changed; assumes masked and unmasked outcomes independent"
        per_filter[f] = FilterSummary(
            n=int(base.size),
            n_clusters=int(groups),
            unit="cluster" if groups < base.size else "item",
            min_attainable_p=stats.min_attainable_p(groups),
            baseline=float(base.mean()),
            mde=None if _undefined(mde := stats.minimum_detectable_effect(se, groups)) else mde,
            mde_basis=basis + f"; t with {groups - 1} degrees of freedom",
        )
    return TaskSummary(
        task=table.name,
        subtasks=table.subtasks,
        version=table.version,
        headline=is_headline,
        metrics=table.metrics,
        primary_metric=primary,
        bounded=bounded,
        higher_is_better=higher_is_better,
        long_context=table.long_context,
        dropped_items=table.dropped,
        filters=per_filter,
    )


def _panels(arms: list[Arm]) -> list[tuple[str, tuple[Condition, ...]]]:
    """Conditions shown side by side: none, each retrieval K, each pooled random K, explicit sets."""
    chosen = [a for a in arms if a.kind in ("retrieval", "random", "explicit")]
    chosen.sort(key=lambda a: (narrative.ARM_ORDER[a.kind], a.k or 0, a.label))
    return [(UNMASKED.label, (UNMASKED,))] + [(a.label, a.members) for a in chosen]


def _heatmap(table: TaskTable, arms: list[Arm]) -> Heatmap:
    """Mean primary score per (depth, length) cell (x100 for [0, 1] scores), rows = depths, columns = lengths."""
    metric = table.metrics[0]
    f = _filters(table)[0]
    rows = table.filters == f
    lengths = np.array([i.fields.length for i in table.items])[rows]
    depths = np.array([i.fields.depth for i in table.items])[rows]
    grid_l, grid_d = sorted(set(lengths.tolist())), sorted(set(depths.tolist()))
    everything = np.concatenate([s[metric] for s in table.scores.values()])
    scale = 100 if np.all((everything >= 0) & (everything <= 1)) else 1
    panels = []
    for label, members in _panels(arms):
        scores = _mean_of(table, members, metric)[rows] * scale
        values = [
            [float(scores[cell].mean()) if (cell := (depths == d) & (lengths == l)).any() else None for l in grid_l]
            for d in grid_d
        ]
        panels.append(HeatmapPanel(label, values))
    return Heatmap(table.name, metric, f, scale, grid_l, grid_d, panels)


def _failures(table: TaskTable, arms: list[Arm]) -> FailureBreakdown:
    """Counts of failures.OUTCOMES per condition; a pooled random control sums its seeds."""
    f = _filters(table)[0]
    rows = table.filters == f
    panels = []
    for label, members in _panels(arms):
        outcomes = [o for m in members for o, keep in zip(table.outcomes[m], rows) if keep]
        panels.append(
            FailurePanel(
                condition=label,
                n=len(outcomes),
                n_seeds=len(members) if members != (UNMASKED,) else None,
                counts={o: outcomes.count(o) for o in failures.OUTCOMES},
            )
        )
    return FailureBreakdown(table.name, f, panels)


def _k_sweep(compared: list[Comparison]) -> list[SweepPoint]:
    """Δ and CI per K of each retrieval and pooled-random series, for the headline tasks' primary metrics."""
    sweep = [
        SweepPoint(
            task=c.task,
            filter=c.filter,
            metric=c.metric,
            kind=c.arm.kind,
            k=c.arm.k,
            delta=c.result.delta,
            ci_low=c.result.ci_low,
            ci_high=c.result.ci_high,
            n=c.result.n,
            n_clusters=c.result.n_clusters,
            n_seeds=c.result.n_seeds,
            unit=c.result.unit,
            conditional=c.result.conditional,
            p_holm=c.p_holm,
            series=c.arm.series,
        )
        for c in compared
        if c.headline and c.arm.kind in ("retrieval", "random")
    ]
    return sorted(sweep, key=lambda r: (r.task, r.filter, r.series, r.k))


def _head_map(model_runs: ModelRuns, headline_k: int | None) -> HeadMap | None:
    """Retrieval scores per layer x head, with the heads masked at the headline K (retrieval and random)."""
    from model_wrappers import HeadScoreFileError, load_head_scores  # lazy: model_wrappers imports torch

    masked = [c for c in model_runs.conditions if c.kind in ("retrieval", "random") and c.k == headline_k]
    if not model_runs.head_scores or not masked:
        return None
    candidates = [Path(model_runs.head_scores)] + [r.path.parent / model_runs.head_scores for r in model_runs.runs]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        logger.warning("Head-score file %s not found; the layer x head map is left out.", model_runs.head_scores)
        return HeadMap(model_runs.head_scores, headline_k, masked, None)
    try:
        scores = load_head_scores(path)
    except HeadScoreFileError as err:
        logger.warning("The layer x head map is left out: %s", err)
        return HeadMap(model_runs.head_scores, headline_k, masked, None)
    if scores.kv_heads_only or scores.ranked is not None:  # no score per query head without the model
        logger.warning("The layer x head map is left out: %s has no score per query head.", path)
        return HeadMap(model_runs.head_scores, headline_k, masked, None)
    return HeadMap(model_runs.head_scores, headline_k, masked, scores.means.tolist())


def _cross_model(models: list[ModelReport]) -> list[CrossModelRow]:
    """One row per model at its headline K, ranked by dependence = −mean causal contrast on long-context tasks."""
    rows = []
    for model in models:
        tasks = {}
        for task in (t for t in model.tasks if t.headline):
            f = next(iter(task.filters))
            pick = headline_picks(model, task, f)
            tasks[task.task] = CrossModelTask(
                metric=task.primary_metric,
                filter=f,
                baseline=task.filters[f].baseline,
                long_context=task.long_context,
                bounded=task.bounded,
                higher_is_better=task.higher_is_better,
                retrieval=pick.get("retrieval"),
                random=pick.get("random"),
                contrast=pick.get("contrast"),
            )
        long_context = [t for t in tasks.values() if t.long_context and t.contrast]
        reasoning = [t for name, t in tasks.items() if is_interaction(name) and t.contrast]
        basis = long_context or reasoning or [t for t in tasks.values() if t.contrast]
        # Damage lowers a score and raises a loss, so dependence is the mean contrast signed as damage.
        damage = [(-1 if t.higher_is_better else 1) * t.contrast.result.delta for t in basis]
        dependence = float(np.mean(damage)) if basis else None
        described = "long-context tasks" if long_context else "chain of thought against direct answers"
        rows.append((model, tasks, dependence, described if long_context or reasoning else "all tasks"))
    rows.sort(key=lambda r: (r[2] is None, -(r[2] or 0.0), r[0].model))
    return [
        CrossModelRow(model.model, model.headline_k, tasks, dependence, basis, rank)
        for rank, (model, tasks, dependence, basis) in enumerate(rows, 1)
    ]


def _forest(model: ModelReport) -> list[ForestRow]:
    """One row per headline task (its first filter, as the answers) and setting of the design (K, window): the
    causal contrast, or retrieval against none where no random control was run, with the retrieval and random
    deltas it is made of. The rows are the answers' own (:func:`.picks.answer_points`), so a sweep shows its
    whole curve and the figure and the answers never disagree."""
    rows = []
    for task in (t for t in model.tasks if t.headline):
        f = next(iter(task.filters))
        points = answer_points(model, task, f)
        for point in points:
            effect, pick = point.effect, point.picks
            name = task.task + (f" ({f})" if len(task.filters) > 1 else "") + f" \u00b7 {task.primary_metric}"
            name += f", {point.name}" if len(points) > 1 else ""
            baseline = task.filters[f].baseline
            notes = [] if "contrast" in pick else [f"no random control: {effect.arm.label} vs none"]
            if task.bounded and baseline == 0:  # nothing for masking to remove, as the answers say
                notes.append("scores 0 unmasked: cannot tell")
            rows.append(
                ForestRow(
                    model=model.model,
                    task=task.task,
                    filter=f,
                    metric=task.primary_metric,
                    k=point.k,
                    label=name + (f" ({'; '.join(notes)})" if notes else ""),
                    bounded=task.bounded,
                    baseline=baseline,
                    effect=_estimate(effect),
                    retrieval=_estimate(pick.get("retrieval")),
                    random=_estimate(pick.get("random")),
                    significant=narrative.shows(effect),
                    higher_is_better=task.higher_is_better,
                    window=point.window,
                )
            )
    return rows


def _estimate(c: Comparison | None) -> Estimate | None:
    if c is None:
        return None
    r = c.result
    return Estimate(c.arm.label, c.arm.reference_label, r.delta, r.ci_low, r.ci_high, c.p_holm)


def dose_response(points: list[SweepPoint]) -> list[SweepPoint]:
    """The K-sweep points worth a dose-response panel: those of a (task, filter, metric) with a series over
    more than one K; a single K shows no dose and its Δ is already in the leaderboard."""
    ks: dict[tuple, set] = {}
    for p in points:
        ks.setdefault((p.task, p.filter, p.metric, p.series), set()).add(p.k)
    swept = {key[:3] for key, series_ks in ks.items() if len(series_ks) > 1}
    return [p for p in points if (p.task, p.filter, p.metric) in swept]


def _skip_empty_figures(model: ModelReport) -> None:
    """Drop one-cell heatmaps and note which figures the design has nothing to show in, so that report.md,
    report.html and report.json agree."""
    flat = [h.task for h in model.heatmaps if len(h.lengths) == 1 and len(h.depths) == 1]
    model.heatmaps = [h for h in model.heatmaps if h.task not in flat]
    drawn = {p.task for p in dose_response(model.k_sweep)}
    single_k = list(dict.fromkeys(p.task for p in model.k_sweep if p.task not in drawn))
    notes = []
    if flat:
        notes.append(f"{', '.join(flat)}: one context length and one depth, so no heatmap.")
    if single_k:
        notes.append(f"{', '.join(single_k)}: one K, so no dose-response figure.")
    model.skipped_figures = notes
