"""Which heads a condition masks: none, an explicit list, the top-K retrieval heads, or a seeded random control.

The random control follows Wu et al. 2024 but fixes the reference code's bugs: it is seeded, it draws from
the model's real layer x head grid, and it really excludes the retrieval heads (every head with mean score
>= 0.1, or every head of a ranked list without scores, and never fewer than the top K).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..condition import Condition, Head
from ..masking.architectures import HeadGeometry
from ..masking.hooks import validate_heads
from .scores import RETRIEVAL_THRESHOLD, HeadScores


def select_heads(
    heads,
    geometry: HeadGeometry,
    *,
    k: int | None = None,
    scores: HeadScores | None = None,
    seed: int = 0,
    match: str | None = None,
    unit: str = "head",
) -> Condition:
    """The heads a ``heads=`` argument names on a model of ``geometry``: :func:`resolve_heads` of its condition."""
    return resolve_heads(Condition.parse(heads=heads, k=k, seed=seed, match=match, unit=unit), geometry, scores)


def _units(geometry: HeadGeometry, unit: str) -> list[tuple[Head, ...]]:
    """The maskable units in (layer, index) order: single heads, or whole KV groups of query heads."""
    if unit == "head":
        return [((l, h),) for l in range(geometry.num_layers) for h in range(geometry.num_heads)]
    size = geometry.group_size
    return [
        tuple((l, g * size + i) for i in range(size))
        for l in range(geometry.num_layers)
        for g in range(geometry.num_kv_heads)
    ]


def _ranked_units(scores: HeadScores, geometry: HeadGeometry, unit: str) -> list[tuple[Head, ...]]:
    # A KV group is as strong as its best query head: one copying head is enough to retrieve.
    def strength(u):
        return max(scores.means[l, h] for l, h in u)

    return sorted(_units(geometry, unit), key=lambda u: (-strength(u), u[0]))


def resolve_heads(condition: Condition, geometry: HeadGeometry, scores: HeadScores | None = None) -> Condition:
    """``condition`` with the heads it masks on a model of ``geometry``, validated before any compute.

    ``k`` counts units: single query heads, or whole KV groups with ``unit="kv_group"``. For ``retrieval`` and
    ``random`` it defaults to the number of retrieval units (mean score >= 0.1).
    """
    if condition.kind == "none":
        return condition
    if condition.kind == "explicit":
        return replace(condition, heads=_explicit_heads(condition.heads, geometry, condition.unit))
    ranking = _Ranking.of(condition.kind, scores, geometry, condition.k, condition.unit)
    if condition.kind == "retrieval":
        return replace(condition, heads=_flatten(ranking.top), k=ranking.k)
    return replace(condition, heads=_random_heads(ranking, geometry, condition), k=ranking.k)


def _explicit_heads(listed, geometry: HeadGeometry, unit: str) -> tuple[Head, ...]:
    """The listed heads; with ``unit=kv_group``, every query head of each listed head's KV group."""
    listed = validate_heads(listed, geometry)
    if unit == "kv_group":
        size = geometry.group_size
        listed = sorted({(l, geometry.kv_group(h) * size + i) for l, h in listed for i in range(size)})
    return tuple(listed)


@dataclass(frozen=True)
class _Ranking:
    """The units ranked by score: the top ``k`` and every retrieval unit (mean score >= the threshold)."""

    k: int
    top: list[tuple[Head, ...]]
    strong: list[tuple[Head, ...]]

    @classmethod
    def of(cls, spec: str, scores: HeadScores | None, geometry: HeadGeometry, k: int | None, unit: str) -> _Ranking:
        if scores is None:
            raise ValueError(f"heads={spec} needs head scores: pass head_scores=FILE (see rh-eval detect).")
        scores.check_geometry(geometry)
        ranked = _ranked_units(scores, geometry, unit)
        named = set(scores.retrieval_heads(RETRIEVAL_THRESHOLD)) if scores.has_cutoff else set()
        strong = [u for u in ranked if named.intersection(u)]  # the units the file calls retrieval heads
        noun = "KV groups" if unit == "kv_group" else "heads"
        if k is None:
            if not scores.has_cutoff:
                raise ValueError(
                    f"{scores.path} holds {scores.description}, which have no retrieval-head cut-off; pass k= to "
                    "choose how many heads to mask."
                )
            k = len(strong)
            if k == 0:
                raise ValueError(
                    f"No head in {scores.path} scores >= {RETRIEVAL_THRESHOLD}; pass k= to choose how many heads "
                    "to mask."
                )
        if k > len(ranked):
            raise ValueError(f"k={k} exceeds the model's {len(ranked)} {noun}.")
        if scores.ranked is not None and spec == "retrieval" and k > len(strong):
            raise ValueError(
                f"k={k} exceeds the {len(strong)} {noun} that {scores.path} ranks; a head list without scores "
                "ranks only the heads it names."
            )
        return cls(k=k, top=ranked[:k], strong=strong)


def _random_heads(ranking: _Ranking, geometry: HeadGeometry, condition: Condition) -> tuple[Head, ...]:
    """A seeded draw of ``k`` units that excludes every retrieval unit and the top ``k``."""
    excluded = set(ranking.strong) | set(ranking.top)
    pool = [u for u in _units(geometry, condition.unit) if u not in excluded]
    rng = random.Random(condition.seed)
    if condition.match == "layer":
        return _flatten(_draw_per_layer(ranking.top, pool, rng))
    return _flatten(_draw_anywhere(ranking.k, pool, rng))


def _draw_anywhere(k: int, pool: list, rng: random.Random) -> list:
    if k > len(pool):
        raise ValueError(
            f"k={k} exceeds the {len(pool)} non-retrieval units available for the random control "
            "(it excludes every retrieval head and the top k); use a smaller k."
        )
    return rng.sample(pool, k)


def _draw_per_layer(top: list, pool: list, rng: random.Random) -> list:
    """``match=layer``: as many units from each layer as the top ``k`` have there."""
    drawn = []
    for layer in sorted({u[0][0] for u in top}):
        need = sum(1 for u in top if u[0][0] == layer)
        candidates = [u for u in pool if u[0][0] == layer]
        if need > len(candidates):
            raise ValueError(
                f"match=layer needs {need} non-retrieval units in layer {layer}, but only {len(candidates)} exist."
            )
        drawn.extend(rng.sample(candidates, need))
    return drawn


def _flatten(units) -> tuple[Head, ...]:
    return tuple(sorted(h for u in units for h in u))
