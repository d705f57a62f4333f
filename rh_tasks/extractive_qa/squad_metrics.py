"""SQuAD answer scoring: exact match and token F1 with the official normalisation, plus answer containment.

The normalisation and F1 follow the official SQuAD v1.1 ``evaluate-v1.1.py`` (lower-case, drop punctuation and
the articles a/an/the, collapse whitespace); empty answers are handled as in ``evaluate-v2.0.py``. Every score
is the maximum over the gold answers, as the official script takes it.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation and articles, collapse whitespace (official SQuAD order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall over normalised bags of words."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def contains_words(prediction: str, gold: str) -> float:
    """1.0 if the normalised gold answer occurs in the normalised prediction, on word boundaries.

    Catches correct but wordy answers ("It was Denver." for "Denver") that exact match rejects.
    """
    needle = normalize_answer(gold)
    return float(bool(needle) and f" {needle} " in f" {normalize_answer(prediction)} ")


def best_over_golds(metric, prediction: str, golds: list[str]) -> float:
    """The official SQuAD rule: a prediction scores its best match against any gold answer."""
    if not golds:
        raise ValueError("A SQuAD question needs at least one gold answer; unanswerable questions are not scored.")
    return max(metric(prediction, gold) for gold in golds)


def squad_scores(prediction: str, golds: list[str]) -> dict[str, float]:
    """Per-item ``exact_match``, ``f1`` and ``contains_words`` of one prediction against its gold answers."""
    return {
        "exact_match": best_over_golds(exact_match, prediction, golds),
        "f1": best_over_golds(token_f1, prediction, golds),
        "contains_words": best_over_golds(contains_words, prediction, golds),
    }
