"""Plain-language findings: what each headline comparison shows, whether its interval includes 0, and how
many items the claim rests on. Shared number formatting for the Markdown and HTML renderers."""

from __future__ import annotations

import math

from . import stats
from .derived import is_interaction
from .picks import Point, answer_points, swept_ks
from .schema import Comparison, FilterSummary, ModelReport, TaskSummary

ARM_ORDER = {"retrieval": 0, "random": 1, "contrast": 2, "explicit": 3}  # how reports list comparisons


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
    """Whether the interval admits no change; a comparison with no interval (no spread at all) shows none."""
    low, high = comparison.result.ci_low, comparison.result.ci_high
    return low is None or high is None or low <= 0 <= high


def listing_order(comparison: Comparison) -> tuple:
    """How reports list comparisons: by kind (:data:`ARM_ORDER`), then K, then label."""
    return ARM_ORDER[comparison.arm.kind], comparison.arm.k or 0, comparison.arm.label


def statements(model: ModelReport, family_size: int, confidence: float) -> list[str]:
    """One short line per headline comparison at every K of the design (estimate, interval, Holm p, what it
    means), and one per task where the model or the design leaves nothing to test. The design itself (items,
    contexts, seeds, floors, detectable effect) is in the leaderboard, not repeated here."""
    lines = []
    for task in (t for t in model.tasks if t.headline):
        for f, summary in task.filters.items():
            name = task.task + (f" ({f})" if len(task.filters) > 1 else "")
            unit = "contexts" if summary.n_clusters < summary.n else "items"
            if _cannot_tell(summary, task.bounded):
                lines.append(f"{name}: the model scores 0 on it unmasked, so masking has nothing to remove here.")
            elif summary.min_attainable_p_holm is not None and summary.min_attainable_p_holm >= stats.ALPHA:
                lines.append(
                    f"{name}: with {summary.n_clusters} {unit} no exact test against the unmasked run can be "
                    f"significant after Holm correction over {family_size} tests (rh-eval plan says how many "
                    "are needed)."
                )
            lines += [f"{name} · {_line(c, task.bounded, confidence)}" for c in _headline_comparisons(model, task, f)]
    return lines


def _line(c: Comparison, bounded: bool, confidence: float) -> str:
    """``retrieval@5 vs none: −73.1 points [−92.8, −53.4] (95% CI), Holm p = 5.7e-05***: lower than unmasked.``"""
    r = c.result
    estimate = (
        f"{format_value(r.delta, bounded, signed=True)}{' points' if bounded else ''} "
        f"[{format_value(r.ci_low, bounded, signed=True)}, {format_value(r.ci_high, bounded, signed=True)}] "
        f"({confidence:.0%} CI), Holm p = {format_p(c.p_holm)}{stars(c.p_holm)}"
    )
    what = "than with random heads" if c.arm.kind == "contrast" else "than unmasked"
    if not c.in_family:
        estimate = estimate.replace("Holm p = n/a", f"p = {format_p(r.p_value)}, exploratory (outside the family)")
    if includes_zero(c):
        meaning = "no effect shown (the interval includes 0)"
    elif not c.in_family:
        meaning = f"{'lower' if r.delta < 0 else 'higher'} {what}, uncorrected"
    elif shows(c):
        meaning = f"{'lower' if r.delta < 0 else 'higher'} {what}"
    else:
        direction = "lower" if r.delta < 0 else "higher"
        meaning = f"{direction} {what} (p = {format_p(r.p_value)}), not significant after Holm"
    if c.rank is not None:
        meaning += f"; {rank_words(c)}"
    if r.conditional:
        plural = "s" if r.n_seeds != 1 else ""
        meaning += f"; for the drawn random set{plural} only ({r.n_seeds} seed{plural}, fewer than {stats.MIN_SEEDS})"
    return f"{_name(c)}: {estimate}: {meaning}."


def nulls(model: ModelReport) -> list[tuple[str, str, str]]:
    """(comparison, null hypothesis, test) for each headline comparison at every K, once per label and
    null (chain of thought minus direct answers has nulls of its own)."""
    seen: dict[tuple[str, str], tuple[str, str, str]] = {}
    for task in (t for t in model.tasks if t.headline):
        for f in task.filters:
            for c in _headline_comparisons(model, task, f):
                name = _name(c) + (f" on {task.task}" if is_interaction(task.task) else "")
                seen.setdefault((_name(c), c.null), (name, c.null, _test_kind(c)))
    return list(seen.values())


def _name(c: Comparison) -> str:
    """``retrieval@5 vs none``; a contrast's label already names both sides."""
    return c.arm.label if c.arm.kind == "contrast" else f"{c.arm.label} vs {c.arm.reference_label}"


