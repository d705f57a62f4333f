"""The numbers of a report, as one JSON-ready dict: paired comparisons against the unmasked run, causal
contrasts, the K-sweep, heatmap grids, failure counts and a cross-model ranking.

Comparisons per (task, filter, metric):

- every masked condition against ``none``;
- ``random@K``: the random-head seeds at one K pooled (each item's score averaged over the seeds). The seeds
  are a sample of head sets, so with enough of them its interval and test account for the spread between
  sets as well as between clusters of items (see ``stats.compare_paired``); each seed is also shown alone,
  as an exploratory row;
- the causal contrast ``retrieval@K − random@K`` = Δ(retrieval) − Δ(random), i.e. the paired difference
  between the retrieval condition and the pooled random control on the same items, also a sample of sets.

Every comparison states its unit (items, clusters of items sharing a context, seeds), its number of clusters
G and seeds S, and the smallest p-value its design can reach, before and after Holm correction.

The multiple-testing family is every comparison of a headline task's primary metric (the first metric the
task logs) except single random seeds: the pooled random control stands for them. Holm (1979) controls the
family-wise error over it and Benjamini–Hochberg (1995) is given alongside. Other rows are exploratory.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model_wrappers.condition import Condition

from . import failures, narrative, stats
from .pairing import ModelRuns, TaskTable, group_by_model, task_table
from .runs import Run

logger = logging.getLogger(__name__)

SCHEMA = "rh-eval-report/2"  # 2: unit, n_clusters, n_seeds, min_attainable_p per comparison
MINUS = "\u2212"


@dataclass(frozen=True)
class Settings:
    confidence: float = stats.CONFIDENCE
    n_resamples: int = stats.N_RESAMPLES
    seed: int = 0
    headline_k: int | None = None  # default: the K with the most random seeds (smallest K on ties)


def analyse(runs: list[Run], settings: Settings = Settings()) -> dict:
    """Everything report.json holds; raises ReportInputError when runs cannot be compared."""
    analysed = [_analyse_model(model_runs, settings) for model_runs in group_by_model(runs)]
    models = [model for model, _ in analysed]
    family = [c for m in models for c in m["comparisons"] if c["in_family"]]
    p_values = [c["p_value"] for c in family]
    floors = stats.holm([c["min_attainable_p"] for c in family])  # Holm is monotone: its best case
    for comparison, p_holm, p_bh, floor in zip(
        family, stats.holm(p_values), stats.benjamini_hochberg(p_values), floors
    ):
        comparison["p_holm"], comparison["p_bh"] = float(p_holm), float(p_bh)
        comparison["min_attainable_p_holm"] = float(floor)
    for model in models:
        _design_reach(model)
        model["statements"] = narrative.statements(model, len(family), settings.confidence)
    return {
        "schema": SCHEMA,
        "settings": {
            **asdict(settings),
            "alpha": stats.ALPHA,
            "power": stats.POWER,
            "min_seeds": stats.MIN_SEEDS,
            "bootstrap": "percentile; whole clusters of items resampled with replacement, and random head sets "
            f"(seeds) too when there are at least {stats.MIN_SEEDS}",
            "tests": "sign-flip on cluster sums (exact by enumeration or convolution, else Monte Carlo), exact "
            "McNemar when every cluster holds one 0/1 item; pooled random seeds and contrasts must reject both "
            "between seeds and between clusters (the larger p-value); two-sided",
            "standard_error": "CRV1 clustered by shared context where the task records one (Miller 2024)",
            "mde": "t quantiles with G - 1 degrees of freedom on the clustered standard error",
            "family_size": len(family),
        },
        "runs": [
            {"path": str(r.path), "model": r.model, "condition": r.condition.label, "tasks": sorted(r.tasks)}
            for r in sorted(runs, key=lambda r: str(r.path))
        ],
        "models": models,
        "cross_model": _cross_model(analysed) if len(models) > 1 else [],
    }


def _analyse_model(model_runs: ModelRuns, settings: Settings) -> tuple[dict, list[tuple[dict, _Arm]]]:
    """The model's part of report.json, and each of its comparisons with the arm it compares."""
    grouped = {t for members in model_runs.groups.values() for t in members}
    headline = sorted(model_runs.groups) + sorted(t for t in model_runs.tasks if t not in grouped)
    conditions = {c.label: c for c in model_runs.conditions}
    headline_k = _headline_k(model_runs.conditions, settings.headline_k, model_runs.model)
    tasks, compared, heatmaps, failure_counts = [], [], [], []
    for name in headline + sorted(grouped):
        table = task_table(model_runs, name)
        is_headline = name in headline
        arms = _arms(table, conditions)
        rows = [
            (
                _compare(model_runs.model, table, arm, f, metric, settings, is_headline and metric == table.metrics[0]),
                arm,
            )
            for arm in arms
            for f in _filters(table)
            for metric in table.metrics
        ]
        compared.extend(rows)
        tasks.append(_task_summary(table, [row for row, _ in rows], is_headline))
        if name not in model_runs.groups and all(i.length is not None and i.depth is not None for i in table.items):
            heatmaps.append(_heatmap(table, arms))
            if all(i.outcome is not None for i in table.items):
                failure_counts.append(_failures(table, arms))
    report = {
        "model": model_runs.model,
        "runs": [str(r.path) for r in model_runs.runs],
        "conditions": [
            {
                "label": c.label,
                "kind": c.kind,
                "k": c.k,
                "seed": c.seed,
                "match": c.match,
                "unit": c.unit,
                "mode": c.mode,
                "phase": c.phase,
                "heads": [list(h) for h in c.heads],
            }
            for c in model_runs.conditions
        ],
        "headline_k": headline_k,
        "tasks": tasks,
        "comparisons": [row for row, _ in compared],
        "k_sweep": _k_sweep(compared),
        "heatmaps": heatmaps,
        "failures": failure_counts,
        "head_map": _head_map(model_runs, headline_k),
    }
    return report, compared


