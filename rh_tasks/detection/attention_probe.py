"""What each attention head attends to, captured while the model generates with its fast kernel.

A custom attention function, registered under transformers' ``AttentionInterface``, lets SDPA compute every
output (no attention matrix is ever materialised) and, in addition, scores a few query rows against the cached
keys: ``[heads, rows, keys]`` per layer, linear in the context. Keys come from the KV cache, so they are
post-RoPE and post q/k-norm, exactly what the kernel used. Under GQA each KV head is scored against its group
of query heads without repeating the keys. Per layer and forward call (= decode step) the probe records:

* always, the arg-max key of each head's *last* row (the copy-paste scores need only this; softmax and the
  logit scale are monotonic, so the arg-max of the masked logits is that of the probabilities);
* with needle spans, HeadKV's top-k attention mass on the span from the same row (:mod:`.attention_mass`);
* with question spans, at the prefill, the question rows' attention to the span, averaged over the rows; and in
  a separate prefill of a null question, the same for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .attention_mass import apply_mask, attention_logits, attention_probs, top_k_span_mass

PROBE_NAME = "rh_attention_probe"

_active: AttentionProbe | None = None


@dataclass(frozen=True)
class RowTargets:
    """What to measure for one sequence of a batch, in positions of the (left-padded) sequence."""

    span: tuple[int, int]  # [start, end) of the needle span
    question: tuple[int, int] | None = None  # [start, end) of the question, whose rows are read at the prefill


class AttentionProbe:
    """Per layer and forward call, the arg-max key of every head's last row, and the attention masses asked for."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.reset()

    def reset(self, targets: list[RowTargets] | None = None, *, top_k_mass: bool = False) -> None:
        """Start a new batch; ``targets`` (one per row) are needed for any attention mass."""
        if top_k_mass and targets is None:
            raise ValueError("The top-k attention mass needs the needle spans of the batch.")
        self._targets = targets
        self._top_k_mass = top_k_mass
        self._null: RowTargets | None = None
        self._rows: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]  # per layer: [B, H] per step
        self._mass: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]  # per layer: [B, H] per step
        self._question: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]  # per layer: [H, n] per row
        self._null_question: list[torch.Tensor | None] = [None] * self.num_layers  # per layer: [H, n]
        self._prompt_len: int | None = None

    def record(self, module, query, key, attention_mask, scaling) -> None:
        """Read ``query`` ``[B, H, Q, D]`` against ``key`` ``[B, KV, K, D]`` under the call's mask."""
        layer = module.layer_idx
        batch, _, q_len, _ = query.shape
        k_len = key.shape[2]
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling  # SDPA's default when the module sets none
        if self._null is not None:
            self._null_question[layer] = self._question_rows(
                query[0], key[0], _rows_mask(attention_mask, 0, q_len, k_len), scale, self._null
            )
            return
        step = len(self._rows[layer])
        if step == 0 and layer == 0:
            self._prompt_len = k_len
        # A sliding-window cache keeps only the last K keys: key j sits at sequence position j + shift.
        shift = self._prompt_len + step - k_len
        positions, masses = [], []
        for row in range(batch):
            mask = _rows_mask(attention_mask, row, q_len, k_len)
            last_mask = None if mask is None else mask[:, -1:]
            logits = attention_logits(query[row, :, -1:], key[row])  # [H, 1, K]
            positions.append(apply_mask(logits, last_mask)[:, 0].argmax(-1) + shift)
            if self._top_k_mass:
                start, end = self._targets[row].span
                probs = attention_probs(logits, scale, last_mask)[:, 0]  # [H, K]
                masses.append(top_k_span_mass(probs, (start - shift, end - shift), end - start))
            if step == 0 and self._targets is not None and self._targets[row].question is not None:
                self._question[layer].append(self._question_rows(query[row], key[row], mask, scale, self._targets[row]))
        self._rows[layer].append(torch.stack(positions))
        if self._top_k_mass:
            self._mass[layer].append(torch.stack(masses))

    @staticmethod
    def _question_rows(query, key, mask, scale: float, target: RowTargets) -> torch.Tensor:
        """``[H, n]``: attention of the question's rows to each span token, averaged over the rows.

        The call's Q queries are the last Q of its K positions (a prefill, or a prefill continuing a cache).
        """
        offset = key.shape[1] - query.shape[1]
        first, last = target.question
        if first < offset:
            raise RuntimeError(f"The question starts at position {first}, before this call's queries ({offset}).")
        positions = torch.arange(first, last)
        causal = torch.arange(key.shape[1])[None, :] <= positions[:, None]  # [R, K]; also when SDPA gets no mask
        row_mask = causal[None] if mask is None else _combine(mask[:, first - offset : last - offset], causal)
        logits = attention_logits(query[:, first - offset : last - offset], key)
        probs = attention_probs(logits, scale, row_mask)  # [H, R, K]
        return probs[:, :, target.span[0] : target.span[1]].mean(1)

    def positions(self) -> torch.Tensor:
        """``[steps, num_layers, B, H]``: step 0 is the prefill's last row, which predicts the first new token."""
        return _stack(self._rows)

    def top_k_mass(self) -> torch.Tensor:
        """``[steps, num_layers, B, H]``: HeadKV's per-step score of every head."""
        return _stack(self._mass)

    def question_attention(self) -> list[torch.Tensor]:
        """Per batch row, ``[num_layers, H, n]`` (n: the length of that row's span)."""
        counts = {len(rows) for rows in self._question}
        if len(counts) != 1:
            raise RuntimeError(f"Layers recorded different numbers of question rows ({sorted(counts)}).")
        return [torch.stack(per_row) for per_row in zip(*self._question)]

    @contextmanager
    def null_question(self, target: RowTargets) -> Iterator[None]:
        """Inside, a forward call over one prompt records only the question rows of ``target``."""
        self._null = target
        self._null_question = [None] * self.num_layers
        try:
            yield
        finally:
            self._null = None

    def null_attention(self) -> torch.Tensor:
        """``[num_layers, H, n]`` from the last :meth:`null_question` call."""
        if any(rows is None for rows in self._null_question):
            raise RuntimeError("The null-question pass skipped a layer.")
        return torch.stack(self._null_question)


def _stack(per_layer: list[list[torch.Tensor]]) -> torch.Tensor:
    steps = {len(rows) for rows in per_layer}
    if len(steps) != 1:
        raise RuntimeError(f"Layers recorded different numbers of steps ({sorted(steps)}); was a layer skipped?")
    return torch.stack([torch.stack(rows) for rows in per_layer], dim=1)


def _rows_mask(attention_mask, row: int, q_len: int, k_len: int) -> torch.Tensor | None:
    """``[1 or H, Q, K]`` mask of one sequence, or ``None`` when SDPA runs causally without one."""
    if attention_mask is None:
        return None
    return attention_mask[row, :, -q_len:, :k_len]


def _combine(mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, float("-inf"))


def _probe_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA computes the output, as without the probe."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _active is not None:
        _active.record(module, query, key, attention_mask, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PROBE_NAME, _probe_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PROBE_NAME, sdpa_mask)


@contextmanager
def attention_probe(model) -> Iterator[AttentionProbe]:
    """Route ``model``'s attention through the probe; the original implementation is restored on exit."""
    global _active
    if _active is not None:
        raise RuntimeError("An attention probe is already active; detection runs one model at a time.")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    original = model.config._attn_implementation
    _register()
    probe = AttentionProbe(config.num_hidden_layers)
    model.set_attn_implementation(PROBE_NAME)
    _active = probe
    try:
        yield probe
    finally:
        _active = None
        model.set_attn_implementation(original)
