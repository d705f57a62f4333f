"""How far head-score files agree: overlap of their top heads and the rank correlation of all heads.

Detection is a sampled estimate, so two runs (other needles, lengths or seeds) or two checkpoints of one
model should agree on the heads that matter. Jaccard of the top-K sets asks exactly that; Spearman's rho
over every head asks whether the whole ranking holds. Files of different models have no head-to-head
pairing, so for them only what is comparable is shown: sparsity, and how deep in the network the
retrieval heads sit. Three or more files (say, several score definitions of one model) are compared pair
by pair in one table, with each file's top heads side by side.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from model_wrappers.heads.scores import HeadScores

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
    uncut = [name for name, s in (("A", a), ("B", b)) if not s.has_cutoff]
    if uncut:  # a cut-off on a scale that has none would count nothing, or everything
        lines.append(f"  No retrieval-head overlap: {' and '.join(uncut)} has no retrieval-head cut-off.")
    else:
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


def compare_many(files: list[HeadScores], *, threshold: float, top: int) -> str:
    """The text ``rh-eval heads --compare A B C ...`` prints: a table of every pair, and each file's top heads."""
    if len({s.means.shape for s in files if s.ranked is None}) > 1:
        shapes = ", ".join("{} x {}".format(*s.means.shape) for s in files)
        raise ValueError(
            f"Comparing more than two files needs files of one model; these score different head grids ({shapes}). "
            "Compare files of different models two at a time."
        )
    names = [chr(ord("A") + i) for i in range(len(files))]
    lines = ["Files:"]
    for name, s in zip(names, files):
        lines.append(f"  {name}: {s.path} ({_what(s, threshold)})")
    longest = min(len(s.ranked) if s.ranked is not None else s.means.size for s in files)
    ks = sorted(k for k in {*TOP_KS, top} if k <= min(top, longest)) or [longest]
    lines += [
        "",
        "Agreement pair by pair: Jaccard of the top-K heads (shared heads in brackets) and Spearman's rho over all "
        "heads:",
        "",
        "| pair | " + " | ".join(f"top {k}" for k in ks) + " | Spearman rho |",
        "|---|" + "---|" * (len(ks) + 1),
    ]
    for i in range(len(files)):
        for j in range(i + 1, len(files)):
            a, b = files[i], files[j]
            cells = []
            for k in ks:
                top_a, top_b = top_k(a, k), top_k(b, k)
                cells.append(f"{jaccard(top_a, top_b):.2f} ({len(top_a & top_b)})")
            if a.ranked is None and b.ranked is None:
                cells.append(f"{stats.spearmanr(a.means.ravel(), b.means.ravel())[0]:.3f}")
            else:
                cells.append("– (a list ranks only its heads)")
            lines.append(f"| {names[i]}–{names[j]} | " + " | ".join(cells) + " |")
    shown = min(top, longest, 10)
    lines += ["", f"Top {shown} heads (layer-head):", "", "| rank | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---|" * len(files))
    rankings = [s.ranked if s.ranked is not None else s.ranking() for s in files]
    for rank in range(shown):
        lines.append(f"| {rank + 1} | " + " | ".join("{}-{}".format(*r[rank]) for r in rankings) + " |")
    return "\n".join(lines)


def _what(s: HeadScores, threshold: float) -> str:
    """One file in a few words: its definition or format, and how many heads it calls retrieval heads."""
    if s.ranked is not None:
        return f"a ranked list of {len(s.ranked)} heads"
    label = f"{s.definition} score" if s.definition else s.format.replace("_", " ")
    samples = f", {s.num_samples} samples" if s.format == "retrieval_head" else ""
    if not s.has_cutoff:
        return f"{label}{samples}, no retrieval-head cut-off"
    strong = int((s.means >= threshold).sum())
    return f"{label}{samples}, {strong} of {s.means.size} heads >= {threshold:g}"


def _sparsity(a: HeadScores, b: HeadScores, threshold: float) -> str:
    parts = []
    for name, s in (("A", a), ("B", b)):
        if s.ranked is not None:
            parts.append(f"{name}: a list of {len(s.ranked)} heads")
            continue
        if not s.has_cutoff:
            parts.append(f"{name}: no retrieval-head cut-off on its scale ({s.means.size} heads ranked)")
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
        if not s.has_cutoff:
            rows.append(f"  {name}    no retrieval-head cut-off on its scale")
            continue
        layers = np.array([l for l, _ in s.retrieval_heads(threshold)])
        if layers.size == 0:
            rows.append(f"  {name}    no head reaches {threshold:g}")
            continue
        depth = (layers + 0.5) / s.means.shape[0]  # layer centre as a fraction of the network
        counts = np.bincount(np.minimum((depth * DEPTH_BINS).astype(int), DEPTH_BINS - 1), minlength=DEPTH_BINS)
        shares = "".join(f"  {100 * c / layers.size:>7.0f}%" for c in counts)
        rows.append(f"  {name}    {shares}  {depth.mean():.2f}")
    return "\n".join(rows)