def _design_reach(model: dict) -> None:
    """Per task and filter: the smallest p-value any of its headline comparisons could reach, before and after
    Holm, so readers (and the narrative) know when the design could not have shown an effect at all."""
    for task in model["tasks"]:
        for f, summary in task["filters"].items():
            mine = [c for c in model["comparisons"] if c["in_family"] and (c["task"], c["filter"]) == (task["task"], f)]
            summary["min_attainable_p_holm"] = min((c["min_attainable_p_holm"] for c in mine), default=None)


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


@dataclass(frozen=True)
class _Arm:
    """Something compared against a reference on the same items: a condition, a pool of seeds, a contrast."""

    label: str
    kind: str  # retrieval | random | random_seed | explicit | contrast
    k: int | None
    members: tuple[str, ...]  # condition labels averaged per item
    reference: tuple[str, ...] = ("none",)  # condition labels averaged per item, subtracted from members
    reference_label: str = "none"
    in_family: bool = True
    series: str = ""  # retrieval and random: the label without K, one line of a K sweep
    variants: int = 0  # how many of its conditions have a setting other than the default unit, mode and phase
    layer_matched: bool = False

    @property
    def sampled_sets(self) -> bool:
        """Pooled random seeds (and contrasts against them) are a sample of head sets, not fixed conditions."""
        return self.kind in ("random", "contrast")


def _arms(table: TaskTable, conditions: dict[str, Condition]) -> list[_Arm]:
    present = [conditions[label] for label in conditions if label in table.scores and label != "none"]
    pools: dict[str, list[Condition]] = {}
    for c in present:
        if c.kind == "random":
            pools.setdefault(c.pool_label, []).append(c)
    arms = [_Arm(c.label, c.kind, c.k, (c.label,), **_about(c)) for c in present if c.kind in ("retrieval", "explicit")]
    for label, seeds in pools.items():
        members = tuple(c.label for c in seeds)
        arms.append(_Arm(label, "random", seeds[0].k, members, **_about(seeds[0])))
        if len(seeds) > 1:
            arms.extend(_Arm(c.label, "random_seed", c.k, (c.label,), in_family=False, **_about(c)) for c in seeds)
    for c in present:
        if c.kind != "retrieval":
            continue
        for label, seeds in pools.items():
            control = seeds[0]
            if (control.k, control.unit, control.mode, control.phase) == (c.k, c.unit, c.mode, c.phase):
                members = tuple(s.label for s in seeds)
                arms.append(
                    _Arm(
                        f"{c.label} {MINUS} {label}",
                        "contrast",
                        c.k,
                        (c.label,),
                        members,
                        label,
                        variants=bool(c.qualifiers) + bool(control.qualifiers),
                        layer_matched=control.match == "layer",
                    )
                )
    return arms


def _about(c: Condition) -> dict:
    return {"series": c.series, "variants": int(bool(c.qualifiers)), "layer_matched": c.match == "layer"}


def _filters(table: TaskTable) -> list[str]:
    return sorted(set(table.filters.tolist()))


def _mean_of(table: TaskTable, labels: tuple[str, ...], metric: str) -> np.ndarray:
    return np.mean([table.scores[label][metric] for label in labels], axis=0)


def _stack(table: TaskTable, labels: tuple[str, ...], metric: str, rows: np.ndarray) -> np.ndarray:
    """``[len(labels), items]`` scores: one row per condition, e.g. per random seed."""
    return np.stack([table.scores[label][metric][rows] for label in labels])


