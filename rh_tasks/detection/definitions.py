"""The head-score definitions ``rh-eval detect`` computes, all from one greedy decode of each sample.

Each definition says which samples count and whether Wu et al.'s 0.1 cut-off applies to it; the rule and its
source go into the score file's sidecar, so a file says what its numbers mean.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_wrappers.heads.scores import RETRIEVAL_THRESHOLD

NULL_QUESTION = "N/A"  # QRHead's default null query


@dataclass(frozen=True)
class Definition:
    name: str
    rule: str  # what one sample's score of a head is
    source: str
    answered_only: bool  # only samples the model answered count (else every sample)
    threshold: float | None  # retrieval-head cut-off on the mean score; None: the scale has none, pass k=
    help: str  # one line for --help

    def sidecar(self, acceptance: str) -> dict:
        return {
            "definition": self.name,
            "rule": self.rule,
            "source": self.source,
            "samples": acceptance if self.answered_only else "every sample, answered or not",
            "aggregation": "mean over those samples",
            "retrieval_threshold": self.threshold,
        }


_COPY = (
    "a head copies at a decode step when its arg-max attention position lies in the answer span and holds the "
    "token just generated"
)

DEFINITIONS: dict[str, Definition] = {
    d.name: d
    for d in (
        Definition(
            "set",
            _COPY + "; score = |tokens copied ∩ distinct answer tokens| / |distinct answer tokens|",
            "Wu et al. 2024, arXiv 2404.15574, §2",
            True,
            RETRIEVAL_THRESHOLD,
            "the paper's |g_h ∩ k| / |k|: each distinct answer token counts once, scores <= 1 (default)",
        ),
        Definition(
            "multiset",
            _COPY + "; score = copy events / answer length in tokens",
            "nightdessert/Retrieval_Head retrieval_head_detection.py (the paper's code)",
            True,
            RETRIEVAL_THRESHOLD,
            "every copy counts, divided by the answer's length in tokens, as the reference code does",
        ),
        Definition(
            "retrieval_reasoning",
            "per decode step, the attention that the n = answer-span-length most-attended keys inside the span "
            "receive, divided by n, summed over the first n steps; no token match",
            "HeadKV (Fu et al. 2025, arXiv 2410.19258), retrieval_calculate in "
            "Important_Head/retrieval_head_detection_r2.py",
            True,
            None,
            "HeadKV's retrieval-reasoning score: top-k attention mass on the answer span, k = its length, "
            "without a token match",
        ),
        Definition(
            "query_focus",
            "attention from the question's tokens to each answer-span token (mean over question tokens) minus the "
            f"same with the null question {NULL_QUESTION!r}; tokens below mean - 2 std dropped; summed over the span",
            "after QRHead (Zhang et al. 2025, arXiv 2506.09944), score_docs_per_head_for_detection in "
            "src/qrretriever/attn_retriever.py",
            False,
            None,
            f"QRHead-style: the question's attention to the answer span, calibrated by the null question "
            f"{NULL_QUESTION!r} (one extra prefill, no generation); every sample counts",
        ),
    )
}


def parse_definitions(text: str) -> list[str]:
    """``"set,query_focus"`` into a list of known, distinct definitions, in the order given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DEFINITIONS]
    if unknown or not names:
        raise ValueError(
            f"Unknown score definition(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
            f"{', '.join(DEFINITIONS)}, comma-separated."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--score names {', '.join(repeated)} more than once.")
    return names