def _test_kind(c: Comparison) -> str:
    if c.result.p_exact is not None:
        return "exact, over contexts (McNemar or sign-flip)"
    return "t on the spread between seeds plus between contexts"


def _cannot_tell(summary: FilterSummary, bounded: bool) -> bool:
    """A [0, 1] score at 0 unmasked leaves masking nothing to remove, whatever the masked runs score."""
    return bounded and summary.baseline == 0


def _headline_comparisons(model: ModelReport, task: TaskSummary, f: str) -> list[Comparison]:
    """The task's headline comparisons (in the family or not) at every K the design ran, in listing order."""
    ks = swept_ks(model) or [model.headline_k]
    return sorted(
        (
            c
            for c in model.comparisons
            if (c.task, c.filter, c.metric) == (task.task, f, task.primary_metric)
            and c.headline
            and (model.headline_k is None or c.arm.k is None or c.arm.k in ks)
        ),
        key=listing_order,
    )


def shows(c: Comparison) -> bool:
    """An effect shows where the comparison is in the family and significant after Holm correction."""
    return c.p_holm is not None and c.p_holm < stats.ALPHA


def answers(model: ModelReport) -> list[str]:
    """One sentence per headline task (its first filter): what masking its retrieval heads does, at every K (and
    window) of the design.

    The causal contrast (retrieval minus random heads) answers when the suite has a random control, else
    retrieval (or listed) heads against the unmasked run. The rule (:attr:`.schema.Methods.answers`) is fixed
    before any data are seen: one K gives that K's answer; several give the curve (:func:`_curve`).
    """
    sentences = []
    for task in (t for t in model.tasks if t.headline):
        f = next(iter(task.filters))
        name = task.task + (f" ({f})" if len(task.filters) > 1 else "")
        points = answer_points(model, task, f)
        if not points:
            sentences.append(f"{name}: no masked condition to compare.")
        elif _cannot_tell(task.filters[f], task.bounded):
            numbers = "; ".join(_numbers(p.effect, True) for p in points)
            sentences.append(f"{name}: the model scores 0 on it unmasked, so it cannot tell ({numbers}).")
        elif len(points) == 1:
            sentences.append(f"{name}: {_answer(points[0].effect, task)}")
        else:
            sentences.append(f"{name}: {_curve(points, task)}")
    return sentences


def _curve(points: list[Point], task: TaskSummary) -> str:
    """A sweep in one sentence (a clause per window): the Ks where an effect shows (significant after Holm), in
    which direction, the Ks where it does not, and every K's numbers, e.g. ``from K = 5 on, masking its retrieval
    heads lowers the score more than masking random heads; at K = 2 no effect shows (Δ retrieval − Δ random at
    K = 2: ...; K = 5: ...; K = 8: ...)``."""
    parts = []
    for window in dict.fromkeys(p.window for p in points):
        mine = [p for p in points if p.window == window]
        ks = [p.k for p in mine]
        clauses = []
        for direction in ("lowers", "raises"):
            shown = [p for p in mine if shows(p.effect) and (p.effect.result.delta < 0) == (direction == "lowers")]
            if shown:
                effect = _effect(shown[0].effect, task, direction, sweep=True)
                clauses.append(f"{_where([p.k for p in shown], ks)}, {effect}")
        unclear = [p for p in mine if not shows(p.effect) and not includes_zero(p.effect)]
        null = [p.k for p in mine if includes_zero(p.effect)]
        if clauses:
            clauses += [f"at K = {_listed(null)} no effect shows"] if null else []
            if unclear:
                clauses.append(f"at K = {_listed([p.k for p in unclear])} it is not significant after Holm correction")
        elif unclear:  # no effect is significant, but some intervals exclude 0 before correction
            for direction in ("lowers", "raises"):
                found = [p for p in unclear if (p.effect.result.delta < 0) == (direction == "lowers")]
                if found:
                    effect = _effect(found[0].effect, task, direction, sweep=True)
                    where = _listed([p.k for p in found])
                    clauses.append(f"at K = {where}, {effect}, but not significantly after Holm correction")
            clauses += [f"at K = {_listed(null)} no effect shows"] if null else []
        else:
            clauses.append(f"no effect shows at K = {_listed(ks, 'or')}")
        what = {_what(p.effect) for p in mine}
        if len(what) == 1:  # one kind of comparison throughout, named once
            numbers = what.pop() + " at " + "; ".join(f"K = {p.k}: {_estimate(p.effect, task.bounded)}" for p in mine)
        else:
            numbers = "; ".join(f"K = {p.k} ({_what(p.effect)}): {_estimate(p.effect, task.bounded)}" for p in mine)
        prefix = "" if window is None else f"with window {window}, "
        parts.append(f"{prefix}{'; '.join(clauses)} ({numbers})")
    return "; ".join(parts) + "."


