"""Per-token log-probabilities of the log-likelihood requests whose documents ask for them.

lm-eval's log-likelihood interface returns one sum per request, which is enough for a score but not for asking
which tokens a condition hurts. A document that sets :data:`RECORD_FIELD` gets each request's tokens and their
log-probabilities recorded as well, from the same forward pass that gave the sum. The record goes into the
results file, beside the samples file, under ``config.token_logprobs``: keyed by task, document and request
(every task this model recorded under the condition, so a results file may also hold tasks logged elsewhere),
with the sha256 of the request's context and continuation as lm-eval hashes them in the samples, so that a
reader can check that a record belongs to the samples it sits beside.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

RECORD_FIELD = "record_token_logprobs"  # a document field: record this document's requests token by token
RESULTS_KEY = "token_logprobs"  # where the record goes in the results file's config


@dataclass(frozen=True)
class Scored:
    """One log-likelihood request under one condition: lm-eval's answer, and what it is the sum of."""

    logprob: float
    greedy: bool
    logprobs: tuple[float, ...]  # one per continuation token
    argmax: tuple[bool, ...]  # per continuation token: is it the most likely one?

    def head(self, start: int, length: int) -> Scored:
        """The scores of ``length`` continuation tokens from ``start``: what a request whose continuation is
        that part of this one's, after the same text, gets from a causal model."""
        logprobs, argmax = self.logprobs[start : start + length], self.argmax[start : start + length]
        return Scored(float(sum(logprobs)), all(argmax), logprobs, argmax)

    @property
    def answer(self) -> tuple[float, bool]:
        """What lm-eval expects back: (log-probability of the continuation, whether greedy decoding gives it)."""
        return self.logprob, self.greedy


def sha256(text: str) -> str:
    """lm-eval's ``hash_string``: how the samples file hashes prompts and documents."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TokenRecord:
    """The recorded requests of the condition being evaluated, as ``config.token_logprobs`` holds them."""

    _entries: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # task -> doc_id -> requests

    @staticmethod
    def wanted(instances: Sequence) -> dict[tuple[str, str], list]:
        """(context, continuation) -> the lm-eval instances that ask for it and want a token record."""
        wanted: dict[tuple[str, str], list] = {}
        for instance in instances:
            doc = getattr(instance, "doc", None)
            if isinstance(doc, dict) and doc.get(RECORD_FIELD):
                wanted.setdefault(tuple(instance.args), []).append(instance)
        return wanted

    def add(self, instances: Sequence, tokens: Sequence[int], scored: Scored, decode: Callable[[list[int]], str]):
        """Record one scored request for every instance that asked for it.

        ``ends[i]`` is where token ``i`` ends in ``text``, the decoded continuation, so that a reader can tell
        which characters each log-probability belongs to.
        """
        tokens = list(tokens)
        entry = {
            "tokens": tokens,
            "logprobs": list(scored.logprobs),
            "text": decode(tokens),
            "ends": [len(decode(tokens[: i + 1])) for i in range(len(tokens))],
        }
        for instance in instances:
            context, continuation = instance.args
            requests = self._entries.setdefault(instance.task_name, {}).setdefault(str(instance.doc_id), [])
            requests[:] = [r for r in requests if r["idx"] != instance.idx]
            requests.append(
                {"idx": instance.idx, "context_sha256": sha256(context), "continuation_sha256": sha256(continuation)}
                | entry
            )

    def start(self, instances: Sequence) -> dict[tuple[str, str], list]:
        """Begin a log-likelihood call: the requests it should record (:meth:`wanted`). A task evaluated again
        starts its record afresh, so a results file never mixes documents of two evaluations."""
        wanted = self.wanted(instances)
        for task in {instance.task_name for found in wanted.values() for instance in found}:
            self._entries.pop(task, None)
        return wanted

    def as_json(self) -> dict:
        return {
            task: {doc: sorted(rs, key=lambda r: r["idx"]) for doc, rs in docs.items()}
            for task, docs in self._entries.items()
        }

    def clear(self) -> None:
        self._entries.clear()
