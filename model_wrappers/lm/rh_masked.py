"""``rh-masked``: lm-eval's HF model with attention heads masked (or windowed) during every forward pass it makes.

A thin HFLM subclass (after lm-eval's ``steered`` model): it takes its own ``--model_args``, resolves the head
set before any weights load, and wraps ``_model_call`` and ``_model_generate`` in :func:`mask_heads` (or, for a
windowed condition, :func:`window_heads`), so every lm-eval task works unchanged. Every condition proves itself:
a canary at load checks that the intervention changes the logits, and the audit of every forward pass goes into
``config.rh_masking.audit`` of the results file.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from ..condition import ARGUMENTS, MEMORY_GB, Condition, ConditionError, refuse_misspelt
from ..heads.load import load_head_scores
from ..heads.scores import HeadScores
from ..heads.selection import resolve_heads
from ..masking.architectures import HeadGeometry, check_supported
from ..masking.canary import PROBE_TEXT, Probe, check_masking_changes_logits, check_window_changes_logits
from ..masking.hooks import mask_heads
from ..masking.modes import MASK_MODES, MaskMode
from ..masking.window import window_heads
from ..packaged import DATA
from ..sources.gguf_cache import EMBEDDED_NAME, GEMMA_NAME
from ..sources.resolve import cached_gguf_sha256, model_source
from .engine import ConditionBatch, Timing
from .progress import AnsweredHook, ItemProgress
from .state import ConditionState
from .token_record import RESULTS_KEY, TokenRecord

logger = logging.getLogger(__name__)

MEAN_REFERENCE_TOKENS = 512  # tokens of packaged text whose per-head mean output ``mode=mean`` substitutes
MEAN_REFERENCE_TEXT = "mean_reference.txt"  # the opening of H. G. Wells' The Time Machine (public domain)
WINDOW_PROBE_MARGIN = 16  # tokens a windowed condition's canary probe reaches past its sinks and window
# Models rh-eval names itself -> their packaged scores, the default of heads=retrieval/random.
PACKAGED_SCORES = {
    EMBEDDED_NAME: "head_scores/smollm2-135m-instruct.json",
    GEMMA_NAME: "head_scores/gemma-3-270m.json",
}


class PromptTooLongError(ValueError):
    """A prompt does not fit in the model's context; lm-eval would otherwise cut it silently."""