def _where(shown: list, ks: list) -> str:
    """``at each of K = 2, 5 and 8``, ``from K = 5 on`` (the largest Ks), ``up to K = 5`` (the smallest), or
    ``at K = 8``."""
    if shown == ks:
        return f"at each of K = {_listed(ks)}"
    if len(shown) > 1 and shown == ks[-len(shown) :]:
        return f"from K = {shown[0]} on"
    if len(shown) > 1 and shown == ks[: len(shown)]:
        return f"up to K = {shown[-1]}"
    return f"at K = {_listed(shown)}"


def _listed(values: list, conjunction: str = "and") -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {conjunction} " + words[-1]


def _what(c: Comparison) -> str:
    """What a sweep's numbers are: the contrast, or (no random control at that K) a fixed set against none."""
    if c.arm.kind == "contrast":
        return "Δ retrieval − Δ random"
    return ("Δ listed heads" if c.arm.kind == "explicit" else "Δ retrieval") + " vs none"


def _estimate(c: Comparison, bounded: bool) -> str:
    """``−83.3 points [−100.0, −41.8], Holm p = 0.012``, and whether this design could reach significance."""
    r = c.result
    text = (
        f"{format_value(r.delta, bounded, signed=True)}{' points' if bounded else ''} "
        f"[{format_value(r.ci_low, bounded, signed=True)}, {format_value(r.ci_high, bounded, signed=True)}], "
        f"Holm p = {format_p(c.p_holm)}"
    )
    if c.min_attainable_p_holm is not None and c.min_attainable_p_holm >= stats.ALPHA:
        text += f" (at best {format_p(c.min_attainable_p_holm)} with this design)"
    return text


def _effect(c: Comparison, task: TaskSummary, direction: str, sweep: bool = False) -> str:
    """What the comparison measures, as a clause: ``masking its retrieval heads lowers the score more than
    masking random heads``; ``direction`` is lowers or raises. In a sweep a fixed set is named by its kind, not
    by one K's label."""
    score = "the score" if task.higher_is_better else f"{task.primary_metric} (lower is better)"
    if is_interaction(task.task):
        score += " of chains of thought, against direct answers to the same questions,"
    windowed = c.arm.members[0].window is not None
    if c.arm.kind == "contrast":
        if windowed:
            return f"keeping its retrieval heads whole under a window {direction} {score} against keeping random heads"
        return f"masking its retrieval heads {direction} {score} more than masking random heads"
    subject = "its retrieval heads" if sweep and c.arm.kind == "retrieval" else c.arm.label
    if windowed:
        return (
            f"keeping {subject} whole under a window {direction} {score}" if sweep else f"{subject} {direction} {score}"
        )
    return f"masking {subject} {direction} {score}"


def _numbers(c: Comparison, bounded: bool) -> str:
    r = c.result
    return (
        f"{c.arm.label}: {format_value(r.delta, bounded, signed=True)}{' points' if bounded else ''} "
        f"[{format_value(r.ci_low, bounded, signed=True)}, {format_value(r.ci_high, bounded, signed=True)}]"
    )


def rank_words(c: Comparison) -> str:
    """``more damaging than 10 of 10 random sets (rank p = 0.091, one-sided)``, for a contrast with a rank; a
    kept set of a windowed condition is ranked the other way, as less damaging than random kept sets."""
    if c.arm.members[0].window is not None:
        words = f"less damaging than {c.rank.beaten} of {c.rank.sets} random kept sets"
    else:
        words = f"more damaging than {c.rank.beaten} of {c.rank.sets} random sets"
    return f"{words} (rank p = {format_p(c.rank.p_value)}, one-sided)"


def _answer(c: Comparison, task: TaskSummary) -> str:
    r, numbers = c.result, _numbers(c, task.bounded)
    if c.rank is not None:
        numbers += f"; {rank_words(c)}"
    if includes_zero(c):
        return f"no effect shows ({numbers}; the interval includes 0)."
    effect = _effect(c, task, "lowers" if r.delta < 0 else "raises")
    if shows(c):
        return f"{effect} ({numbers}, Holm p = {format_p(c.p_holm)})."
    if c.min_attainable_p_holm is not None and c.min_attainable_p_holm >= stats.ALPHA:
        return (
            f"{effect} ({numbers}), but this design cannot show it as significant (its smallest Holm p is "
            f"{format_p(c.min_attainable_p_holm)})."
        )
    return f"{effect} ({numbers}), not significant after Holm correction (Holm p = {format_p(c.p_holm)})."
