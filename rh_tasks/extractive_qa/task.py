"""The ``extractive_qa`` task: SQuAD questions answered from a long context of distractor passages.

The gold paragraph sits at a controlled depth among paragraphs from *other* SQuAD articles, and the prompt is
filled to a target length in the evaluated model's tokens: the copy-from-context ability that retrieval heads
serve, on natural questions instead of a planted needle. ``extractive_qa_closed_book`` asks the same questions
with no context, which separates retrieval from what the model already knows.

The same questions appear in every length x depth cell, with the same distractors, so cells pair item by item.
Docs are ordered question by question, so ``--limit`` keeps whole questions across all cells when it is a
multiple of the number of cells. Prompts are a pure function of the metadata and the tokenizer.
"""

from __future__ import annotations

import logging
import random
from functools import cache, lru_cache

from rh_tasks.shared import samples, token_splice
from rh_tasks.shared.options import check_lengths_and_depths, task_options
from rh_tasks.shared.tokenizer import context_limit, resolve_tokenizer

from .distractor_context import build_context
from .squad_data import Paragraph, Question, choose_questions, load_dev
from .squad_metrics import normalize_answer, squad_scores

logger = logging.getLogger(__name__)

DEFAULTS = {
    "lengths": [1024],
    "depths": [0, 50, 100],
    "questions_per_cell": 5,
    "question_seed": 1234,  # not "seed": lm-eval merges model_args (rh-masked has its own seed) into metadata
}
GEN_TOKENS = 32  # generation_kwargs.max_gen_toks of extractive_qa.yaml: room every prompt leaves for the answer
MIN_LENGTH = 128
# LongBench's multi-document QA prompt (Bai et al. 2023), instruction before and after the passages.
INSTRUCTION = (
    "Answer the question based on the given passages. Only give me the answer and do not output any other words."
)
PROMPT = (
    f"{INSTRUCTION}\n\nThe following are given passages.\n{{context}}\n\n{INSTRUCTION}\n\nQuestion: {{question}}\n"
    "Answer:"
)
CLOSED_BOOK_PROMPT = (
    "Answer the question. Only give me the answer and do not output any other words.\n\nQuestion: {question}\nAnswer:"
)


@cache
def _normalised_paragraphs() -> tuple[tuple[Paragraph, str], ...]:
    return tuple((p, f" {normalize_answer(p.text)} ") for p in load_dev()[0])


@lru_cache(maxsize=256)
def _distractors(question: Question, seed: int) -> tuple[str, ...]:
    """Paragraphs of other articles that do not contain a gold answer, in an order seeded by the question.

    Leaving out paragraphs that happen to contain the answer string keeps the gold paragraph its only source.
    """
    golds = [f" {normalize_answer(answer)} " for answer in question.answers]
    pool = [
        p.text.strip()
        for p, normalised in _normalised_paragraphs()
        if p.article_id != question.paragraph.article_id and not any(gold in normalised for gold in golds)
    ]
    random.Random(f"{seed}:{question.id}").shuffle(pool)
    return tuple(pool)


def _base_doc(question: Question) -> dict:
    paragraph = question.paragraph
    return {
        "id": question.id,
        "question": question.question,
        samples.ANSWERS: list(question.answers),
        "title": paragraph.title,
        samples.ARTICLE_ID: paragraph.article_id,
        samples.CONTEXT_ID: paragraph.id,
    }


def build_grid(tokenizer, *, lengths, depths, questions_per_cell, question_seed, limit=None) -> list[dict]:
    """All docs of the grid: for each question, each length, each depth."""
    lengths, depths = check_lengths_and_depths(
        "extractive_qa",
        lengths,
        depths,
        min_length=MIN_LENGTH,
        max_gen_toks=GEN_TOKENS,
        limit=limit,
        depth_hint=" (0 puts the gold paragraph first, 100 last)",
    )
    reserve = token_splice.count(tokenizer, PROMPT.format(context="", question=""))
    head, tail = PROMPT.split("{context}")
    docs = []
    for question in choose_questions(questions_per_cell, question_seed):
        distractors = _distractors(question, question_seed)
        fixed = reserve + token_splice.count(tokenizer, question.question)
        needed = fixed + token_splice.count(tokenizer, question.paragraph.text.strip())
        for length in lengths:
            if needed > length:
                raise ValueError(
                    f"extractive_qa length {length} cannot hold question {question.id}: its gold paragraph and the "
                    f"prompt alone take {needed} tokens. Use lengths >= {needed} (1024 holds every SQuAD paragraph)."
                )
            for depth in depths:
                context = build_context(tokenizer, question.paragraph.text, distractors, length - fixed, depth)
                prompt_tokens = token_splice.splice_count(
                    tokenizer,
                    [
                        token_splice.literal(tokenizer, head),
                        *context.pieces,
                        token_splice.literal(tokenizer, tail.format(question=question.question)),
                    ],
                )
                docs.append(
                    _base_doc(question)
                    | {
                        samples.LENGTH: length,
                        samples.DEPTH: depth,
                        "depth_actual": round(context.depth_actual, 2),
                        "gold_position": context.gold_position,
                        "num_passages": context.num_passages,
                        "gold_start": context.gold_start,
                        "prompt_tokens": prompt_tokens,
                        "context": context.text,
                    }
                )
    return docs


def build(**metadata) -> dict:
    """lm-eval ``custom_dataset`` hook: ``--metadata`` keys override :data:`DEFAULTS`; model_args name the tokenizer."""
    import datasets

    options = task_options("extractive_qa", metadata, DEFAULTS)
    docs = build_grid(resolve_tokenizer(**metadata), limit=context_limit(**metadata), **options)
    logger.info(
        "extractive_qa: %d docs (%d questions x lengths %s x depths %s)",
        len(docs),
        options["questions_per_cell"],
        options["lengths"],
        options["depths"],
    )
    return {"test": datasets.Dataset.from_list(docs)}


def build_closed_book(**metadata) -> dict:
    """``custom_dataset`` hook of ``extractive_qa_closed_book``: the grid's questions, once each, without context."""
    import datasets

    options = task_options("extractive_qa", metadata, DEFAULTS)
    questions = choose_questions(options["questions_per_cell"], options["question_seed"])
    return {"test": datasets.Dataset.from_list([_base_doc(question) for question in questions])}


def doc_to_text(doc: dict) -> str:
    return PROMPT.format(context=doc["context"], question=doc["question"])


def doc_to_text_closed_book(doc: dict) -> str:
    return CLOSED_BOOK_PROMPT.format(question=doc["question"])


def first_line(response: str) -> str:
    """The answer proper: chat models may open with a blank line, and extra lines are not part of the answer."""
    return next((line.strip() for line in response.splitlines() if line.strip()), "")


def score(doc: dict, results: list[str]) -> dict:
    """Per-sample SQuAD exact match, token F1 and answer containment against all gold answers."""
    return squad_scores(first_line(results[0]), doc[samples.ANSWERS])
