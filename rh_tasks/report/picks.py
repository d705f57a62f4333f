"""Which comparisons a task's answer rests on: at one setting (K, window) for the leaderboard, at every setting
the design declares for the answers and the forest plot, which read the same rows so that they never disagree."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import Comparison, ModelReport, TaskSummary

ANY = object()  # any window: the leaderboard's default, which lists one setting per K
LEADERBOARD = ("retrieval", "random", "contrast")


@dataclass(frozen=True)
class Point:
    """One setting of a sweep, and the comparisons of one task's answer there."""

    k: int | None
    window: int | None
    picks: dict[str, Comparison]  # retrieval, random and contrast, by kind; explicit when no retrieval set

    @property
    def effect(self) -> Comparison | None:
        """The causal contrast; without a random control, the retrieval (or listed) set against none."""
        return self.picks.get("contrast") or self.picks.get("retrieval") or self.picks.get("explicit")

    @property
    def name(self) -> str:
        """``K = 5``, or ``K = 5, window 64`` for a windowed condition."""
        return f"K = {self.k}" + (f", window {self.window}" if self.window is not None else "")


def headline_picks(
    model: ModelReport, task: TaskSummary, f: str, k: int | None = None, window=ANY, kinds=LEADERBOARD
) -> dict[str, Comparison]:
    """The retrieval, pooled random and contrast comparisons (by kind, of ``kinds``) of a task's primary metric.

    At the headline K (or the K given) and window given, not layer-matched; the default unit, mode and phase
    come first, so a variant never replaces them.
    """
    k = model.headline_k if k is None else k
    pick: dict[str, Comparison] = {}
    for c in sorted(model.comparisons, key=lambda c: (c.arm.variants, c.arm.label)):
        if (
            (c.task, c.filter) == (task.task, f)
            and c.headline
            and c.arm.k == k
            and (window is ANY or c.arm.members[0].window == window)
            and c.arm.kind in kinds
            and not c.arm.layer_matched
        ):
            pick.setdefault(c.arm.kind, c)
    return pick


def settings(model: ModelReport) -> list[tuple[int | None, int | None]]:
    """(K, window) of every retrieval set the model was run with, in sweep order; the headline K alone when none
    was (listed sets only)."""
    found = {(c.arm.k, c.arm.members[0].window) for c in model.comparisons if c.headline and c.arm.kind == "retrieval"}
    return sorted(found, key=lambda p: (p[1] or 0, p[0] or 0)) or [(model.headline_k, ANY)]


def swept_ks(model: ModelReport) -> list[int]:
    """Every K the design ran a retrieval set at (the headline K alone for a suite of one K)."""
    return sorted({k for k, _ in settings(model) if k is not None})


def k_note(model: ModelReport) -> str:
    """``Headline K: 5.``, or for a sweep the Ks the findings and answers cover and the leaderboard's K."""
    ks = swept_ks(model)
    if len(ks) < 2:
        return f"Headline K: {'none (no retrieval condition)' if model.headline_k is None else model.headline_k}."
    listed = ", ".join(map(str, ks))
    return f"K = {listed}: the findings and answers cover every K; the leaderboard is at K = {model.headline_k}."


def answer_points(model: ModelReport, task: TaskSummary, f: str) -> list[Point]:
    """The task's answer at every setting of the design that has something to answer with."""
    kinds = (*LEADERBOARD, "explicit")
    points = [
        Point(k, None if w is ANY else w, headline_picks(model, task, f, k, w, kinds)) for k, w in settings(model)
    ]
    return [p for p in points if p.effect is not None]
