"""The ``niah`` task: needle-in-a-haystack prompts on a lengths x depths x needles grid, scored per sample.

Every doc carries its length, depth and needle id so that reports can pair conditions item by item and draw
depth x length heatmaps. Prompts are a pure function of the metadata and the tokenizer: the same metadata
always gives the same prompts and ``doc_hash`` values.
"""

from __future__ import annotations

import logging
import random

from lm_eval.api.task import ConfigurableTask

from rh_tasks.shared import samples, token_splice
from rh_tasks.shared.options import as_list, check_lengths_and_depths, task_options
from rh_tasks.shared.scoring import contains_answer, rouge1_recall
from rh_tasks.shared.task_data import TASK_DATA
from rh_tasks.shared.tokenizer import context_limit, resolve_tokenizer

from .haystack import PROMPT, insert_needle, load_haystack

logger = logging.getLogger(__name__)

NEEDLES = "needles/niah.jsonl"
MIN_LENGTH = 64
DEFAULTS = {
    "lengths": [1024, 2048],
    "depths": [0, 50, 100],
    "needles": None,  # None: every needle in needles/niah.jsonl
    "haystack": "time_machine",
    "shuffle_seed": 1234,  # not "seed": lm-eval merges model_args (rh-masked has its own seed) into metadata
}
GEN_TOKENS = 32  # generation_kwargs.max_gen_toks of niah.yaml: room every prompt leaves for the answer


def build_grid(tokenizer, *, lengths, depths, needles, haystack, shuffle_seed, limit=None) -> list[dict]:
    """All docs of the grid, in a seeded random order so that ``--limit N`` takes a spread-out subset."""
    lengths, depths = check_lengths_and_depths(
        "niah", lengths, depths, min_length=MIN_LENGTH, max_gen_toks=GEN_TOKENS, limit=limit
    )
    triples = TASK_DATA.read_jsonl(NEEDLES)
    by_id = {t["id"]: t for t in triples}
    chosen = list(by_id) if needles is None else as_list("niah", "needles", needles)
    unknown = [n for n in chosen if n not in by_id]
    if unknown:
        raise ValueError(f"Unknown needle ids {unknown}; available: {', '.join(by_id)}.")
    text = load_haystack(haystack)

    reserve = token_splice.count(tokenizer, PROMPT.format(context="", question=""))
    docs = []
    for needle_id in chosen:
        triple = by_id[needle_id]
        question_tokens = token_splice.count(tokenizer, triple["question"])
        for length in lengths:
            for depth in depths:
                context = insert_needle(tokenizer, text, triple["needle"], length - reserve - question_tokens, depth)
                docs.append(
                    {
                        samples.LENGTH: length,
                        samples.DEPTH: depth,
                        "needle_id": needle_id,
                        samples.CONTEXT_ID: f"{haystack}/{needle_id}",
                        "question": triple["question"],
                        "answer_prefix": triple["answer_prefix"],
                        samples.ANSWER: triple["answer"],
                        "needle": triple["needle"],
                        "context": context.text,
                        "context_tokens": context.num_tokens,
                    }
                )
    random.Random(shuffle_seed).shuffle(docs)
    return docs


def build(**metadata) -> dict:
    """lm-eval ``custom_dataset`` hook: ``--metadata`` keys override :data:`DEFAULTS`; model_args name the tokenizer."""
    import datasets

    options = task_options("niah", metadata, DEFAULTS)
    if options["needles"] is not None:
        options["needles"] = as_list("niah", "needles", options["needles"])
    tokenizer = resolve_tokenizer(**metadata)
    docs = build_grid(tokenizer, limit=context_limit(**metadata), **options)
    logger.info("niah: %d docs (lengths %s, depths %s)", len(docs), options["lengths"], options["depths"])
    return {"test": datasets.Dataset.from_list(docs)}


def doc_to_text(doc: dict) -> str:
    return PROMPT.format(context=doc["context"], question=doc["question"])


def score(doc: dict, results: list[str]) -> dict:
    """Per-sample metrics: answer containment (RULER's string_match) and ROUGE-1 recall (Wu et al.)."""
    response = results[0]
    return {
        "contains": contains_answer(response, doc[samples.ANSWER]),
        "rouge1_recall": rouge1_recall(response, doc[samples.ANSWER]),
    }


def mean_present(values: list) -> float:
    """Mean over the docs a per-length metric applies to (the others log ``None``)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


class NIAHTask(ConfigurableTask):
    """Adds one ``contains@<length>`` metric per context length of the grid, so results break down by length.

    Every doc logs every per-length key, ``None`` where it does not apply, so all metrics count the same docs.
    """

    def __init__(self, config: dict) -> None:
        super().__init__(config={key: value for key, value in config.items() if key != "class"})
        lengths = sorted({doc[samples.LENGTH] for doc in self.eval_docs})
        self._per_length = {n: f"contains@{n}" for n in lengths}
        self._aggregation_list |= {name: mean_present for name in self._per_length.values()}
        self._higher_is_better |= {name: True for name in self._per_length.values()}

    def process_results(self, doc: dict, results: list[str]) -> dict:
        metrics = super().process_results(doc, results)
        for length, name in self._per_length.items():
            metrics[name] = metrics["contains"] if length == doc[samples.LENGTH] else None
        return metrics
