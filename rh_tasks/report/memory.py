"""The memory axis of windowed conditions: how much of the KV cache each would keep, beside what it costs.

A windowed head needs only its sinks and its window of the cache; a kept head needs all of it. Memory is counted
in KV groups x positions, because under grouped-query attention a KV group is stored once for all its query
heads and stays whole when any of them is kept: the same number of kept query heads can occupy different
numbers of groups, so equal memory means equal kept KV groups. At a context of T tokens, a condition keeping
G_k of the model's G groups with a window of w positions and s sinks keeps

    (G_k * T + (G - G_k) * min(T, s + w)) / (G * T)

of the full cache, averaged here over the task's items at their context lengths (the task's ``lengths``, which
leave out the chat template and the question). The conditions only restrict attention; nothing is evicted, so
this is what a cache would need, not what the run used.
"""

from __future__ import annotations

import numpy as np

from model_wrappers.condition import Condition

from .pairing import TaskTable
from .schema import Comparison, MemoryPoint

KINDS = ("retrieval", "random", "explicit", "contrast")  # the arms drawn on the memory axis


def kept_fraction(kept: int, every: int, window: int, sink: int, lengths: list[float]) -> float:
    """Mean over ``lengths`` of the kept fraction of a KV cache of ``every`` groups (formula in the module)."""
    fractions = [(kept * t + (every - kept) * min(t, sink + window)) / (every * t) for t in lengths]
    return float(np.mean(fractions))


def memory_points(
    table: TaskTable, compared: list[Comparison], kv_groups: dict[Condition, tuple[int, int]], baselines: dict
) -> list[MemoryPoint]:
    """The memory each windowed comparison of the primary metric would keep, per filter of ``table``.

    ``kv_groups`` maps each windowed condition to its (kept, all) KV groups as its run records them, and
    ``baselines`` each filter to its unmasked score. A task whose items record no context length has none.
    """
    points = []
    for c in compared:
        treated = c.arm.members[0]
        if c.metric != table.metrics[0] or c.arm.kind not in KINDS or treated.window is None:
            continue
        lengths = [i.fields.length for i, f in zip(table.items, table.filters) if f == c.filter]
        if not lengths or any(length is None for length in lengths):
            continue
        kept = [kv_groups[member][0] for member in c.arm.members]
        every = kv_groups[treated][1]
        fractions = [kept_fraction(k, every, treated.window, treated.sink, lengths) for k in kept]
        random = [kv_groups[member][0] for member in c.arm.reference] if c.arm.kind == "contrast" else kept
        points.append(
            MemoryPoint(
                task=c.task,
                filter=c.filter,
                metric=c.metric,
                keep="none" if treated.kind == "none" else c.arm.kind,
                label=c.arm.label,
                window=treated.window,
                sink=treated.sink,
                k=c.arm.k,
                kept_kv_groups=float(np.mean(kept)),
                kv_groups=every,
                kept_fraction=float(np.mean(fractions)),
                mean_length=float(np.mean(lengths)),
                equal_memory=len(set(kept) | set(random)) == 1,
                baseline=baselines[c.filter],
                comparison=c,
            )
        )
    return points
