"""``rh-masked``: lm-eval's HF model with attention heads masked during every forward pass it makes.

A thin HFLM subclass (after lm-eval's ``steered`` model): it takes its own ``--model_args``, resolves the head
set before any weights load, and wraps ``_model_call`` and ``_model_generate`` in :func:`mask_heads`, so every
lm-eval task works unchanged. Every masked condition proves itself: a canary at load checks that masking changes
the logits, and the audit of every forward pass goes into ``config.rh_masking.audit`` of the results file.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from ..condition import MEMORY_GB
from ..heads.load import load_head_scores
from ..heads.selection import HeadSelection, select_heads
from ..masking.architectures import HeadGeometry, check_supported
from ..masking.audit import MaskingAudit
from ..masking.canary import PROBE_TEXT, check_masking_changes_logits
from ..masking.hooks import MODES, PHASES, head_output_means, mask_heads
from ..packaged import DATA
from ..sources.gguf_cache import EMBEDDED_NAME, GEMMA_NAME
from ..sources.resolve import cached_gguf_sha256, model_source
from .engine import ConditionBatch, Timing
from .progress import AnsweredHook, ItemProgress

logger = logging.getLogger(__name__)

MEAN_REFERENCE_TOKENS = 512  # tokens of packaged text whose per-head mean output ``mode=mean`` substitutes
MEAN_REFERENCE_TEXT = "mean_reference.txt"  # the opening of H. G. Wells' The Time Machine (public domain)
# Models rh-eval names itself -> their packaged scores, the default of heads=retrieval/random.
PACKAGED_SCORES = {
    EMBEDDED_NAME: "head_scores/smollm2-135m-instruct.json",
    GEMMA_NAME: "head_scores/gemma-3-270m.json",
}


class PromptTooLongError(ValueError):
    """A prompt does not fit in the model's context; lm-eval would otherwise cut it silently."""