@register_model("rh-masked")
class RHMaskedLM(HFLM):
    """HFLM with retrieval-head masking, or with every head but a kept set restricted to a window.

    The condition comes as ``--model_args`` (``heads``, ``k``, ``head_scores``, ``mode``, ``phase``, ``seed``,
    ``match``, ``unit``, ``window``, ``sink``, ``keep``: see :data:`~model_wrappers.condition.ARGUMENTS`) or as one
    :class:`~model_wrappers.condition.Condition`. Omit ``pretrained`` to evaluate the embedded
    SmolLM2-135M-Instruct; ``pretrained=gemma-3-270m`` names the optional packaged Gemma-3-270M. Both default
    ``heads=retrieval`` to their packaged scores.
    """

    def __init__(self, pretrained=None, condition: Condition | None = None, **kwargs) -> None:
        refuse_misspelt(kwargs, known=inspect.signature(HFLM.__init__).parameters)
        arguments = {name: kwargs.pop(name) for name in ARGUMENTS if name in kwargs}
        if condition is not None and arguments:
            raise ConditionError(f"Pass a condition or its arguments ({', '.join(arguments)}), not both.")
        self._source = _resolve_source(pretrained, kwargs)
        self._requested = condition or Condition.parse(**arguments)
        self._modes: dict[str, MaskMode] = {}  # bound once per model: mean mode's reference pass runs once
        self._probes: dict[int, Probe] = {}  # windowed conditions' canary probes by length, read once per model
        self._tail = 1
        self._batch: ConditionBatch | None = None
        self._items: ItemProgress | None = None
        self._resolved = None  # set as soon as the config is known (not at all for a model object)
        self._tokens = TokenRecord()  # per-token log-probabilities of the condition being evaluated
        self._recording: dict[tuple[str, str], list] = {}  # the requests of one loglikelihood call to record

        start = time.perf_counter()
        super().__init__(pretrained=self._source["path"], **kwargs)
        logger.info("rh-masked: loaded %s in %.1f s", self._source["name"], time.perf_counter() - start)
        self.state = self._prepare(self._requested, self._resolved)

    @property
    def condition(self) -> Condition:
        """The condition being evaluated, every masked head listed."""
        return self.state.condition

    def remask(self, condition: Condition) -> None:
        """Switch to another condition without reloading weights.

        A suite of conditions loads a model once and calls this between runs. This also leaves the shared mode of
        :meth:`plan_conditions`: from here on every condition computes its own forward passes.
        """
        self._batch = None
        self._tokens.clear()
        self.state = self._prepare(condition)

    def plan_conditions(self, conditions: dict[str, Condition], memory_gb: float = MEMORY_GB) -> None:
        """Evaluate these conditions (by name) together, one prefill per prompt.

        Every condition is resolved and checked (canary) now. Then :meth:`use_condition` switches between them,
        and the first condition to meet a prompt computes it for every condition not evaluated yet: under
        ``phase=decode`` from one shared prefill, as rows of one batch. Greedy outputs and scores are those of
        evaluating the conditions one by one. Masked conditions must share ``mode`` and ``phase``.
        """
        batch = ConditionBatch(self.model, memory_gb=memory_gb, on_rows=self._rows_answered)
        for name, condition in conditions.items():
            batch.add(name, self._prepare(condition))
        self._batch = batch

    def use_condition(self, name: str) -> None:
        """Switch to a condition of :meth:`plan_conditions`; its results file describes it as ``remask`` would."""
        if self._batch is None:
            raise KeyError(f"{name!r} is not a planned condition; call plan_conditions first.")
        self._tokens.clear()
        self.state = self._batch.start(name)

    @contextmanager
    def progress(self, callback: Callable[[int], None]) -> Iterator[None]:
        """Inside, ``callback(n)`` hears of every ``n`` more items answered, and lm-eval's own bars are off.

        An item is one document of a task, whatever its number of requests (one per choice for multiple choice).
        Under :meth:`plan_conditions` an item is counted once per condition when it is computed: the first
        condition to meet a prompt computes it for all of them, so that condition advances by all their items.
        """
        items, hook = ItemProgress(callback), self.cache_hook
        self._items = items
        self.cache_hook = AnsweredHook(hook, lambda: self._batch is None and items.answered(1))
        try:
            yield
        finally:
            self._items, self.cache_hook = None, hook

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self._recording = self._tokens.start(requests)
        try:
            with self._answering(requests):
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm or self._items is not None)
        finally:
            self._recording = {}

    def generate_until(self, requests, disable_tqdm: bool = False):
        with self._answering(requests):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or self._items is not None)

    def _answering(self, requests):
        return nullcontext() if self._items is None else self._items.call(requests)

    def _rows_answered(self, rows: int) -> None:
        if self._items is not None:
            self._items.answered(rows)

    def shared_timing(self) -> Timing:
        """Seconds the conditions of :meth:`plan_conditions` spent on shared prefixes and on their own rows."""
        if self._batch is None:
            raise RuntimeError("No conditions are planned: call plan_conditions first.")
        return self._batch.timing

    def _get_config(self, pretrained, **kwargs) -> None:
        """Resolve and validate the head set as soon as the config is known, before any weights load."""
        super()._get_config(pretrained, **kwargs)
        self._resolved = self._resolve(self._requested, self._config)

    def _resolve(self, condition: Condition, config) -> tuple[Condition, HeadScores | None]:
        """The condition's heads on this model, and the scores they were ranked by."""
        check_supported(config)
        if condition.kind in ("retrieval", "random") and condition.head_scores is None:
            if self._source["name"] in PACKAGED_SCORES:
                condition = replace(condition, head_scores=_packaged_scores(self._source["name"]))
        geometry = HeadGeometry.from_config(config)
        scores = None if condition.head_scores is None else load_head_scores(condition.head_scores, geometry)
        return resolve_heads(condition, geometry, scores), scores

    def _prepare(self, condition: Condition, resolved=None) -> ConditionState:
        """The condition resolved on the loaded model, its mode bound, and proven by the canary."""
        resolved, scores = resolved or self._resolve(condition, self._model.config)
        masks = resolved.window is None and resolved.heads
        if masks and resolved.mode not in self._modes:
            self._modes[resolved.mode] = MASK_MODES[resolved.mode]().bind(self.model, self._reference_ids)
        mode = self._modes.get(resolved.mode) if masks else MASK_MODES["uniform"]()
        geometry = HeadGeometry.from_config(self.model.config)
        state = ConditionState(resolved, mode, scores, geometry=geometry)
        if state.windowed:
            self._check_window(state)
        else:
            probe = self.tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
            check_masking_changes_logits(
                self.model, list(state.heads), probe, mode=state.mode, phase=resolved.phase, audit=state.audit
            )
        logger.info("rh-masked: %s (%d heads changed)", resolved.label, len(state.changed))
        return state

    def _check_window(self, state: ConditionState) -> None:
        """A windowed condition must window some head, and its window must change the logits of a long probe."""
        condition = state.condition
        if not state.changed:
            raise ConditionError(
                f"{condition.label} keeps every head whole, so nothing is windowed: that is the unmasked model. "
                "Keep fewer heads (a smaller k), or drop window=."
            )
        length = condition.sink + condition.window + WINDOW_PROBE_MARGIN
        if length not in self._probes:
            self._probes[length] = Probe(self.model, self._reference_ids(length))
        check_window_changes_logits(
            self.model,
            list(state.heads),
            self._probes[length],
            window=condition.window,
            sink=condition.sink,
            phase=condition.phase,
            audit=state.audit,
        )

    def _masked(self):
        if self.state.windowed:
            return window_heads(
                self.model,
                self.state.heads,
                window=self.condition.window,
                sink=self.condition.sink,
                phase=self.condition.phase,
                tail=self._tail,
                audit=self.state.audit,
            )
        return mask_heads(
            self.model,
            self.state.heads,
            mode=self.state.mode,
            phase=self.condition.phase,
            tail=self._tail,
            audit=self.state.audit,
        )

    def _model_call(self, inps, attn_mask=None, labels=None):
        with self._masked():
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if self._batch is not None:
            attention_mask = generation_kwargs.pop("attention_mask", None)
            return self._batch.generate(
                context,
                attention_mask,
                max_length,
                stop,
                generation_kwargs,
                generate=super()._model_generate,
                pad_token_id=self.tokenizer.pad_token_id,
                decode=lambda tokens: self.tok_decode(tokens, skip_special_tokens=False),
            )
        with self._masked():
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """Score planned conditions together (:meth:`plan_conditions`), else one condition as below.

        Requests whose documents ask for a token record are scored by the engine, one condition in one batch, which
        gives every token's log-probability: under ``phase=decode`` from an unmasked pass over the context and one
        masked pass over the whole continuation. Under ``phase=decode`` the others are scored in groups of equal
        input and continuation lengths.

        The decode phase masks (or windows) the position that predicts the first continuation token and every
        later one, i.e. the last ``len(continuation)`` positions of each row; equal shapes make that the same slice
        for every row of a batch (lm-eval pads rows on the right).
        """
        if self._batch is not None:
            return self._score_in(self._batch, requests)
        recorded = [i for i, (request, _, _) in enumerate(requests) if request in self._recording]
        others = sorted(set(range(len(requests))) - set(recorded))
        results: list = [None] * len(requests)
        if recorded:
            solo = ConditionBatch(self.model)
            solo.add(self.condition.label, self.state)
            solo.start(self.condition.label)
            for index, answer in zip(recorded, self._score_in(solo, [requests[i] for i in recorded])):
                results[index] = answer
        if others:
            answers = self._score_directly([requests[i] for i in others], disable_tqdm, override_bs)
            for index, answer in zip(others, answers):
                results[index] = answer
        return results

    def _score_in(self, batch: ConditionBatch, requests) -> list[tuple[float, bool]]:
        """lm-eval's answers from the engine's scores, with the token record of the requests that ask for one."""
        scored = batch.loglikelihood(
            [(context, continuation) for _, context, continuation in requests], self.max_length, self.softmax_dtype
        )
        decode = functools.partial(self.tok_decode, skip_special_tokens=False)
        for (request, _, continuation), score in zip(requests, scored):
            if request in self._recording:
                self._tokens.add(self._recording[request], continuation, score, decode)
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, score.answer)
        return [score.answer for score in scored]

    def _score_directly(self, requests, disable_tqdm: bool, override_bs) -> list:
        if self.condition.phase != "decode" or not self.state.changed:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (_, context, continuation) in enumerate(requests):
            scored = min(len(context) + len(continuation), self.max_length + 1) - 1
            groups.setdefault((scored, len(continuation)), []).append(index)
        results: list = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Running loglikelihood requests")
        try:
            for (_, continuation_length), indices in groups.items():
                self._tail = continuation_length
                scored = super()._loglikelihood_tokens(
                    [requests[i] for i in indices], disable_tqdm=True, override_bs=override_bs
                )
                for index, result in zip(indices, scored):
                    results[index] = result
                bar.update(len(indices))
        finally:
            self._tail = 1
            bar.close()
        return results

    def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None, truncation=False):
        input_ids, attention_mask = super().tok_batch_encode(strings, padding_side=padding_side, truncation=truncation)
        if left_truncate_len and input_ids.shape[1] > left_truncate_len:
            raise PromptTooLongError(
                f"A prompt of {input_ids.shape[1]} tokens does not fit: the model takes {self.max_length} tokens "
                f"and the task reserves {self.max_length - left_truncate_len} for generation. Shorten the task's "
                "contexts (e.g. smaller niah lengths) or raise max_length if the model supports it."
            )
        return input_ids, attention_mask

    def _reference_ids(self, length: int = MEAN_REFERENCE_TOKENS) -> torch.Tensor:
        """The first ``length`` tokens of the packaged reference text ``[1, length]``, repeated if it is shorter."""
        ids = self.tokenizer(DATA.read_text(MEAN_REFERENCE_TEXT), return_tensors="pt")["input_ids"]
        return ids.repeat(1, -(-length // ids.shape[1]))[:, :length]

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["rh_masking"] = {
            **self.state.record(),
            "model": self._source["name"],
            "model_sha256": self._source["sha256"],
        }
        info[RESULTS_KEY] = self._tokens.as_json()
        return info


def _packaged_scores(name: str) -> str:
    return str(DATA.path(PACKAGED_SCORES[name]))


def _resolve_source(pretrained, kwargs: dict) -> dict:
    """Where the weights come from, and an identity for them that survives into the results file."""
    if pretrained is not None and not isinstance(pretrained, (str, Path)):  # an already loaded model
        return {"path": pretrained, "name": pretrained.config.name_or_path, "sha256": None}
    source = model_source(pretrained, kwargs.get("gguf_file"))
    path, _ = source.loadable()
    if source.kind == "gguf":
        kwargs.pop("gguf_file")  # the converted cache loads without it
        return {"path": path, "name": source.name, "sha256": cached_gguf_sha256(path)}
    return {"path": path, "name": source.name, "sha256": source.known_sha256}
