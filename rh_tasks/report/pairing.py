"""Pairing items across conditions: by (task, doc_id, filter), never by position, and only within one model.

Two runs are comparable only if they evaluated the same model (name and, where recorded, weights digest) on
the same task version with the same few-shot setting, and every shared item has the same document and
prompt hash. Anything else is refused with an error that names both runs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_wrappers.condition import Condition

from .derived import derive
from .runs import Item, ReportInputError, Run

logger = logging.getLogger(__name__)

UNMASKED = Condition("none")  # every comparison's reference


@dataclass
class TaskTable:
    """Per-item scores of one task (or a group of tasks, pooled) under every condition of one model.

    Row ``i`` of every array is the same (task, doc_id, filter) item in every condition.
    """

    name: str
    subtasks: list[str]  # the task itself, or a group's tasks
    version: object
    metrics: list[str]
    filters: np.ndarray  # [items] filter name
    items: list[Item]  # the unmasked run's rows, for clusters, lengths and depths
    item_tasks: list[str]  # [items] the task each row comes from
    scores: dict[Condition, dict[str, np.ndarray]]  # condition -> metric -> [items]
    outcomes: dict[Condition, list[str | None]]  # condition -> [items]
    dropped: int  # items not present in every condition
    lower_is_better: frozenset[str] = frozenset()

    @property
    def clusters(self) -> list[str] | None:
        """Cluster label per item (prefixed by its task), or None if no task records a shared context.

        In a group that pools clustered and unclustered tasks, an item without a context is its own cluster.
        """
        if all(item.fields.cluster is None for item in self.items):
            return None
        return [
            f"{task}/{item.fields.cluster}" if item.fields.cluster is not None else f"{task}/doc {item.doc_id}"
            for task, item in zip(self.item_tasks, self.items)
        ]

    @property
    def long_context(self) -> bool:
        return all(item.fields.long_context for item in self.items)


@dataclass
class ModelRuns:
    """All runs of one model: the condition of each, and the run that supplies each (condition, task)."""

    model: str
    conditions: list[Condition]  # sorted, ``none`` first
    tasks: dict[str, dict[Condition, Run]]  # task -> condition -> run
    groups: dict[str, list[str]]  # top-level group -> its leaf tasks that have samples
    head_scores: str | None
    exploratory: set[str] = dataclasses.field(default_factory=set)  # derived tasks outside the corrected family

    @property
    def runs(self) -> list[Run]:
        """Every run once (a derived task's run is a copy of the one that supplied its source)."""
        by_path = {str(r.path): r for by_condition in self.tasks.values() for r in by_condition.values()}
        return [by_path[path] for path in sorted(by_path)]


def group_by_model(runs: list[Run]) -> list[ModelRuns]:
    """Split runs by model, check each model's runs are comparable, and pick the newest run per (condition, task)."""
    by_model: dict[str, list[Run]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    return [_model_runs(model, model_runs) for model, model_runs in sorted(by_model.items())]


def _model_runs(model: str, runs: list[Run]) -> ModelRuns:
    for field_name in ("weights_sha256", "hub_sha"):
        digests = {getattr(r, field_name): r for r in runs if getattr(r, field_name)}
        if len(digests) > 1:
            (d1, r1), (d2, r2) = list(digests.items())[:2]
            raise ReportInputError(
                f"Runs of {model} used different weights ({field_name} {d1[:12]} in {r1.path} vs {d2[:12]} in "
                f"{r2.path}). Compare only runs of the same weights; report each model's runs separately."
            )
    tasks: dict[str, dict[Condition, Run]] = {}
    for run in sorted(runs, key=lambda r: r.date):  # newer runs replace older ones
        for task in run.tasks:
            older = tasks.setdefault(task, {}).get(run.condition)
            if older is not None:
                logger.warning(
                    "%s: %s under %s is taken from %s, not the older %s.",
                    model,
                    task,
                    run.condition.label,
                    run.path,
                    older.path,
                )
            tasks[task][run.condition] = run
    _refuse_ambiguous_labels(model, tasks)
    missing = sorted(t for t, by_condition in tasks.items() if UNMASKED not in by_condition)
    if len(missing) == len(tasks):
        raise ReportInputError(
            f"There is no unmasked run of {model} to compare with (runs: {', '.join(str(r.path) for r in runs)}). "
            "Add a run without masking (rh-masked heads=none, or plain --model hf) of the same model."
        )
    for task in missing:
        logger.warning("%s: %s has no unmasked run, so it is left out of the report.", model, task)
        del tasks[task]
    derived, exploratory = derive(model, tasks)
    tasks |= derived
    conditions = sorted({c for by_condition in tasks.values() for c in by_condition}, key=lambda c: c.sort_key)
    return ModelRuns(
        model=model,
        conditions=conditions,
        tasks=tasks,
        groups=_top_groups(runs, tasks),
        head_scores=next((r.head_scores for r in runs if r.head_scores), None),
        exploratory=exploratory,
    )


def _refuse_ambiguous_labels(model: str, tasks: dict[str, dict[Condition, Run]]) -> None:
    """Conditions that differ only in their heads share a label: no reader of the report could tell them apart."""
    by_label: dict[str, dict[Condition, Run]] = {}
    for by_condition in tasks.values():
        for condition, run in by_condition.items():
            by_label.setdefault(condition.label, {}).setdefault(condition, run)
    for label, variants in by_label.items():
        if len(variants) > 1:
            (first, run1), (second, run2) = sorted(variants.items(), key=lambda v: str(v[1].path))[:2]
            raise ReportInputError(
                f"Two runs of {model} are both {label} but masked different heads ({_heads(first)} in {run1.path}, "
                f"{_heads(second)} in {run2.path}), e.g. a rerun after the head scores changed. Report only the "
                "runs of one head-score file: move the outdated runs out of the folders given."
            )


def _heads(condition: Condition) -> str:
    shown = ", ".join(f"({layer},{head})" for layer, head in condition.heads[:4])
    return shown + (f", … {len(condition.heads)} heads" if len(condition.heads) > 4 else "")


def _top_groups(runs: list[Run], tasks: dict) -> dict[str, list[str]]:
    """Groups that are not inside another group, mapped to their leaf tasks with samples."""
    children: dict[str, list[str]] = {}
    for run in runs:
        for group, members in run.groups.items():
            children.setdefault(group, [m for m in members if m != group])
    nested = {m for members in children.values() for m in members}

    def leaves(name: str, seen: frozenset) -> list[str]:
        if name in tasks:
            return [name]
        return [leaf for m in children.get(name, []) if m not in seen for leaf in leaves(m, seen | {m})]

    groups = {g: sorted(set(leaves(g, frozenset({g})))) for g in children if g not in nested and g not in tasks}
    return {g: members for g, members in groups.items() if members}


def task_table(model_runs: ModelRuns, name: str) -> TaskTable:
    """Aligned per-item scores of a task, or of a group pooled over its tasks (items keyed by subtask too)."""
    subtasks = model_runs.groups.get(name, [name])
    parts = [_leaf_table(model_runs, task) for task in subtasks]
    conditions = set.intersection(*(set(p.scores) for p in parts))
    metrics = [m for m in parts[0].metrics if all(m in p.metrics for p in parts)]
    if not metrics:
        raise ReportInputError(f"The tasks of group {name} share no per-item metric; report them one by one.")
    return TaskTable(
        name=name,
        subtasks=subtasks,
        version=parts[0].version if len(parts) == 1 else None,
        metrics=metrics,
        filters=np.concatenate([p.filters for p in parts]),
        items=[item for p in parts for item in p.items],
        scores={c: {m: np.concatenate([p.scores[c][m] for p in parts]) for m in metrics} for c in conditions},
        outcomes={c: [o for p in parts for o in p.outcomes[c]] for c in conditions},
        dropped=sum(p.dropped for p in parts),
        item_tasks=[p.name for p in parts for _ in p.items],
        lower_is_better=frozenset.union(*(p.lower_is_better for p in parts)),
    )


def _leaf_table(model_runs: ModelRuns, task: str) -> TaskTable:
    by_condition = model_runs.tasks[task]
    base_run = by_condition[UNMASKED]
    base = base_run.tasks[task]
    keys = set(base.items)
    metrics = list(base.metrics)
    for run in by_condition.values():
        other = run.tasks[task]
        _check_comparable(task, base_run, run, base, other)
        keys &= set(other.items)
        metrics = [m for m in metrics if m in other.metrics]
    if not keys:
        raise ReportInputError(
            f"{task}: no document was evaluated under every condition of {model_runs.model}, so nothing can be "
            "paired. Run every condition with the same --limit (or --samples)."
        )
    dropped = len(set().union(*(run.tasks[task].items for run in by_condition.values())) - keys)
    if dropped:
        logger.warning(
            "%s: %d items are not in every condition and are left out; %d are paired.", task, dropped, len(keys)
        )
    order = sorted(keys)
    items = [base.items[k] for k in order]
    scores, outcomes = {}, {}
    for condition, run in by_condition.items():
        rows = [run.tasks[task].items[k] for k in order]
        scores[condition] = {m: np.array([r.scores.get(m, np.nan) for r in rows]) for m in metrics}
        outcomes[condition] = [r.outcome for r in rows]
    metrics = [m for m in metrics if all(np.isfinite(s[m]).all() for s in scores.values())]
    return TaskTable(
        name=task,
        subtasks=[task],
        version=base.version,
        metrics=metrics,
        filters=np.array([item.filter for item in items]),
        items=items,
        scores=scores,
        outcomes=outcomes,
        dropped=dropped,
        item_tasks=[task] * len(items),
        lower_is_better=base.lower_is_better,
    )


def _check_comparable(task: str, base_run: Run, run: Run, base, other) -> None:
    def refuse(what: str) -> ReportInputError:
        return ReportInputError(
            f"{task}: {what} differ between {_where(base_run.path)} and {_where(run.path)}; those runs are not "
            "comparable. Rerun every condition with the same lm-eval task files, prompt options and model."
        )

    if base.version != other.version:
        raise refuse(f"task versions ({base.version} vs {other.version})")
    if base.n_shot != other.n_shot:
        raise refuse(f"few-shot settings ({base.n_shot} vs {other.n_shot})")
    for key in base.items.keys() & other.items.keys():
        a, b = base.items[key], other.items[key]
        if a.doc_hash != b.doc_hash:
            raise refuse(
                f"the documents with doc_id {key[0]} (doc_hash) — the task built different documents or put them "
                "in a different order, e.g. through different --metadata or a model_args key the task also reads —"
            )
        if a.prompt_hash != b.prompt_hash:
            raise refuse(f"the prompts of doc_id {key[0]}, filter {key[1]!r} (prompt_hash)")


def _where(path: Path) -> str:
    return str(path.parent) if path.parent.name else str(path)
