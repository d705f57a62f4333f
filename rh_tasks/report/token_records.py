"""A run's token record (``config.token_logprobs``, written by rh-masked) checked against its samples, and read.

The record sits beside the samples file, so nothing but these checks ties the two together: every recorded
request must be a request of the samples, with the same context and continuation (sha256, as lm-eval hashes
them), token log-probabilities that sum to the log-likelihood the samples logged, and decoded tokens that spell
the continuation. A record that fails any check is refused, never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_wrappers.lm.token_record import sha256

from .runs import Item, ReportInputError, Run

TOLERANCE = 1e-5  # of the sum of |log-probabilities|: float32 rounding of a sum, far below any real difference


@dataclass(frozen=True)
class TokenScores:
    """One request's continuation token by token: log-probabilities, and where each token lies in the text."""

    logprobs: np.ndarray  # [tokens]
    spans: list[tuple[int, int]]  # [start, end) of each token in the continuation the samples logged (a token of
    # the context's trailing whitespace, which lm-eval scores with the continuation, is an empty span at 0)


def check_token_records(runs: list[Run]) -> None:
    """Raise ReportInputError for the first run whose token record does not belong to its samples.

    A record of a task without samples in the run is another results file's (one model evaluates a condition's
    tasks one after another) and is not read from this run.
    """
    for run in runs:
        for task, docs in run.token_logprobs.items():
            if task in run.tasks:
                _check_task(run, task, docs)


def _check_task(run: Run, task: str, docs: dict) -> None:
    def refuse(what: str) -> ReportInputError:
        return ReportInputError(
            f"{run.path}: the token record of {task} {what}, so it does not belong to the samples beside it. "
            "Rerun that condition with rh-masked and --log_samples, and keep its files together."
        )

    items = {str(item.doc_id): item for item in run.tasks[task].items.values() if item.requests}
    if not isinstance(docs, dict):
        raise refuse("is not a mapping of doc_id to requests")
    if set(docs) != set(items):
        raise refuse(f"covers documents {_few(docs)} but the samples ask for {_few(items)}")
    for doc_id, entries in docs.items():
        item = items[doc_id]
        if not isinstance(entries, list) or len(entries) != len(item.requests):
            raise refuse(f"has the wrong number of requests for doc_id {doc_id}")
        for index, entry in enumerate(entries):
            try:
                _read(entry, item, index)
            except (KeyError, TypeError, ValueError) as err:
                raise refuse(f"does not match doc_id {doc_id}, request {index} ({err})") from None


def token_scores(run: Run, task: str, item: Item, request: int = 0) -> TokenScores | None:
    """A checked request's tokens, or None when the run recorded none for the task (e.g. a plain ``hf`` run)."""
    entries = run.token_logprobs.get(task, {}).get(str(item.doc_id))
    return None if entries is None else _read(entries[request], item, request)


def _read(entry: dict, item: Item, index: int) -> TokenScores:
    context, continuation, loglikelihood = item.requests[index]
    if entry["idx"] != index:
        raise ValueError(f"request index {entry['idx']}")
    if entry["context_sha256"] != sha256(context) or entry["continuation_sha256"] != sha256(continuation):
        raise ValueError("context or continuation hash")
    logprobs = np.asarray(entry["logprobs"], dtype=float)
    ends, text = list(entry["ends"]), entry["text"]
    if not (logprobs.size == len(entry["tokens"]) == len(ends)) or not np.all(np.isfinite(logprobs)):
        raise ValueError("token, log-probability and offset counts")
    if abs(logprobs.sum() - loglikelihood) > TOLERANCE * (np.abs(logprobs).sum() + 1):
        raise ValueError(f"log-probabilities sum to {logprobs.sum():.6f}, the samples logged {loglikelihood:.6f}")
    # lm-eval moves the context's trailing whitespace into the continuation before tokenizing it, and a decoder
    # may drop a leading space: the tokens spell the end of that whitespace + continuation.
    moved = context[len(context.rstrip()) :]
    scored = moved + continuation
    shift = len(scored) - len(text)
    if shift < 0 or scored[shift:] != text or scored[:shift].strip():
        raise ValueError(f"decoded tokens spell {text[:40]!r}, not the continuation {continuation[:40]!r}")
    ends = np.maximum.accumulate(np.clip(ends, 0, len(text))) + shift - len(moved) if ends else np.array([], int)
    starts = np.concatenate([[shift - len(moved)], ends[:-1]]) if len(ends) else ends
    starts, ends = np.maximum(starts, 0), np.maximum(ends, 0)
    return TokenScores(logprobs, [(int(a), int(b)) for a, b in zip(starts, ends)])


def _few(keys) -> str:
    shown = sorted(keys, key=lambda k: (len(k), k))
    return "{" + ", ".join(shown[:5]) + (", …" if len(shown) > 5 else "") + "}"
