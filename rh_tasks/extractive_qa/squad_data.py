"""SQuAD v1.1 dev, flattened into paragraphs and questions, with a seeded choice of questions.

Every v1.1 question is answerable, so each carries at least one gold span. Article ids are the article's index in
the official file and paragraph ids are ``<article>/<paragraph>``, so logged items trace back to the source.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache

from rh_tasks.shared.task_data import TASK_DATA

PACKAGED_DEV = "squad/dev-v1.1.json.gz"


@dataclass(frozen=True)
class Paragraph:
    id: str  # "<article index>/<paragraph index>"
    article_id: int
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    id: str  # SQuAD's question id
    question: str
    answers: tuple[str, ...]  # gold answer texts, duplicates removed, in file order
    paragraph: Paragraph


@cache
def load_dev() -> tuple[tuple[Paragraph, ...], tuple[Question, ...]]:
    """All 2,067 paragraphs and 10,570 questions of the packaged SQuAD v1.1 dev set."""
    paragraphs, questions = [], []
    for article_id, article in enumerate(json.loads(TASK_DATA.read_text(PACKAGED_DEV))["data"]):
        for paragraph_index, raw in enumerate(article["paragraphs"]):
            paragraph = Paragraph(f"{article_id}/{paragraph_index}", article_id, article["title"], raw["context"])
            paragraphs.append(paragraph)
            for qa in raw["qas"]:
                answers = tuple(dict.fromkeys(answer["text"] for answer in qa["answers"]))
                questions.append(Question(qa["id"], qa["question"].strip(), answers, paragraph))
    return tuple(paragraphs), tuple(questions)


def choose_questions(n: int, seed: int) -> list[Question]:
    """``n`` questions with distinct gold paragraphs, in seeded order; a larger ``n`` extends a smaller one's list."""
    paragraphs, questions = load_dev()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(paragraphs):
        raise ValueError(f"questions_per_cell={n!r} must be an integer between 1 and {len(paragraphs)}.")
    order = list(questions)
    random.Random(seed).shuffle(order)
    chosen, seen = [], set()
    for question in order:
        if question.paragraph.id not in seen:
            seen.add(question.paragraph.id)
            chosen.append(question)
            if len(chosen) == n:
                break
    return chosen
