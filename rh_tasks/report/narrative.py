"""Plain-language findings: what each headline comparison shows, whether its interval includes 0, and how
many items the claim rests on. Shared number formatting for the Markdown and HTML renderers."""

from __future__ import annotations

import math

from . import stats
from .schema import Comparison, FilterSummary, ModelReport, TaskSummary

ARM_ORDER = {"retrieval": 0, "random": 1, "contrast": 2, "explicit": 3}  # how reports list comparisons
_UNIT_WORDS = {
    "item": "items",
    "cluster": "contexts",
    "seed and item": "seeds and items",
    "seed and cluster": "seeds and contexts",
}


def format_value(value: float | None, bounded: bool, *, signed: bool = False) -> str:
    """Scores in [0, 1] as points (x100, one decimal); anything else with three significant digits."""
    if value is None or not math.isfinite(value):
        return "n/a"
    shown = value * 100 if bounded else value
    spec = ("+" if signed else "") + (".1f" if bounded else ".3g")
    text = format(shown, spec)
    if float(text) == 0:  # no "-0.0" from rounding noise
        text = format(0.0, spec.lstrip("+"))
    return text.replace("-", "\u2212")


def format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def stars(p_holm: float | None) -> str:
    """Significance marks on the Holm-adjusted p-value: *** < 0.001, ** < 0.01, * < 0.05."""
    if p_holm is None:
        return ""
    return next((mark for cut, mark in ((0.001, "***"), (0.01, "**"), (stats.ALPHA, "*")) if p_holm < cut), "")


def includes_zero(comparison: Comparison) -> bool:
    return comparison.result.ci_low <= 0 <= comparison.result.ci_high


def listing_order(comparison: Comparison) -> tuple:
    """How reports list comparisons: by kind (:data:`ARM_ORDER`), then K, then label."""
    return ARM_ORDER[comparison.arm.kind], comparison.arm.k or 0, comparison.arm.label


def design(summary: FilterSummary) -> str:
    """``18 items in 6 contexts`` or ``57 independent items``: the unit the statistics work at."""
    if summary.n_clusters < summary.n:
        return f"{summary.n} paired items in {summary.n_clusters} shared contexts"
    return f"{summary.n} independent paired items"


def statements(model: ModelReport, family_size: int, confidence: float) -> list[str]:
    """One paragraph per headline task (and filter) at the model's headline K."""
    paragraphs = []
    for task in (t for t in model.tasks if t.headline):
        metric, bounded = task.primary_metric, task.bounded
        for f, summary in task.filters.items():
            chosen = _headline_comparisons(model, task, f)
            where = f", filter {f}" if len(task.filters) > 1 else ""
            unit = "context" if summary.n_clusters < summary.n else "item"
            reach = summary.min_attainable_p_holm
            lines = [
                f"{task.task} ({metric}{where}): {design(summary)}; the {unit} is the unit of analysis, so no test "
                f"can give p below {format_p(summary.min_attainable_p)}"
                + (f" ({format_p(reach)} after Holm correction over {family_size} tests)" if reach is not None else "")
                + f". Unmasked score {format_value(summary.baseline, bounded)}."
            ]
            if _cannot_tell(summary, bounded):
                lines.append(
                    "The model scores 0 on these items unmasked, so there is no ability here for masking to remove: "
                    "this task cannot tell whether the ability depends on retrieval heads in this model."
                )
            if reach is not None and reach >= stats.ALPHA:
                lines.append(
                    f"With these {unit}s no masked condition's exact test against the unmasked run can be "
                    f"significant after Holm correction; more {unit}s are needed (rh-eval plan says how many)."
                )
            lines += [_describe(c, bounded, family_size, confidence) for c in chosen]
            points = " points" if bounded else ""
            if summary.mde is not None:
                lines.append(
                    f"With {summary.n_clusters} {unit}s the smallest effect detectable with {stats.POWER:.0%} power "
                    f"at \u03b1 = {stats.ALPHA} is about {format_value(summary.mde, bounded)}{points}"
                    + ("; a smaller true effect could be missed." if any(includes_zero(c) for c in chosen) else ".")
                )
            else:
                lines.append(
                    f"With {summary.n_clusters} {unit}s no effect of any size is detectable at \u03b1 = {stats.ALPHA}."
                )
            paragraphs.append(" ".join(lines))
    return paragraphs


def _cannot_tell(summary: FilterSummary, bounded: bool) -> bool:
    """A [0, 1] score at 0 unmasked leaves masking nothing to remove, whatever the masked runs score."""
    return bounded and summary.baseline == 0


def _headline_comparisons(model: ModelReport, task: TaskSummary, f: str) -> list[Comparison]:
    """The task's comparisons in the corrected family at the headline K, in listing order."""
    return sorted(
        (
            c
            for c in model.comparisons
            if (c.task, c.filter, c.metric) == (task.task, f, task.primary_metric)
            and c.in_family
            and (model.headline_k is None or c.arm.k in (None, model.headline_k))
        ),
        key=listing_order,
    )


