"""Answer scoring shared by the generative retrieval tasks."""

from __future__ import annotations

import re
from functools import cache


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def contains_answer(response: str, answer: str) -> float:
    """1.0 if the answer appears in the response, ignoring case and spacing (RULER's ``string_match``)."""
    return float(_normalise(answer) in _normalise(response))


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_recall(response: str, answer: str) -> float:
    """Share of the answer's unigrams (Porter-stemmed) found in the response, as Retrieval_Head scores NIAH."""
    return float(_rouge().score(answer, response)["rouge1"].recall)
