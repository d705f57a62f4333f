"""From per-sample results to a score file per definition: acceptance, the per-head lists, and the sidecar.

For the copy scores and HeadKV's, only samples the model answered count (ROUGE-1 recall of the answer above
0.5, as the reference does): a sample the model got wrong says nothing about which heads retrieve. Rejected
samples are still reported, so the acceptance rate is visible. If none is accepted the run fails loudly; the
reference writes an empty file. The query-focused score, like QRHead's, counts every sample: it measures where
the question looks, not whether the answer came out right.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from model_wrappers.heads.scores import write_retrieval_head_json
from rh_tasks.shared.versions import versions

from .definitions import DEFINITIONS
from .detect import ACCEPT_ROUGE, SampleResult

FORMAT = "rh-eval head scores"
FORMAT_VERSION = 1


class NoAcceptedSamplesError(RuntimeError):
    """The model answered no detection sample, so no head can be scored."""


def acceptance(results: list[SampleResult]) -> dict:
    """Accepted / total samples, overall and per context length."""
    total = Counter(r.length for r in results)
    ok = Counter(r.length for r in results if r.accepted)
    accepted = sum(ok.values())
    return {
        "samples": len(results),
        "accepted": accepted,
        "rate": accepted / len(results) if results else 0.0,
        "by_length": {str(n): {"samples": total[n], "accepted": ok[n]} for n in sorted(total)},
    }


def scored(results: list[SampleResult], definition: str) -> list[SampleResult]:
    """The samples that count under ``definition``."""
    if definition not in DEFINITIONS:
        raise ValueError(f"Unknown score definition {definition!r}; choose one of {', '.join(DEFINITIONS)}.")
    return [r for r in results if r.accepted or not DEFINITIONS[definition].answered_only]


def per_sample_scores(results: list[SampleResult], definition: str) -> np.ndarray:
    """``[counted samples, num_layers, num_heads]`` under ``definition``, or a clear error if none counts."""
    accepted = scored(results, definition)
    if not accepted:
        examples = "; ".join(f"{r.sample_id}: {r.response[:60]!r}" for r in results[:3])
        raise NoAcceptedSamplesError(
            f"No detection sample was answered (ROUGE-1 recall > {ACCEPT_ROUGE}) in {len(results)} tries, so no "
            f"head can be scored. Examples: {examples}. Try shorter --lengths (the model may not handle long "
            "contexts), toggle --chat-template/--no-chat-template to match how the model was trained, or raise "
            "--max_new_tokens if answers are cut off."
        )
    missing = [r.sample_id for r in accepted if definition not in r.scores]
    if missing:
        raise ValueError(f"Samples {missing[:3]} were not scored under {definition!r}.")
    return np.array([r.scores[definition] for r in accepted], dtype=float)


def write_scores(
    output: Path, results: list[SampleResult], *, definition: str, settings: dict, geometry, runtime_seconds: float
) -> dict:
    """Write the Retrieval_Head JSON of ``definition`` and its sidecar; return the sidecar."""
    scores = per_sample_scores(results, definition)
    means = scores.mean(0)
    threshold = DEFINITIONS[definition].threshold
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": versions("rh-eval")["rh-eval"],
        **settings,
        "num_layers": geometry.num_layers,
        "num_attention_heads": geometry.num_heads,
        "num_key_value_heads": geometry.num_kv_heads,
        "head_dim": geometry.head_dim,
        "score": DEFINITIONS[definition].sidecar(f"answered: rouge1_recall(response, answer) > {ACCEPT_ROUGE}"),
        "acceptance": acceptance(results),
        "retrieval_heads": None if threshold is None else int((means >= threshold).sum()),
        "runtime_seconds": round(runtime_seconds, 1),
        "accepted_samples": [r.sample_id for r in results if r.accepted],
        "scored_samples": [r.sample_id for r in scored(results, definition)],  # order of every per-head list
        "samples": [
            {
                "id": r.sample_id,
                "prompt_tokens": r.prompt_tokens,
                "rouge1_recall": round(r.rouge1_recall, 4),
                "accepted": r.accepted,
                "response": r.response,
            }
            for r in results
        ],
    }
    write_retrieval_head_json(output, scores, metadata)
    return metadata
