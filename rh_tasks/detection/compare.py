"""How far two head-score files agree: overlap of their top heads and the rank correlation of all heads.

Detection is a sampled estimate, so two runs (other needles, lengths or seeds) or two checkpoints of one
model should agree on the heads that matter. Jaccard of the top-K sets asks exactly that; Spearman's rho
over every head asks whether the whole ranking holds. Files of different models have no head-to-head
pairing, so for them only what is comparable is shown: sparsity, and how deep in the network the
retrieval heads sit.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from model_wrappers.head_scores import HeadScores

TOP_KS = (5, 10, 20)
DEPTH_BINS = 4  # quarters of the network


def jaccard(a: set, b: set) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def top_k(scores: HeadScores, k: int) -> set[tuple[int, int]]:
    return set(scores.ranking()[:k])


def compare(a: HeadScores, b: HeadScores, *, threshold: float, top: int) -> str:
    """The text ``rh-eval heads --compare`` prints."""
    lines = [f"A: {a.path}", f"B: {b.path}", "", _sparsity(a, b, threshold), ""]
    lists = [name for name, s in (("A", a), ("B", b)) if s.ranked is not None]
    if a.means.shape != b.means.shape and not lists:  # a list's grid is only a lower bound: pair it by head
        shapes = " vs ".join("{} layers x {} heads".format(*s.means.shape) for s in (a, b))
        lines += [
            (
                f"The files are for different head grids ({shapes}): heads cannot be paired, so there is no "
                "Jaccard or rank correlation. Where the retrieval heads sit, by depth:"
            ),
            _depth_profile(a, b, threshold),
        ]
        return "\n".join(lines)

    longest = min(len(s.ranked) if s.ranked is not None else s.means.size for s in (a, b))
    ks = sorted(k for k in {*TOP_KS, top} if k <= min(top, longest)) or [longest]
    lines.append("Overlap of the top-K heads (Jaccard = shared / either):")
    for k in ks:
        shared = top_k(a, k) & top_k(b, k)
        lines.append(f"  K={k:<3}  Jaccard {jaccard(top_k(a, k), top_k(b, k)):.2f}  ({len(shared)} shared)")
    strong_a, strong_b = set(a.retrieval_heads(threshold)), set(b.retrieval_heads(threshold))
    only_a, only_b = len(strong_a - strong_b), len(strong_b - strong_a)
    label = f"retrieval heads (listed, or >= {threshold:g})" if lists else f"heads >= {threshold:g}"
    lines.append(
        f"  {label}: Jaccard {jaccard(strong_a, strong_b):.2f} "
        f"({len(strong_a & strong_b)} shared, {only_a} only in A, {only_b} only in B)"
    )
    if lists:
        who = (
            "A and B rank only the heads they list" if len(lists) == 2 else f"{lists[0]} ranks only the heads it lists"
        )
        lines.append(f"No rank correlation over all heads: {who}.")
        return "\n".join(lines)
    rho, p = stats.spearmanr(a.means.ravel(), b.means.ravel())
    lines.append(f"Spearman rank correlation over all {a.means.size} heads: rho = {rho:.3f} (p = {p:.2g})")
    return "\n".join(lines)


def _sparsity(a: HeadScores, b: HeadScores, threshold: float) -> str:
    parts = []
    for name, s in (("A", a), ("B", b)):
        if s.ranked is not None:
            parts.append(f"{name}: a list of {len(s.ranked)} heads")
            continue
        strong = int((s.means >= threshold).sum())
        parts.append(f"{name}: {strong} of {s.means.size} ({100 * strong / s.means.size:.1f}%)")
    return f"Retrieval heads (mean >= {threshold:g}): " + "; ".join(parts)


def _depth_profile(a: HeadScores, b: HeadScores, threshold: float) -> str:
    """Share of each file's retrieval heads per quarter of the layers, and their mean relative depth."""
    header = "       " + "".join(
        f"  {f'{100 * i // DEPTH_BINS}-{100 * (i + 1) // DEPTH_BINS}%':>8}" for i in range(DEPTH_BINS)
    )
    rows = [header + "  mean depth"]
    for name, s in (("A", a), ("B", b)):
        layers = np.array([l for l, _ in s.retrieval_heads(threshold)])
        if layers.size == 0:
            rows.append(f"  {name}    no head reaches {threshold:g}")
            continue
        depth = (layers + 0.5) / s.means.shape[0]  # layer centre as a fraction of the network
        counts = np.bincount(np.minimum((depth * DEPTH_BINS).astype(int), DEPTH_BINS - 1), minlength=DEPTH_BINS)
        shares = "".join(f"  {100 * c / layers.size:>7.0f}%" for c in counts)
        rows.append(f"  {name}    {shares}  {depth.mean():.2f}")
    return "\n".join(rows)
