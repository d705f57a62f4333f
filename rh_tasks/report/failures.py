"""Why a long-context answer failed: the paper's NIAH error analysis (Wu et al. 2024, §4), made mechanical.

Texts are compared as normalized word sequences (lower-case, runs of letters and digits). The answer's content
words are its words minus a short stop-word list, so "in" or "the" alone never counts as partial recall.
Each response falls in exactly one category, checked in this order:

- ``empty``: the response has no words.
- ``correct``: every content word of the reference answer (of at least one reference, if several) occurs in it.
- ``incomplete``: some but not all of them occur (partial recall).
- ``wrong_extraction``: none occur, but the response was copied from the prompt: it contains a run of
  ``COPY_SPAN`` consecutive words (or the whole response, if shorter) found verbatim in the prompt, i.e. the
  model retrieved text from the wrong place in its context (including echoing the question).
- ``hallucinated``: none occur and the response is not copied from the prompt.

Only items of long-context tasks (a length, a depth and a reference answer) are classified.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from .runs import Item, Run

OUTCOMES = ("correct", "incomplete", "hallucinated", "wrong_extraction", "empty")
COPY_SPAN = 4
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    "a an the and or of to in on at is are was were be it its this that for with by as from".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _recall(response: set[str], answer: str) -> float:
    tokens = words(answer)
    content = {t for t in tokens if t not in _STOP_WORDS} or set(tokens)
    return len(content & response) / len(content) if content else 0.0


def _copied(response: list[str], prompt_words: str) -> bool:
    """True if some run of min(COPY_SPAN, len(response)) response words occurs verbatim in the prompt."""
    span = min(COPY_SPAN, len(response))
    padded = f" {prompt_words} "
    return any(f" {' '.join(response[i : i + span])} " in padded for i in range(len(response) - span + 1))


def classify(response: str, answers: Sequence[str], prompt_words: str) -> str:
    """One of ``OUTCOMES`` for a response, its reference answer(s) and the prompt as ``' '.join(words(prompt))``."""
    tokens = words(response)
    if not tokens:
        return "empty"
    recall = max((_recall(set(tokens), answer) for answer in answers), default=0.0)
    if recall == 1.0:
        return "correct"
    if recall > 0.0:
        return "incomplete"
    return "wrong_extraction" if _copied(tokens, prompt_words) else "hallucinated"


def classify_runs(runs: list[Run]) -> None:
    """Give every long-context item of ``runs`` its outcome; other items keep ``None``."""
    prompt_words: dict[str, str] = {}  # by prompt_hash: conditions share their prompts

    def outcome(item: Item) -> str | None:
        fields = item.fields
        if not fields.long_context or not fields.answers:
            return None
        if item.prompt_hash not in prompt_words:
            prompt_words[item.prompt_hash] = " ".join(words(item.prompt))
        return classify(item.response, fields.answers, prompt_words[item.prompt_hash])

    for run in runs:
        for task in run.tasks.values():
            task.items = {key: dataclasses.replace(item, outcome=outcome(item)) for key, item in task.items.items()}