def answers(model: ModelReport) -> list[str]:
    """One sentence per headline task (its first filter): what masking its retrieval heads does, at the headline K.

    The causal contrast (retrieval minus random heads) answers when the suite has a random control, else
    retrieval (or explicit) heads against the unmasked run.
    """
    sentences = []
    for task in (t for t in model.tasks if t.headline):
        f = next(iter(task.filters))
        name = task.task + (f" ({f})" if len(task.filters) > 1 else "")
        chosen = _headline_comparisons(model, task, f)
        c = next((c for kind in ("contrast", "retrieval", "explicit") for c in chosen if c.arm.kind == kind), None)
        if c is None:
            sentences.append(f"{name}: no masked condition to compare.")
        elif _cannot_tell(task.filters[f], task.bounded):
            sentences.append(f"{name}: the model scores 0 on it unmasked, so it cannot tell ({_numbers(c, True)}).")
        else:
            sentences.append(f"{name}: {_answer(c, task.bounded)}")
    return sentences


def _numbers(c: Comparison, bounded: bool) -> str:
    r = c.result
    return (
        f"{c.arm.label}: {format_value(r.delta, bounded, signed=True)}{' points' if bounded else ''} "
        f"[{format_value(r.ci_low, bounded, signed=True)}, {format_value(r.ci_high, bounded, signed=True)}]"
    )


def rank_words(c: Comparison) -> str:
    """``more damaging than 10 of 10 random sets (rank p = 0.091, one-sided)``, or "" without a rank."""
    if c.rank is None:
        return ""
    return (
        f"more damaging than {c.rank.beaten} of {c.rank.sets} random sets "
        f"(rank p = {format_p(c.rank.p_value)}, one-sided)"
    )


def _answer(c: Comparison, bounded: bool) -> str:
    r, numbers = c.result, _numbers(c, bounded)
    if c.rank is not None:
        numbers += f"; {rank_words(c)}"
    if includes_zero(c):
        return f"no effect shows ({numbers}; the interval includes 0)."
    direction = "lowers" if r.delta < 0 else "raises"
    effect = (
        f"masking its retrieval heads {direction} the score more than masking random heads"
        if c.arm.kind == "contrast"
        else f"masking {c.arm.label} {direction} the score"
    )
    if c.p_holm is not None and c.p_holm < stats.ALPHA:
        return f"{effect} ({numbers}, Holm p = {format_p(c.p_holm)})."
    if c.min_attainable_p_holm is not None and c.min_attainable_p_holm >= stats.ALPHA:
        return (
            f"{effect} ({numbers}), but this design cannot show it as significant (its smallest Holm p is "
            f"{format_p(c.min_attainable_p_holm)})."
        )
    return f"{effect} ({numbers}), not significant after Holm correction (Holm p = {format_p(c.p_holm)})."


def _units(c: Comparison) -> str:
    """``n = 18 items in 6 contexts, 5 seeds``."""
    r = c.result
    text = f"n = {r.n} items" + (f" in {r.n_clusters} contexts" if r.n_clusters < r.n else "")
    return text + (f", {r.n_seeds} seeds" if r.n_seeds else "")


def _describe(c: Comparison, bounded: bool, family_size: int, confidence: float) -> str:
    r, label = c.result, c.arm.label
    unit = " points" if bounded else ""
    plural = "s" if r.n_seeds != 1 else ""
    name = label + (f" (pooled over {r.n_seeds} seed{plural})" if c.arm.kind == "random" else "")
    if c.arm.kind == "contrast":
        name = f"Causal contrast {label} ({r.n_seeds} random seed{plural})"
    estimate = (
        f"{format_value(r.delta, bounded, signed=True)}{unit} ({confidence:.0%} CI "
        f"{format_value(r.ci_low, bounded, signed=True)} to {format_value(r.ci_high, bounded, signed=True)}; "
        f"p = {format_p(r.p_value)}, Holm p = {format_p(c.p_holm)}; {_units(c)})"
    )
    caveat = f" Null: {c.null}." if c.null else ""
    if c.rank is not None:
        floor = 1 / (c.rank.sets + 1)
        caveat += f" Would a random set do as much damage? {c.arm.members[0].label} is {rank_words(c)}" + (
            f"; with {c.rank.sets} sets the rank cannot give p below {format_p(floor)} "
            f"({stats.seeds_for_rank()} sets are needed for {stats.ALPHA})."
            if floor > stats.ALPHA
            else "."
        )
    if r.conditional:
        caveat += (
            f" With {r.n_seeds} random head set{plural} the spread between sets cannot "
            f"be estimated (it takes at least {stats.MIN_SEEDS}), so this holds only for the drawn set"
            f"{plural}, not for random heads in general."
        )
    if includes_zero(c):
        return f"{name}: no effect appears, {estimate}; the interval includes 0.{caveat}"
    direction = "lower" if r.delta < 0 else "higher"
    what = "than under random-head masking" if c.arm.kind == "contrast" else "than unmasked"
    if c.p_holm is not None and c.p_holm < stats.ALPHA:
        return (
            f"{name}: the score is {direction} {what}, {estimate}, significant after Holm correction over "
            f"{family_size} tests.{caveat}"
        )
    if c.min_attainable_p_holm is not None and c.min_attainable_p_holm >= stats.ALPHA:
        return (
            f"{name}: the score is {direction} {what}, {estimate}; the interval excludes 0, but with these "
            f"{_UNIT_WORDS[r.unit]} no test could be significant after Holm correction over {family_size} tests "
            f"(the smallest attainable Holm p is {format_p(c.min_attainable_p_holm)}), so this is not evidence "
            f"of an effect.{caveat}"
        )
    return (
        f"{name}: the score is {direction} {what}, {estimate}; the interval excludes 0 but the effect is not "
        f"significant after Holm correction over {family_size} tests.{caveat}"
    )