def _compare(
    model: str, table: TaskTable, arm: _Arm, filter_name: str, metric: str, settings: Settings, primary: bool
) -> dict:
    rows = table.filters == filter_name
    clusters = table.clusters
    key = "|".join((model, table.name, filter_name, metric, arm.label))
    result = stats.compare_paired(
        _stack(table, arm.reference, metric, rows),
        _stack(table, arm.members, metric, rows),
        clusters=None if clusters is None else [c for c, keep in zip(clusters, rows) if keep],
        sampled_sets=arm.sampled_sets,
        confidence=settings.confidence,
        n_resamples=settings.n_resamples,
        seed=[settings.seed, zlib.crc32(key.encode())],
    )
    return {
        "task": table.name,
        "filter": filter_name,
        "metric": metric,
        "condition": arm.label,
        "kind": arm.kind,
        "k": arm.k,
        "reference": arm.reference_label,
        **result.to_dict(),
        "in_family": primary and arm.in_family,
        "p_holm": None,
        "p_bh": None,
        "min_attainable_p_holm": None,
    }


def _task_summary(table: TaskTable, rows: list[dict], is_headline: bool) -> dict:
    """Per task: item counts, unmasked score and the minimum detectable effect of its primary metric."""
    primary = table.metrics[0]
    values = np.concatenate([s[m] for s in table.scores.values() for m in table.metrics])
    bounded = bool(np.all((values >= 0) & (values <= 1)))  # scores in [0, 1] are shown as points x100
    per_filter = {}
    for f in _filters(table):
        mine = [r for r in rows if r["filter"] == f and r["metric"] == primary and r["reference"] == "none"]
        ses = [r["se_clustered"] if r["se_clustered"] is not None else r["se"] for r in mine]
        ses = [s for s in ses if s is not None and np.isfinite(s) and s > 0]
        base = table.scores["none"][primary][table.filters == f]
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
        per_filter[f] = {
            "n": int(base.size),
            "n_clusters": int(groups),
            "unit": "cluster" if groups < base.size else "item",
            "min_attainable_p": stats.min_attainable_p(groups),
            "baseline": float(base.mean()),
            "mde": stats.minimum_detectable_effect(se, groups),
            "mde_basis": basis + f"; t with {groups - 1} degrees of freedom",
        }
    return {
        "task": table.name,
        "subtasks": table.subtasks,
        "version": table.version,
        "headline": is_headline,
        "metrics": table.metrics,
        "primary_metric": primary,
        "bounded": bounded,
        "long_context": all(i.length is not None and i.depth is not None for i in table.items),
        "dropped_items": table.dropped,
        "filters": per_filter,
    }


def _panels(table: TaskTable, arms: list[_Arm]) -> list[tuple[str, tuple[str, ...]]]:
    """Conditions shown side by side: none, each retrieval K, each pooled random K, explicit sets."""
    chosen = [a for a in arms if a.kind in ("retrieval", "random", "explicit")]
    chosen.sort(key=lambda a: (narrative.ARM_ORDER[a.kind], a.k or 0, a.label))
    return [("none", ("none",))] + [(a.label, a.members) for a in chosen]


def _heatmap(table: TaskTable, arms: list[_Arm]) -> dict:
    """Mean primary score per (depth, length) cell (x100 for [0, 1] scores), rows = depths, columns = lengths."""
    metric = table.metrics[0]
    f = _filters(table)[0]
    rows = table.filters == f
    lengths = np.array([i.length for i in table.items])[rows]
    depths = np.array([i.depth for i in table.items])[rows]
    grid_l, grid_d = sorted(set(lengths.tolist())), sorted(set(depths.tolist()))
    everything = np.concatenate([s[metric] for s in table.scores.values()])
    scale = 100 if np.all((everything >= 0) & (everything <= 1)) else 1
    panels = []
    for label, members in _panels(table, arms):
        scores = _mean_of(table, members, metric)[rows] * scale
        values = [
            [float(scores[cell].mean()) if (cell := (depths == d) & (lengths == l)).any() else None for l in grid_l]
            for d in grid_d
        ]
        panels.append({"condition": label, "values": values})
    return {
        "task": table.name,
        "metric": metric,
        "filter": f,
        "scale": scale,
        "lengths": grid_l,
        "depths": grid_d,
        "panels": panels,
    }


