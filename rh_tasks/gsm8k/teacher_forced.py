"""``gsm8k_cot_nll`` and ``gsm8k_direct_nll``: GSM8K's gold answers scored token by token (teacher forcing).

Accuracy needs a model that can solve GSM8K; small models score 0 and say nothing about what masking removes.
The log-likelihood of the gold solution, after the same 8-shot prompt as ``gsm8k_cot``, measures the same
ability on any model: a chain of thought that keeps reading the question and its own earlier steps should lose
likelihood when the heads that copy from context are masked, and a direct answer much less.

Each document asks two log-likelihood requests of one context: the whole continuation, and the same
continuation cut just before the answer's number. Their difference is the answer's own log-likelihood, which
every backend can give (``hf``, ``vllm``, ``rh-masked``). Under ``rh-masked`` the documents also ask for the
per-token log-probabilities of each request, which the report classes by :mod:`.token_classes`.
"""

from __future__ import annotations

import logging

from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from model_wrappers.lm.token_record import RECORD_FIELD
from rh_tasks.shared.options import check_option_names
from rh_tasks.shared.tokenizer import context_limit, resolve_tokenizer

from .solutions import direct_answer, gold_solution, split_answer
from .task import describe_source, load_test
from .teacher_forced_fields import BEFORE_ANSWER, CONTINUATION

logger = logging.getLogger(__name__)


def cot_dataset(source: str = "packaged", **metadata) -> dict:
    """``custom_dataset`` of ``gsm8k_cot_nll``: every test question with its gold solution as the continuation."""
    return _dataset("gsm8k_cot_nll", gold_solution, source, metadata)


def direct_dataset(source: str = "packaged", **metadata) -> dict:
    """``custom_dataset`` of ``gsm8k_direct_nll``: the same questions, "The answer is N." as the continuation."""
    return _dataset("gsm8k_direct_nll", direct_answer, source, metadata)


def _dataset(task: str, continuation, source: str, metadata: dict) -> dict:
    import datasets

    check_option_names(task, metadata, ("source",))
    rows = []
    for row in load_test(source):
        text = continuation(row["answer"])
        rows.append({**row, CONTINUATION: text, BEFORE_ANSWER: split_answer(text)[0], RECORD_FIELD: True})
    logger.info("%s: data: %s.", task, describe_source(source))
    return {"test": datasets.Dataset.from_list(rows)}


class TeacherForcedTask(ConfigurableTask):
    """Two log-likelihood requests per document, and NLL per token, per byte and of the answer.

    Token counts are those of the evaluated model's tokenizer, counted as lm-eval's ``hf`` model splits a request:
    the tokens of context + continuation beyond those of the context alone, less its trailing whitespace (which
    lm-eval moves into the continuation).
    """

    def __init__(self, config: dict) -> None:
        super().__init__(config={key: value for key, value in config.items() if key != "class"})
        metadata = self.config.metadata or {}
        self._tokenizer, self._limit = resolve_tokenizer(**metadata), context_limit(**metadata)
        self._sizes: dict[tuple[str, str], tuple[int, int]] = {}  # (question, continuation) -> (tokens, bytes)

    def construct_requests(self, doc: dict, ctx: str, **kwargs) -> list[Instance]:
        chat = kwargs.pop("apply_chat_template", False)
        kwargs.pop("chat_template", None)
        delimiter = "" if chat else self.config.target_delimiter  # a chat turn starts the answer itself
        whole, before = delimiter + doc[CONTINUATION], delimiter + doc[BEFORE_ANSWER]
        self._sizes[_key(doc)] = (self._check_split(ctx, whole, before), len(whole.encode("utf-8")))
        return [
            Instance(request_type="loglikelihood", doc=doc, arguments=(ctx, text), idx=index, **kwargs)
            for index, text in enumerate((whole, before))
        ]

    def _check_split(self, context: str, whole: str, before: str) -> int:
        """The continuation's token count; the cut before the answer must fall between tokens, so that the two
        requests' difference is the answer's own log-likelihood."""
        start = len(self._encode(context.rstrip()))
        tokens, cut = self._encode(context + whole), self._encode(context + before)
        if self._limit is not None and len(tokens) > self._limit:
            raise ValueError(
                f"{self.config.task}: a prompt and its continuation take {len(tokens)} tokens, more than the model's "
                f"{self._limit}; lm-eval would cut the prompt's start without a word. Use a model with a longer "
                "context, or fewer few-shot examples (--num_fewshot)."
            )
        if tokens[: len(cut)] != cut:
            raise ValueError(
                f"{self.config.task}: the tokenizer joins 'The answer is' with the number after it, so the answer's "
                "log-likelihood cannot be separated. This tokenizer is not supported by this task."
            )
        return len(tokens) - start

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def process_results(self, doc: dict, results: list[tuple[float, bool]]) -> dict:
        (whole, _), (before, _) = results
        tokens, size = self._sizes[_key(doc)]
        return {"nll_token": -whole / tokens, "nll_byte": -whole / size, "nll_answer": before - whole}


def _key(doc: dict) -> tuple[str, str]:
    return doc["question"], doc[CONTINUATION]
