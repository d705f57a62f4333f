"""Several masking conditions from one prefill: the engine behind ``rh-eval suite``.

Under the paper's decode phase every condition reads a prompt unmasked up to its last token, so that work is the
same in all of them. :class:`ConditionBatch` computes it once per prompt, lets one batch row per condition read
its KV cache, and lets each row continue with its own heads masked (:func:`mask_rows`): the last prompt token and
every generated token for generation, the positions that score the continuation for a loglikelihood request.
Under ``phase=all`` nothing is shared, but the conditions still run as rows of one batch.

lm-eval evaluates one condition at a time. The first condition to meet a prompt computes it for every condition
that has not run yet; the others find their answers waiting.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
import transformers
from torch import nn

from ..condition import MEMORY_GB
from ..masking.architectures import HeadGeometry, cache_keyword
from ..masking.audit import MaskingError
from ..masking.hooks import mask_rows
from ..masking.window import window_rows
from .state import ConditionState
from .token_record import Scored

FIRST_STAGE = 8  # tokens every condition row generates before rows with a complete answer leave the batch


@dataclass
class Timing:
    """Seconds spent on shared prefixes and on the per-condition continuations, for benchmarks."""

    prefill: float = 0.0
    continuation: float = 0.0
    prompts: int = 0
    rows: int = 0


@dataclass
class ConditionBatch:
    """Runs a prompt once for every registered condition that has not been evaluated yet.

    Args:
        model: the causal LM (hooks go on it only while a batch runs).
        memory_gb: how much memory the condition rows' KV caches may take at once; more conditions than fit
            run in several batches.
        on_rows: called with the number of rows (one condition's answer to one request each) as they are
            computed, for progress reporting.
    """

    model: nn.Module
    memory_gb: float = MEMORY_GB
    on_rows: Callable[[int], None] | None = None
    timing: Timing = field(default_factory=Timing)
    _states: dict[str, ConditionState] = field(default_factory=dict)
    _waiting: list[str] = field(default_factory=list)  # registered, not evaluated yet
    _current: str | None = None
    _ready: dict[tuple[str, Hashable], object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.memory_gb <= 0:
            raise ValueError(f"memory_gb={self.memory_gb} must be positive.")
        self._cache_keyword = cache_keyword(self.model)
        self._geometry = HeadGeometry.from_config(self.model.config)
        parameters = inspect.signature(self.model.forward).parameters
        self._prefill_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}  # only the cache

    def add(self, name: str, state: ConditionState) -> None:
        """Register a condition; its masking is counted in ``state.audit``.

        The conditions that change heads must all mask, sharing mode and phase, or all window, sharing sinks and
        phase: one batch runs one kind of hook. Windows may differ from row to row.
        """
        if name in self._states:
            raise ValueError(f"Condition {name!r} is registered twice.")
        settings = {_batch_setting(s) for s in (*self._states.values(), state) if s.changed}
        if len(settings) > 1:
            raise ValueError(
                f"Conditions evaluated together must all mask with one mode and phase, or all window with one sink "
                f"and phase; got {sorted(settings)}. Evaluate the others in another run."
            )
        self._states[name] = state
        self._waiting.append(name)

    def start(self, name: str) -> ConditionState:
        """Make ``name`` the condition being evaluated; results kept for finished conditions are dropped."""
        if name not in self._states:
            raise KeyError(f"{name!r} is not a planned condition; planned: {', '.join(self._states) or 'none'}.")
        if name in self._waiting:
            self._waiting.remove(name)
        self._current = name
        live = {name, *self._waiting}
        self._ready = {key: value for key, value in self._ready.items() if key[0] in live}
        return self._states[name]

    @property
    def current(self) -> str | None:
        return self._current

    @property
    def phase(self) -> str:
        """``decode`` shares each prompt's unmasked prefix; ``all`` batches the conditions without sharing."""
        return next((s.condition.phase for s in self._states.values() if s.changed), "all")

    def generate(
        self,
        context: torch.Tensor,
        attention_mask: torch.Tensor | None,
        max_length: int,
        stop: list[str],
        generation_kwargs: dict,
        generate: Callable[..., torch.Tensor],
        pad_token_id: int,
        decode: Callable[[list[int]], str],
    ) -> torch.Tensor:
        """What ``generate`` returns for ``context`` ``[B, T]`` (left-padded) under the current condition.

        ``generate`` is lm-eval's ``_model_generate`` (its stopping criteria and generation arguments), and
        ``decode`` turns tokens into text with special tokens kept, as those criteria read them. Each row is
        continued without its padding, and the result is laid out as a padded batch generation would be.
        """
        width = context.shape[1]
        budget = max_length - width
        options = tuple(sorted((key, repr(value)) for key, value in generation_kwargs.items()))
        rows, answered = [], {}  # a prompt may come twice in one call
        for index in range(context.shape[0]):
            ids = context[index] if attention_mask is None else context[index][attention_mask[index].bool()]
            key = ("generate", tuple(ids.tolist()), budget, tuple(stop), options)
            if key not in answered:
                if (self._current, key) not in self._ready:
                    self._generate_all(key, ids, budget, stop, generation_kwargs, generate, decode)
                answered[key] = self._ready.pop((self._current, key))
            rows.append((ids, answered[key]))
        longest = max(len(new) for _, new in rows)
        out = torch.full((len(rows), width + longest), pad_token_id, dtype=context.dtype, device=context.device)
        for index, (ids, new) in enumerate(rows):
            out[index, width - len(ids) : width] = ids
            out[index, width : width + len(new)] = new
        return out

    def loglikelihood(
        self, requests: Sequence[tuple[list[int], list[int]]], max_length: int, softmax_dtype: torch.dtype | None
    ) -> list[Scored]:
        """Each ``(context, continuation)`` scored under the current condition, token by token.

        As lm-eval scores them: the context is cut from the left to fit ``max_length``, and the continuation's
        log-probabilities come from a log-softmax in ``softmax_dtype``.
        """
        keys = [("loglikelihood", tuple(context), tuple(continuation)) for context, continuation in requests]
        missing = {key: request for key, request in zip(keys, requests) if (self._current, key) not in self._ready}
        if missing:
            self._score_all(missing, max_length, softmax_dtype)
        answered = {key: self._ready.pop((self._current, key)) for key in dict.fromkeys(keys)}  # once per request
        return [answered[key] for key in keys]

    def _names(self) -> list[str]:
        if self._current is None:
            raise RuntimeError("No condition started: call start(name) before evaluating.")
        return [self._current, *self._waiting]

    def _generate_all(self, key, ids, budget, stop, generation_kwargs, generate, decode) -> None:
        names = self._names()
        prefix = len(ids) - 1 if self.phase == "decode" else 0
        cache = self._prefill(ids[:prefix])
        start = time.perf_counter()
        for chunk in self._chunks(names, len(ids) + budget, len(ids) - prefix):
            rows = transformers.DynamicCache(config=self.model.config) if cache is None else _repeat(cache, len(chunk))
            answers = self._decode(chunk, ids, rows, budget, stop, generation_kwargs, generate, decode)
            for name, new in zip(chunk, answers):
                self._ready[(name, key)] = new
            self._computed(len(chunk))
        self._count(start, len(names))

    def _decode(self, chunk, ids, cache, budget, stop, generation_kwargs, generate, decode) -> list[torch.Tensor]:
        """The new tokens ``generate`` gives each of ``chunk``'s rows after ``ids``, continuing ``cache``.

        Greedy rows generate in stages of doubling length, and a row whose answer is complete (it holds a stop
        sequence or an end-of-text token) leaves the batch: lm-eval cuts everything after that point anyway, and
        the rows still running stop paying for it.
        """
        end = len(ids) + budget
        stage = FIRST_STAGE if _stageable(generation_kwargs) else budget
        eos = _eos_ids(self.model)
        sequences, alive, answers = ids.unsqueeze(0).repeat(len(chunk), 1), list(range(len(chunk))), {}
        fresh = len(ids) - cache.get_seq_length()
        while alive:
            width = sequences.shape[1]
            kwargs = dict(generation_kwargs, attention_mask=torch.ones_like(sequences))
            kwargs[self._cache_keyword] = cache
            with self._rows([chunk[index] for index in alive], fresh=fresh):
                sequences = generate(sequences, max_length=min(width + stage, end), stop=stop, **kwargs)
            over = sequences.shape[1] < min(width + stage, end) or sequences.shape[1] >= end  # every row stopped
            keep = []
            for position, (index, row) in enumerate(zip(alive, sequences)):
                new = row[len(ids) :]
                if over or _complete(new, stop, eos, decode):
                    answers[index] = new
                else:
                    keep.append(position)
            if keep and len(keep) < len(alive):
                cache.batch_select_indices(torch.tensor(keep, device=sequences.device))
                sequences = sequences[keep]
            alive = [alive[position] for position in keep]
            if alive and cache.get_seq_length() != sequences.shape[1] - 1:
                raise MaskingError(
                    f"After a generation stage the KV cache holds {cache.get_seq_length()} positions for "
                    f"{sequences.shape[1]} tokens (transformers {transformers.__version__}). Run the conditions one "
                    "by one."
                )
            fresh, stage = 1, stage * 2
        return [answers[index] for index in range(len(chunk))]

    def _score_all(self, missing: dict, max_length: int, softmax_dtype) -> None:
        names = self._names()
        groups: dict[tuple[int, ...], list] = {}  # shared prefix -> [(key, scored tail, continuation)]
        for key, (context, continuation) in missing.items():
            inp = (list(context) + list(continuation))[-(max_length + 1) :][:-1]
            split = len(inp) - len(continuation) if self.phase == "decode" else 0
            groups.setdefault(tuple(inp[:split]), []).append((key, inp[split:], list(continuation)))
        for prefix, items in groups.items():
            cache = self._prefill(torch.tensor(prefix, dtype=torch.long))
            start = time.perf_counter()
            covered = _covered(items)
            by_length: dict[int, list] = {}
            for item in items:
                if item[0] not in covered:
                    by_length.setdefault(len(item[1]), []).append(item)
            for length, same in by_length.items():
                rows = [(name, item) for item in same for name in names]
                for chunk in self._chunks(rows, len(prefix) + length, length):
                    self._score_rows(chunk, cache, length, softmax_dtype)
                    self._computed(len(chunk))
            for key, (longer, offset, length) in covered.items():
                for name in names:
                    self._ready[(name, key)] = self._ready[(name, longer)].head(offset, length)
                self._computed(len(names))
            self._count(start, len(names) * len(items))

    @torch.no_grad()
    def _score_rows(self, chunk, cache, length: int, softmax_dtype) -> None:
        device = _device(self.model)
        tails = torch.tensor([item[1] for _, item in chunk], dtype=torch.long, device=device)
        kwargs = {} if cache is None else {self._cache_keyword: _repeat(cache, len(chunk))}
        with self._rows([name for name, _ in chunk], fresh=length):
            logits = self.model(tails, **kwargs).logits
        logprobs = torch.nn.functional.log_softmax(logits, dim=-1, dtype=softmax_dtype)
        for (name, (key, _, continuation)), row in zip(chunk, logprobs):
            scored = row[-len(continuation) :]
            target = torch.tensor(continuation, dtype=torch.long, device=scored.device)
            argmax = scored.argmax(dim=-1) == target
            logprobs = scored.gather(1, target[:, None]).squeeze(1)
            self._ready[(name, key)] = Scored(
                float(logprobs.sum()), bool(argmax.all()), tuple(logprobs.tolist()), tuple(argmax.tolist())
            )

    @torch.no_grad()
    def _prefill(self, prefix: torch.Tensor) -> transformers.Cache | None:
        """The KV cache of ``prefix`` ``[P]``, the part of a prompt every condition reads unmasked."""
        if len(prefix) == 0:
            return None
        start = time.perf_counter()
        cache = transformers.DynamicCache(config=self.model.config)
        ids = prefix.unsqueeze(0).to(_device(self.model))
        self.model(ids, **{self._cache_keyword: cache}, use_cache=True, **self._prefill_kwargs)
        if cache.get_seq_length() != len(prefix):
            raise MaskingError(
                f"The prefix's forward pass left {cache.get_seq_length()} positions in the cache instead of "
                f"{len(prefix)} (transformers {transformers.__version__}). Run the conditions one by one."
            )
        self.timing.prefill += time.perf_counter() - start
        return cache

    def _rows(self, names: Sequence[str], fresh: int):
        states = [self._states[name] for name in names]
        changing = next((s for s in states if s.changed), None)
        audits = [s.audit for s in states]
        if changing is None:  # no row changes anything
            return contextlib.nullcontext()
        if changing.windowed:  # a row without a window keeps every head
            every = [(l, h) for l in range(self._geometry.num_layers) for h in range(self._geometry.num_heads)]
            kept = [s.heads if s.windowed else every for s in states]
            windows = [(s if s.windowed else changing).condition.window for s in states]
            sink = changing.condition.sink
            return window_rows(self.model, kept, window=windows, sink=sink, fresh=fresh, audits=audits)
        return mask_rows(self.model, [s.heads for s in states], changing.mode, fresh=fresh, audits=audits)

    def _chunks(self, rows: list, length: int, fresh: int) -> list[list]:
        """``rows`` in batches that fit in the memory budget, for ``fresh`` new positions over ``length`` in all."""
        geometry = HeadGeometry.from_config(self.model.config)
        size = next(self.model.parameters()).element_size()
        cache = 2 * geometry.num_layers * geometry.num_kv_heads * geometry.head_dim * length * size
        # The row's cache, plus what one layer holds for a moment: its cache grown by a copy and its KV heads
        # expanded for grouped queries, its attention scores; and the fresh positions' logits.
        layer = cache / geometry.num_layers * (1 + geometry.group_size) + geometry.num_heads * fresh * length * 4
        per_row = cache + layer + fresh * self.model.get_input_embeddings().num_embeddings * 4
        fit = max(1, int(self.memory_gb * 2**30 // per_row))
        batches = -(-len(rows) // fit)
        size = -(-len(rows) // batches)  # even batches: 12 rows that fit 11 at once run as 6 + 6, not 11 + 1
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def _computed(self, rows: int) -> None:
        if self.on_rows is not None:
            self.on_rows(rows)

    def _count(self, start: float, rows: int) -> None:
        self.timing.continuation += time.perf_counter() - start
        self.timing.prompts += 1
        self.timing.rows += rows


def _covered(items: list) -> dict:
    """Requests of one prefix group that another one's forward pass already scores: their scored tail begins that
    request's, and their continuation is that request's from ``offset`` on, so under causal attention (and masking
    by position) their log-probabilities are the same numbers. key -> (that request's key, offset, length).

    A teacher-forced task asks for a solution and for the same solution cut before its answer; this scores both
    in one pass per condition."""
    covered = {}
    longest_first = sorted(items, key=lambda item: -len(item[1]))
    for key, tail, continuation in longest_first:
        for other, other_tail, other_continuation in longest_first:
            if len(other_tail) <= len(tail) or other in covered or other_tail[: len(tail)] != tail:
                continue
            offset = (len(tail) - len(continuation)) - (len(other_tail) - len(other_continuation))
            if offset >= 0 and other_continuation[offset : offset + len(continuation)] == continuation:
                covered[key] = (other, offset, len(continuation))
                break
    return covered


def _batch_setting(state: ConditionState) -> tuple:
    """What the rows of one batch must share: the kind of hook, and its settings that are not per row."""
    c = state.condition
    return ("window", f"sink={c.sink}", c.phase) if state.windowed else ("mask", c.mode, c.phase)


def _stageable(generation_kwargs: dict) -> bool:
    """Greedy generation whose arguments mean the same when a generation resumes: not ``min_new_tokens`` or
    ``max_new_tokens``, which count from where each call starts."""
    return not generation_kwargs.get("do_sample") and not {"min_new_tokens", "max_new_tokens"} & set(generation_kwargs)


def _eos_ids(model: nn.Module) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def _complete(new: torch.Tensor, stop: Sequence[str], eos: set[int], decode) -> bool:
    """Whether a row's answer can no longer change: lm-eval keeps its text only up to the first stop sequence,
    and generation ends at an end-of-text token."""
    tokens = new.tolist()
    if eos & set(tokens):
        return True
    text = decode(tokens)
    return any(term and term in text for term in stop)


def _repeat(cache: transformers.Cache, rows: int) -> transformers.Cache:
    """The one-row prefix cache as ``rows`` rows that read the same memory.

    Each row's first step concatenates the prefix into a tensor of its own, so copying it here as well would only
    double the traffic; the shared prefix stays untouched for the next batch.
    """
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(getattr(layer, "keys", None), torch.Tensor) for layer in layers):
        raise MaskingError(
            f"transformers {transformers.__version__}: {type(cache).__name__} no longer keeps per-layer key and "
            "value tensors where rh-eval reads them. Run the conditions one by one."
        )
    copied = copy.copy(cache)
    copied.layers = [copy.copy(layer) for layer in layers]
    for layer in copied.layers:
        layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
        layer.values = layer.values.expand(rows, *layer.values.shape[1:])
    return copied


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