def _failures(table: TaskTable, arms: list[_Arm]) -> dict:
    """Counts of failures.OUTCOMES per condition; a pooled random control sums its seeds."""
    f = _filters(table)[0]
    rows = table.filters == f
    panels = []
    for label, members in _panels(table, arms):
        outcomes = [o for m in members for o, keep in zip(table.outcomes[m], rows) if keep]
        panels.append(
            {
                "condition": label,
                "n": len(outcomes),
                "n_seeds": len(members) if label != "none" else None,
                "counts": {o: outcomes.count(o) for o in failures.OUTCOMES},
            }
        )
    return {"task": table.name, "filter": f, "panels": panels}


def _k_sweep(compared: list[tuple[dict, _Arm]]) -> list[dict]:
    """Δ and CI per K of each retrieval and pooled-random series, for the headline tasks' primary metrics."""
    sweep = []
    for c, arm in compared:
        if c["in_family"] and c["kind"] in ("retrieval", "random"):
            sweep.append(
                {
                    key: c[key]
                    for key in (
                        "task",
                        "filter",
                        "metric",
                        "kind",
                        "k",
                        "delta",
                        "ci_low",
                        "ci_high",
                        "n",
                        "n_clusters",
                        "n_seeds",
                        "unit",
                        "conditional",
                        "p_holm",
                    )
                }
                | {"series": arm.series}
            )
    return sorted(sweep, key=lambda r: (r["task"], r["filter"], r["series"], r["k"]))


def _head_map(model_runs: ModelRuns, headline_k: int | None) -> dict | None:
    """Retrieval scores per layer x head, with the heads masked at the headline K (retrieval and random)."""
    from model_wrappers.head_scores import HeadScoreFileError, load_head_scores  # lazy: model_wrappers imports torch

    masked = [c for c in model_runs.conditions if c.kind in ("retrieval", "random") and c.k == headline_k]
    if not model_runs.head_scores or not masked:
        return None
    candidates = [Path(model_runs.head_scores)] + [r.path.parent / model_runs.head_scores for r in model_runs.runs]
    path = next((p for p in candidates if p.is_file()), None)
    entry = {
        "head_scores": model_runs.head_scores,
        "k": headline_k,
        "masked": [{"condition": c.label, "kind": c.kind, "heads": [list(h) for h in c.heads]} for c in masked],
    }
    if path is None:
        logger.warning("Head-score file %s not found; the layer x head map is left out.", model_runs.head_scores)
        return entry | {"means": None}
    try:
        scores = load_head_scores(path)
        if scores.kv_heads_only or scores.ranked is not None:  # no score per query head without the model
            logger.warning("The layer x head map is left out: %s has no score per query head.", path)
            return entry | {"means": None}
        return entry | {"means": scores.means.tolist()}
    except HeadScoreFileError as err:
        logger.warning("The layer x head map is left out: %s", err)
        return entry | {"means": None}


def _cross_model(analysed: list[tuple[dict, list[tuple[dict, _Arm]]]]) -> list[dict]:
    """One row per model at its headline K, ranked by dependence = −mean causal contrast on long-context tasks."""
    rows = []
    for model, compared in analysed:
        k = model["headline_k"]
        tasks = {}
        for task in (t for t in model["tasks"] if t["headline"]):
            f = next(iter(task["filters"]))
            pick: dict[str, dict] = {}
            for c, arm in sorted(compared, key=lambda pair: (pair[1].variants, pair[0]["condition"])):
                if (
                    c["task"] == task["task"]
                    and c["filter"] == f
                    and c["in_family"]
                    and c["k"] == k
                    and c["kind"] in ("retrieval", "random", "contrast")
                    and not arm.layer_matched
                ):
                    pick.setdefault(c["kind"], c)  # the default unit, mode and phase first; variants never replace it
            tasks[task["task"]] = {
                "metric": task["primary_metric"],
                "filter": f,
                "baseline": task["filters"][f]["baseline"],
                "long_context": task["long_context"],
                "bounded": task["bounded"],
                **{kind: _brief(pick.get(kind)) for kind in ("retrieval", "random", "contrast")},
            }
        long_context = [t for t in tasks.values() if t["long_context"] and t["contrast"]]
        basis = long_context or [t for t in tasks.values() if t["contrast"]]
        dependence = -float(np.mean([t["contrast"]["delta"] for t in basis])) if basis else None
        rows.append(
            {
                "model": model["model"],
                "headline_k": k,
                "tasks": tasks,
                "dependence": dependence,
                "dependence_basis": "long-context tasks" if long_context else "all tasks",
            }
        )
    rows.sort(key=lambda r: (r["dependence"] is None, -(r["dependence"] or 0.0), r["model"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _brief(comparison: dict | None) -> dict | None:
    if comparison is None:
        return None
    keys = ("condition", "delta", "ci_low", "ci_high", "n", "n_clusters", "n_seeds", "unit", "conditional", "p_holm")
    return {key: comparison[key] for key in keys}
