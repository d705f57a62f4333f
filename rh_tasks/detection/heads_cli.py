"""``rh-eval heads``: what a head-score file says, per head, per layer and per KV group.

Under GQA the query heads of a group read the same keys, and often score together; masking one of them can
leave its siblings to do the copying. The per-group view shows that structure and what
``heads=retrieval,unit=kv_group`` would mask.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model_wrappers.heads.formats import FORMATS
from model_wrappers.heads.load import load_head_scores
from model_wrappers.heads.scores import RETRIEVAL_THRESHOLD, HeadScoreFileError, metadata_path, write_duo_tsv
from rh_tasks.plugin.errors import CommandError, command

from .compare import compare, compare_many
from .ranked_summary import summarise_ranked

HELP = "summarise a head-score file: ranking, sparsity, per-layer and per-KV-group views"
DESCRIPTION = (
    "Print the ranking of a head-score file, the share of heads at or above "
    f"{RETRIEVAL_THRESHOLD} (Wu et al. report under 5%), and per-layer and per-KV-group summaries. The format "
    "is recognised from the content: " + "; ".join(fmt.description for fmt in FORMATS.values()) + "."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="head-score file: Retrieval_Head/HeadKV JSON, QRHead YAML or JSON, vLLM-Hook JSON, or DuoAttention/RLKV "
        "TSV",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="FILE",
        default=None,
        help="instead of summarising one file, compare two or more (A B [C ...]): Jaccard of their top-K heads "
        "and Spearman's rho over all heads (same model; with three or more, a table of every pair and their top "
        "heads side by side, e.g. the files of several rh-eval detect --score definitions), or sparsity and "
        "depth of the retrieval heads (two files of different models)",
    )
    parser.add_argument(
        "--model_args",
        default=None,
        help="model the file is for (lm-eval syntax, e.g. pretrained=DIR); checks the file against its config "
        "and gives the KV groups; expands a TSV's per-KV-head gates to query heads",
    )
    parser.add_argument("--top", type=int, default=20, help="heads to list, or the largest K compared (default 20)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=RETRIEVAL_THRESHOLD,
        help=f"retrieval-head cut-off (default {RETRIEVAL_THRESHOLD})",
    )
    parser.add_argument(
        "--export-duo",
        type=Path,
        default=None,
        metavar="FILE.tsv",
        help="also write DuoAttention's [layers x kv_heads] TSV; a group's gate is its best query head's score",
    )


def _geometry(args, file: Path):
    from model_wrappers.masking.architectures import HeadGeometry

    if args.model_args is not None:
        from .source import load_geometry, parse_model_args

        return load_geometry(parse_model_args(args.model_args))
    sidecar_path = metadata_path(file)
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else {}
    except json.JSONDecodeError as err:
        raise HeadScoreFileError(f"{sidecar_path} is not valid JSON ({err}); delete or regenerate it.") from err
    if "num_key_value_heads" in sidecar:
        return HeadGeometry(
            num_layers=sidecar["num_layers"],
            num_heads=sidecar["num_attention_heads"],
            num_kv_heads=sidecar["num_key_value_heads"],
            head_dim=sidecar.get("head_dim", 0),
        )
    return None


def summarise(scores, geometry, *, top: int, threshold: float) -> str:
    """The report printed by ``rh-eval heads``, as text."""
    if scores.ranked is not None:
        return summarise_ranked(scores, geometry, top=top)
    means = scores.means  # [L, H], or [L, KV] for gates read without a model
    layers, heads = means.shape
    noun = "KV heads" if scores.kv_heads_only else "query heads"
    strong = int((means >= threshold).sum())
    meta = scores.metadata or {}
    lines = [
        f"{scores.path}: {layers} layers x {heads} {noun}"
        + (f" ({geometry.num_kv_heads} KV heads)" if geometry else "")
        + (
            f", {scores.num_samples} samples per head"
            if scores.format == "retrieval_head"
            else f", {FORMATS[scores.format].title}"
        )
        + (f", {meta['score']['definition']} score" if "score" in meta else ""),
        (
            f"Retrieval heads (mean >= {threshold:g}): {strong} of {means.size} ({100 * strong / means.size:.1f}%; "
            "Wu et al. find under 5%)"
            if scores.has_cutoff
            else f"No retrieval-head cut-off for {scores.description}: mask the top K with heads=retrieval,k=K"
        ),
        "",
        f"Top {min(top, means.size)} heads:",
        "  rank  layer  head" + ("  kv" if geometry else "") + "   mean",
    ]
    for rank, (l, h) in enumerate(scores.ranking()[:top], 1):
        kv = f"  {geometry.kv_group(h):>2}" if geometry else ""
        lines.append(f"  {rank:>4}  {l:>5}  {h:>4}{kv}  {means[l, h]:.3f}")
    lines += ["", "Per layer:", f"  layer    max   mean  heads>={threshold:g}"]
    for l in range(layers):
        lines.append(f"  {l:>5}  {means[l].max():.3f}  {means[l].mean():.3f}  {int((means[l] >= threshold).sum()):>3}")
    if scores.kv_heads_only:
        lines += ["", "One gate per KV head: pass --model_args to expand the gates to the query heads of each group."]
        return "\n".join(lines)
    if geometry is None:
        lines += ["", "KV groups unknown: pass --model_args to see which query heads share a KV head."]
        return "\n".join(lines)

    groups = means.reshape(layers, geometry.num_kv_heads, geometry.group_size)  # [L, KV, group]
    order = sorted(np.ndindex(layers, geometry.num_kv_heads), key=lambda lk: (-groups[lk].max(), lk))
    with_strong = [lk for lk in order if groups[lk].max() >= threshold]
    lines += [
        "",
        f"Per KV group ({geometry.group_size} query heads each; unit=kv_group masks whole groups): "
        f"{len(with_strong)} of {layers * geometry.num_kv_heads} groups hold a retrieval head",
        "  layer  kv  query heads   best  heads>=" + f"{threshold:g}  member scores",
    ]
    for l, k in order[: max(len(with_strong), min(top, len(order)))]:
        members = groups[l, k]
        first = k * geometry.group_size
        lines.append(
            f"  {l:>5}  {k:>2}  {first:>3}-{first + geometry.group_size - 1:<6}  {members.max():.3f}  "
            f"{int((members >= threshold).sum()):>3}  " + " ".join(f"{m:.2f}" for m in members)
        )
    return "\n".join(lines)


def _load(args, file: Path):
    geometry = _geometry(args, file)
    return geometry, load_head_scores(file, geometry)


@command(HeadScoreFileError)
def main(args) -> int:
    if (args.file is None) == (args.compare is None):
        raise CommandError("Give one head-score file to summarise, or --compare A B [C ...] (not both).")
    if args.top < 1:
        raise CommandError(f"--top must be at least 1, got {args.top}.")
    if args.compare is not None:
        if args.export_duo is not None:
            raise CommandError("--export-duo works on one file; drop --compare.")
        if len(args.compare) < 2:
            raise CommandError("--compare needs at least two files: --compare A B [C ...].")
        files = [scores for _, scores in (_load(args, file) for file in args.compare)]
        if len({s.kv_heads_only for s in files}) > 1:
            raise CommandError(
                "One file holds a gate per KV head, another a score per query head: pass --model_args to expand "
                "the gates to query heads so they can be paired."
            )
        if len(files) == 2:
            print(compare(*files, threshold=args.threshold, top=args.top))
        else:
            try:
                print(compare_many(files, threshold=args.threshold, top=args.top))
            except ValueError as err:
                raise CommandError(str(err)) from None
        return 0
    geometry, scores = _load(args, args.file)
    print(summarise(scores, geometry, top=args.top, threshold=args.threshold))
    if args.export_duo is not None:
        if scores.ranked is not None:
            raise CommandError(f"--export-duo needs scores; {args.file} is a ranked list without scores.")
        if geometry is None:
            raise CommandError("--export-duo needs the KV groups: pass --model_args.")
        meta = {
            "source": str(args.file),
            "source_sha256": scores.sha256,
            "gate": "max over the group's query heads of the mean retrieval score",
            "num_layers": geometry.num_layers,
            "num_attention_heads": geometry.num_heads,
            "num_key_value_heads": geometry.num_kv_heads,
        }
        write_duo_tsv(args.export_duo, scores.kv_gates(geometry), meta)
        print(f"\nWrote {args.export_duo} ({geometry.num_layers} x {geometry.num_kv_heads} gates).")
    return 0
