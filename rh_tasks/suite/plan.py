"""Design check before any compute: can each task of a suite show an effect at all, and what would it take?

The report tests one condition against another exactly at the unit of the design (clusters of items sharing a
context), so a task with few contexts cannot reach significance after Holm correction however large the
effect. Pooled random controls and contrasts are tested with t on the spread between seeds plus between
contexts, which needs at least ``MIN_SEEDS`` seeds; the retrieval set's rank among the random sets needs more
(19 for a one-sided 0.05). This builds every task's documents (cheap: no model weights, only the tokenizer),
counts items and contexts, and compares them with the smallest p-value the exact tests could give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rh_tasks.gsm8k.teacher_forced_fields import TWINS
from rh_tasks.report import stats
from rh_tasks.report.derived import interaction_task
from rh_tasks.report.family import arms
from rh_tasks.shared.samples import SampleFields

from .config import SuiteConfig
from .tasks import TaskCache, task_metadata


@dataclass(frozen=True)
class TaskDesign:
    """One headline task of a suite: its items, clusters of items sharing a context, and lm-eval filters."""

    task: str
    items: int
    clusters: int
    filters: int
    loss: bool = False  # its headline metric is a loss such as NLL: continuous, no effect size in points
    derived: bool = False  # made by the report from other tasks' runs: tested, but never evaluated itself


@dataclass(frozen=True)
class TaskCheck:
    design: TaskDesign
    tests: int  # questions of this task in the family (per filter: contrasts and controls against none)
    min_p: float  # smallest p its exact tests (fixed sets, or too few seeds) could give; 0 when it has none
    min_p_holm: float  # the same after Holm correction over the suite's family, in the best case
    clusters_for_floor: int  # fewest clusters whose exact test can reach alpha / family size
    clusters_for_effect: int  # fewest clusters for the planned effect at 80% power after Bonferroni
    exact_tests: int = 0  # of its questions, those tested exactly (with a floor)

    @property
    def reachable(self) -> bool:
        return self.min_p_holm < stats.ALPHA

    @property
    def items_per_cluster(self) -> float:
        return self.design.items / self.design.clusters


@dataclass(frozen=True)
class Plan:
    checks: list[TaskCheck]
    family_size: int
    seeds: int
    seeds_for_rank: int  # fewest seeds whose rank test can give a one-sided p of alpha
    effect: float

    @property
    def seeds_ok(self) -> bool:
        """Enough seeds to estimate the spread between head sets, which the pooled test needs."""
        return self.seeds == 0 or self.seeds >= stats.MIN_SEEDS


def task_designs(config: SuiteConfig, tasks: TaskCache | None = None) -> list[TaskDesign]:
    """Count each task's documents as the suite's lm-eval runs will see them (same build, metadata and limit),
    and add the tasks the report derives from them (chain of thought against direct answers)."""
    from lm_eval.evaluator_utils import get_sample_size

    tasks = TaskCache() if tasks is None else tasks
    designs = []
    for spec in config.tasks:
        items, clusters, filters, loss = 0, 0, 1, False
        for leaf in tasks.leaves(spec.task, task_metadata(config) | spec.metadata, spec.num_fewshot):
            docs = list(leaf.eval_docs)
            limit = get_sample_size(leaf, spec.limit)
            docs = docs[:limit] if limit is not None else docs
            keys = [SampleFields.read(doc).cluster for doc in docs]
            items += len(docs)
            clusters += len({k for k in keys if k is not None}) + sum(k is None for k in keys)
            filters = max(filters, len(getattr(leaf, "_filters", None) or [None]))
            first = next(iter(leaf.config.metric_list or [{}]), {})
            loss = loss or first.get("higher_is_better") is False
        designs.append(TaskDesign(spec.task, items, clusters, filters, loss))
    by_task = {d.task: d for d in designs}
    for cot, direct in TWINS.items():  # the report pairs them question by question into a task of its own
        if cot in by_task and direct in by_task:
            shared = min(by_task[cot].items, by_task[direct].items)
            designs.append(TaskDesign(interaction_task(cot, direct), shared, shared, 1, loss=True, derived=True))
    return designs


def check_design(config: SuiteConfig, designs: list[TaskDesign], effect: float = 0.2) -> Plan:
    """Smallest attainable p per task before and after Holm, and the clusters and seeds an effect needs.

    The family is the report's (:func:`rh_tasks.report.family.arms`): per task and filter, each contrast and
    each control against none the suite declares. Only the exact tests have a floor; a pooled test with enough
    seeds has none, and enters Holm's best case as a test that could give p = 0.
    """
    questions = [arm for arm in arms(config.conditions) if arm.in_family]
    seeds = len({c.seed for c in config.conditions if c.kind == "random"})
    floors, owners, exact = [], [], []
    for number, design in enumerate(designs):
        cluster_floor = stats.min_attainable_p(design.clusters)
        for _ in range(design.filters):
            for arm in questions:
                # a fixed set is tested exactly; a pool of seeds by t, unless too few seeds make it exact too
                sets = arm.reference if arm.kind == "contrast" else arm.members
                fixed = not arm.sampled_sets or len(sets) < stats.MIN_SEEDS
                floors.append(cluster_floor if fixed else 0.0)
                exact.append(fixed)
                owners.append(number)
    family = len(floors)
    holm = stats.holm(floors) if floors else []
    checks = []
    for number, design in enumerate(designs):
        mine = [(f, h) for f, h, owner, e in zip(floors, holm, owners, exact) if owner == number and e]
        checks.append(
            TaskCheck(
                design=design,
                tests=sum(owner == number for owner in owners),
                min_p=min((f for f, _ in mine), default=0.0),
                min_p_holm=min((float(h) for _, h in mine), default=0.0),
                clusters_for_floor=stats.units_for_floor(max(family, 1)),
                clusters_for_effect=stats.clusters_needed(effect, tests=max(family, 1)),
                exact_tests=len(mine),
            )
        )
    return Plan(checks, family, seeds, stats.seeds_for_rank(), effect)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def describe(plan: Plan) -> list[tuple[bool, str]]:
    """(problem?, sentence) per task and for the random seeds."""
    lines = []
    points = f"{plan.effect * 100:g} points"
    for check in plan.checks:
        d = check.design
        per = check.items_per_cluster
        unit = "contexts" if d.clusters < d.items else "items"
        shape = (
            f"{_count(d.items, 'item')} in {_count(d.clusters, 'context')}"
            if d.clusters < d.items
            else _count(d.items, "independent item")
        )
        if d.loss:
            sizing = (
                "Its scores are a continuous loss (NLL), so no effect in points applies: the report gives the "
                "smallest detectable change from the run's own spread."
            )
        else:
            need = math.ceil(check.clusters_for_effect * per)
            sizing = (
                f"An effect of {points} needs about {check.clusters_for_effect} {unit}"
                + (f" ({need} items at {per:g} per context)" if d.clusters < d.items else "")
                + f" for {stats.POWER:.0%} power after correction over {plan.family_size} tests."
            )
        if not check.reachable:
            lines.append(
                (
                    True,
                    f"{d.task}: {shape}; no test can give p below {check.min_p:.3g}, at best {check.min_p_holm:.3g} "
                    f"after Holm correction over {plan.family_size} tests, so this design cannot show any effect "
                    f"as significant. At least {check.clusters_for_floor} {unit} are needed to reach it at all. "
                    + sizing,
                )
            )
        elif not check.exact_tests:
            lines.append(
                (
                    False,
                    f"{d.task}: {shape}; its {check.tests} questions are tested with t on the spread between seeds "
                    "plus between contexts, which has no floor. " + sizing,
                )
            )
        else:
            lines.append(
                (
                    False,
                    f"{d.task}: {shape}; smallest attainable p {check.min_p:.3g} ({check.min_p_holm:.3g} after "
                    f"Holm). " + sizing,
                )
            )
    if plan.seeds and not plan.seeds_ok:
        lines.append(
            (
                True,
                f"random: {_count(plan.seeds, 'seed')}; the spread between head sets cannot be estimated from "
                f"fewer than {stats.MIN_SEEDS}, so pooled random results will hold only for the drawn sets. Use at "
                f"least {stats.MIN_SEEDS} seeds.",
            )
        )
    elif plan.seeds:
        floor = 1 / (plan.seeds + 1)
        lines.append(
            (
                False,
                f"random: {_count(plan.seeds, 'seed')}; pooled random controls and contrasts are tested with t on "
                "the spread between seeds plus between contexts, with min(seeds, contexts) - 1 degrees of "
                f"freedom. {_pooled_bar(plan)}Would a random set do as much damage as the retrieval set? Its rank "
                f"among the {plan.seeds} random sets can give a one-sided p of {floor:.3g} at best"
                + (f"; {plan.seeds_for_rank} seeds are needed for {stats.ALPHA}." if floor > stats.ALPHA else "."),
            )
        )
    return lines


def _pooled_bar(plan: Plan) -> str:
    """How far from 0, in standard errors, a pooled question must lie to pass Holm's first step: few seeds
    leave its t test few degrees of freedom, however many contexts a task has."""
    contexts = max((c.design.clusters for c in plan.checks if c.tests > c.exact_tests), default=None)
    if contexts is None:
        return ""

    def bar(seeds: int) -> str:
        return f"{stats.critical_t(plan.family_size, min(seeds, contexts) - 1):.2f}"

    more = [seeds for seeds in (10, 20) if plan.seeds < seeds <= contexts]
    return (
        f"With {plan.seeds} seeds, even in the task with the most contexts ({contexts}), an estimate must lie "
        f"{bar(plan.seeds)} standard errors from 0 to be significant at Holm's first step over {plan.family_size} "
        "tests" + "".join(f"; {bar(seeds)} with {seeds} seeds" for seeds in more)
        + f" ({stats.critical_t(plan.family_size, math.inf):.2f} at the limit). "
    )
