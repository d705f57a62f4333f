"""The comparisons a design asks about, fixed by its conditions before any score is seen.

Per headline task (its primary metric, each filter), a design asks one question at each setting it declares
(K, window, unit, mode, phase): does the retrieval set change the score more than random sets of the same size?
That is the causal contrast Δ(retrieval) − Δ(random), and beside it the controls against the unmasked run: the
pooled random control, and a window that keeps no head whole. A fixed set with no random control at its
setting (retrieval or listed heads) answers against the unmasked run instead. Holm corrects over these
questions (``in_family``); every other comparison (a retrieval set against none where its contrast answers,
each random seed alone, other metrics, exploratory tasks) is exploratory.

:func:`arms` serves the report, which compares them, and ``rh-eval plan``, which counts them before any run, so
both speak of the same family.
"""

from __future__ import annotations

from collections.abc import Iterable

from model_wrappers.condition import Condition

from .pairing import UNMASKED
from .schema import Arm

MINUS = "\u2212"


def arms(conditions: Iterable[Condition]) -> list[Arm]:
    """Everything compared against the unmasked run or a random control, each marked in or out of the family."""
    present = [c for c in conditions if c != UNMASKED]
    pools: dict[str, list[Condition]] = {}
    for c in present:
        if c.kind == "random":
            pools.setdefault(c.pool_label, []).append(c)
    contrasts = [
        Arm(
            f"{c.label} {MINUS} {label}",
            "contrast",
            c.k,
            (c,),
            tuple(seeds),
            label,
            variants=bool(c.qualifiers) + bool(seeds[0].qualifiers),
            layer_matched=seeds[0].match == "layer",
        )
        for c in present
        if c.kind == "retrieval"
        for label, seeds in pools.items()
        if setting(seeds[0]) == setting(c)
    ]
    controlled = {arm.members[0] for arm in contrasts}
    # A fixed set of heads: retrieval, a listed set, or no head kept by a window (every head windowed).
    fixed = [
        Arm(c.label, "explicit" if c.kind == "none" else c.kind, c.k, (c,), in_family=c not in controlled, **_about(c))
        for c in present
        if c.kind in ("retrieval", "explicit", "none")
    ]
    pooled = []
    for label, seeds in pools.items():
        pooled.append(Arm(label, "random", seeds[0].k, tuple(seeds), **_about(seeds[0])))
        if len(seeds) > 1:
            pooled.extend(Arm(c.label, "random_seed", c.k, (c,), in_family=False, **_about(c)) for c in seeds)
    return fixed + pooled + contrasts


def setting(c: Condition) -> tuple:
    """What a retrieval condition and its random control share: K and every setting but how heads are chosen."""
    return c.k, c.unit, c.mode, c.phase, c.window, c.sink


def _about(c: Condition) -> dict:
    return {"series": c.series, "variants": int(bool(c.qualifiers)), "layer_matched": c.match == "layer"}