@register_model("rh-masked")
class RHMaskedLM(HFLM):
    """HFLM with retrieval-head masking.

    Omit ``pretrained`` to evaluate the embedded SmolLM2-135M-Instruct; ``pretrained=gemma-3-270m`` names the
    optional packaged Gemma-3-270M. Both default ``heads=retrieval`` to their packaged scores.
    """

    def __init__(
        self,
        pretrained=None,
        heads="none",
        k: int | None = None,
        head_scores: str | None = None,
        mode: str = "uniform",
        phase: str = "all",
        seed: int = 0,
        match: str | None = None,
        unit: str = "head",
        **kwargs,
    ) -> None:
        _refuse_misspelt(kwargs)
        self._source = _resolve_source(pretrained, kwargs)
        self._set_masking(
            heads=heads, k=k, head_scores=head_scores, mode=mode, phase=phase, seed=seed, match=match, unit=unit
        )
        self._means = None
        self._tail = 1
        self._batch: ConditionBatch | None = None
        self._planned: dict[str, dict] = {}
        self._items: ItemProgress | None = None

        start = time.perf_counter()
        super().__init__(pretrained=self._source["path"], **kwargs)
        logger.info("rh-masked: loaded %s in %.1f s", self._source["name"], time.perf_counter() - start)
        if not hasattr(self, "selection"):  # a model object was passed, so no config was loaded first
            self._select_heads(self._model.config)
        self._prepare_masking()

    def remask(self, **masking) -> None:
        """Switch to another masking condition (same arguments as the constructor) without reloading weights.

        A suite of conditions loads a model once and calls this between runs. This also leaves the shared mode of
        :meth:`plan_conditions`: from here on every condition computes its own forward passes.
        """
        self._batch, self._planned = None, {}
        self._set_masking(**masking)
        self._select_heads(self._model.config)
        self._prepare_masking()

    def plan_conditions(self, conditions: dict[str, dict], memory_gb: float = MEMORY_GB) -> None:
        """Evaluate these conditions (name -> :meth:`remask` arguments) together, one prefill per prompt.

        Every condition is resolved and checked (canary) now. Then :meth:`use_condition` switches between them,
        and the first condition to meet a prompt computes it for every condition not evaluated yet: under
        ``phase=decode`` from one shared prefill, as rows of one batch. Greedy outputs and scores are those of
        evaluating the conditions one by one. All conditions must share ``mode`` and ``phase``.
        """
        planned = {}
        for name, masking in conditions.items():
            self.remask(**masking)
            planned[name] = self._masking_state()
        modes = {(state["_mode"], state["_phase"]) for state in planned.values()}
        if len(modes) > 1:
            raise ValueError(f"Conditions evaluated together must share mode and phase; got {sorted(modes)}.")
        batch = ConditionBatch(
            self.model,
            mode=self._mode,
            phase=self._phase,
            means=self._means,
            memory_gb=memory_gb,
            on_rows=self._rows_answered,
        )
        for name, state in planned.items():
            batch.add(name, state["selection"].heads, state["_audit"])
        self._batch, self._planned = batch, planned

    def use_condition(self, name: str) -> None:
        """Switch to a condition of :meth:`plan_conditions`; its results file describes it as ``remask`` would."""
        if name not in self._planned:
            raise KeyError(f"{name!r} is not a planned condition; planned: {', '.join(self._planned) or 'none'}.")
        vars(self).update(self._planned[name])
        self._batch.start(name)

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
        with self._answering(requests):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or self._items is not None)

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

    def _masking_state(self) -> dict:
        names = ("selection", "_scores", "_head_scores_path", "_selection_args", "_mode", "_phase", "_audit")
        return {key: getattr(self, key) for key in names}

    def _set_masking(
        self, heads="none", k=None, head_scores=None, mode="uniform", phase="all", seed=0, match=None, unit="head"
    ) -> None:
        heads, k, seed = _as_heads(heads), _as_count("k", k), _as_count("seed", seed, minimum=0) or 0
        mode, phase = _as_word("mode", mode, "uniform"), _as_word("phase", phase, "all")
        unit, match = _as_word("unit", unit, "head"), _as_word("match", match, None)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is unknown; choose one of {', '.join(MODES)}.")
        if phase not in PHASES:
            raise ValueError(f"phase={phase!r} is unknown; choose one of {', '.join(PHASES)}.")
        needs_scores = isinstance(heads, str) and heads.strip().lower() in ("retrieval", "random")
        if needs_scores and _is_none(head_scores) and self._source["name"] in PACKAGED_SCORES:
            head_scores = _packaged_scores(self._source["name"])
        self._head_scores_path = None if _is_none(head_scores) else str(head_scores)
        self._selection_args = dict(heads=heads, k=k, seed=seed, match=match, unit=unit)
        self._mode, self._phase = mode, phase
        self._audit = MaskingAudit()

    def _prepare_masking(self) -> None:
        if self._mode == "mean" and self.selection.heads and self._means is None:
            self._means = self._reference_means()
        probe = self.tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
        check_masking_changes_logits(
            self.model,
            list(self.selection.heads),
            probe,
            mode=self._mode,
            phase=self._phase,
            means=self._means,
            audit=self._audit,
        )
        logger.info(
            "rh-masked: masking %d heads (%s, mode=%s, phase=%s)",
            len(self.selection.heads),
            self.selection.kind,
            self._mode,
            self._phase,
        )

    def _get_config(self, pretrained, **kwargs) -> None:
        """Resolve and validate the head set as soon as the config is known, before any weights load."""
        super()._get_config(pretrained, **kwargs)
        self._select_heads(self._config)

    def _select_heads(self, config) -> None:
        check_supported(config)
        geometry = HeadGeometry.from_config(config)
        path = self._head_scores_path
        self._scores = load_head_scores(path, geometry) if path is not None else None
        self.selection: HeadSelection = select_heads(geometry=geometry, scores=self._scores, **self._selection_args)

    def _masked(self):
        return mask_heads(
            self.model,
            self.selection.heads,
            mode=self._mode,
            phase=self._phase,
            means=self._means,
            tail=self._tail,
            audit=self._audit,
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

        Under ``phase=decode``, score requests in groups of equal input and continuation lengths.

        The decode phase masks the position that predicts the first continuation token and every later one, i.e.
        the last ``len(continuation)`` positions of each row; equal shapes make that the same slice for every
        row of a batch (lm-eval pads rows on the right).
        """
        if self._batch is not None:
            results = self._batch.loglikelihood(
                [(context, continuation) for _, context, continuation in requests], self.max_length, self.softmax_dtype
            )
            for (request, _, _), answer in zip(requests, results):
                if request is not None:
                    self.cache_hook.add_partial("loglikelihood", request, answer)
            return results
        if self._phase != "decode" or not self.selection.heads:
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

    def _reference_means(self) -> dict[int, torch.Tensor]:
        text = DATA.read_text(MEAN_REFERENCE_TEXT)
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"][:, :MEAN_REFERENCE_TOKENS]
        return head_output_means(self.model, ids)

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["rh_masking"] = {
            **self.selection.describe(),
            "audit": self._audit.describe({layer for layer, _ in self.selection.heads}),
            "mode": self._mode,
            "phase": self._phase,
            "head_scores": self._scores.path if self._scores else None,
            "head_scores_sha256": self._scores.sha256 if self._scores else None,
            "model": self._source["name"],
            "model_sha256": self._source["sha256"],
        }
        return info


def _packaged_scores(name: str) -> str:
    return str(DATA.path(PACKAGED_SCORES[name]))


def _refuse_misspelt(kwargs: dict) -> None:
    """An argument that is neither HFLM's nor rh-masked's but is spelt like one of rh-masked's (``head=``) is a
    typo: say so, rather than let HFLM hand it to transformers, which fails with a traceback about ``__init__``.
    Anything else still goes through to HFLM and ``from_pretrained`` as usual."""
    ours = [name for name in inspect.signature(RHMaskedLM.__init__).parameters if name not in ("self", "kwargs")]
    hflm = set(inspect.signature(HFLM.__init__).parameters)
    for key in kwargs:
        near = difflib.get_close_matches(key, ours, n=1, cutoff=0.75)
        if near and key not in hflm:
            raise ValueError(f"rh-masked has no argument {key!r}; did you mean {near[0]!r}?")


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


def _is_none(value) -> bool:
    """``none`` as lm-eval hands it over: ``None`` from its argument parser, the string from its CLI."""
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


def _as_heads(value):
    return "none" if _is_none(value) else value


def _as_count(name: str, value, minimum: int = 1):
    """An integer argument as lm-eval hands it over: int, integral float, or digit string (``none`` stays)."""
    if _is_none(value):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}={value!r} must be {kind}.")
    return value


def _as_word(name: str, value, default: str | None):
    """A keyword argument: ``none`` means the default."""
    if _is_none(value):
        return default
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} must be a word such as {name}={default or 'layer'}.")
    return value.strip().lower()
