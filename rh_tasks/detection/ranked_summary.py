"""What ``rh-eval heads`` prints for a ranked head list without scores (QRHead YAML, vLLM-Hook).

Such a file names heads in order and nothing else, so the summary shows only what it says: the order, where
the heads sit, and which KV groups they fall in. No mean or threshold is printed, as there are no scores.
"""

from __future__ import annotations

from collections import Counter

from model_wrappers.heads.formats import FORMATS
from model_wrappers.heads.scores import HeadScores


def summarise_ranked(scores: HeadScores, geometry, *, top: int) -> str:
    heads = list(scores.ranked)
    layers, width = scores.means.shape
    grid = (
        f"{geometry.num_layers} layers x {geometry.num_heads} query heads ({geometry.num_kv_heads} KV heads)"
        if geometry
        else f"heads up to layer {layers - 1}, query head {width - 1}"
    )
    lines = [
        f"{scores.path}: {FORMATS[scores.format].title}, {grid}",
        f"A ranked list of {len(heads)} heads without scores: heads=retrieval masks all of them, "
        "heads=retrieval,k=K the first K, and heads=random draws from the heads it does not list.",
        "",
        f"First {min(top, len(heads))} heads:",
        "  rank  layer  head" + ("  kv" if geometry else ""),
    ]
    for rank, (l, h) in enumerate(heads[:top], 1):
        lines.append(f"  {rank:>4}  {l:>5}  {h:>4}" + (f"  {geometry.kv_group(h):>2}" if geometry else ""))
    per_layer = Counter(l for l, _ in heads)
    lines += ["", "Listed heads per layer:"]
    lines += [f"  layer {l:>3}: {per_layer[l]}" for l in sorted(per_layer)]
    if geometry is None:
        lines += ["", "KV groups unknown: pass --model_args to see which listed heads share a KV head."]
        return "\n".join(lines)
    groups = Counter((l, geometry.kv_group(h)) for l, h in heads)
    lines += [
        "",
        f"{len(groups)} of {geometry.num_layers * geometry.num_kv_heads} KV groups hold a listed head "
        f"({geometry.group_size} query heads each; unit=kv_group masks whole groups, in the order of their first "
        "listed head):",
    ]
    lines += [f"  layer {l:>3}  kv {k:>2}: {n} listed" for (l, k), n in groups.items()]
    return "\n".join(lines)
