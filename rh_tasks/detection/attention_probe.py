"""Which key each attention head attends to most, captured while the model generates with its fast kernel.

A custom attention function, registered under transformers' ``AttentionInterface``, lets SDPA compute every
output (no attention weights are ever materialised) and, in addition, scores only the *last* query row of each
call against the cached keys: ``[heads, keys]`` per layer and step, linear in the context. Keys come from the
KV cache, so they are post-RoPE and post q/k-norm, exactly what the kernel used. Softmax is monotonic, so the
arg-max of the masked pre-softmax logits is the arg-max of the attention probabilities; scaling is monotonic
too. Under GQA each KV head is scored against its group of query heads without repeating the keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

PROBE_NAME = "rh_argmax_probe"

_active: ArgmaxProbe | None = None


class ArgmaxProbe:
    """Per layer, the arg-max key position of every query head's last row at every forward call (= decode step)."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.reset()

    def reset(self) -> None:
        self._rows: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]  # per layer: [B, H] per step
        self._prompt_len: int | None = None

    def record(self, module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Store the arg-max key of ``query``'s last row; query ``[B, H, Q, D]``, key ``[B, KV, K, D]``."""
        layer = module.layer_idx
        batch, heads, q_len, dim = query.shape
        kv_heads, k_len = key.shape[1], key.shape[2]
        group = heads // kv_heads
        last = query[:, :, -1, :].reshape(batch, kv_heads, group, dim)  # [B, KV, G, D]
        scores = torch.matmul(last, key.transpose(-1, -2))  # [B, KV, G, K]
        if attention_mask is not None:
            mask = attention_mask[:, :, -1, :k_len]  # [B, 1 or H, K]
            mask = mask[:, :, None, :] if mask.shape[1] == 1 else mask.reshape(batch, kv_heads, group, k_len)
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask
        position = scores.argmax(-1).reshape(batch, heads)  # [B, H]

        step = len(self._rows[layer])
        if step == 0 and layer == 0:
            self._prompt_len = k_len
        # A sliding-window cache keeps only the last K keys: shift window indices to sequence positions.
        seq_len = self._prompt_len + step
        self._rows[layer].append(position + (seq_len - k_len))

    def positions(self) -> torch.Tensor:
        """``[steps, num_layers, B, H]``: step 0 is the prefill's last row, which predicts the first new token."""
        steps = {len(rows) for rows in self._rows}
        if len(steps) != 1:
            raise RuntimeError(f"Layers recorded different numbers of steps ({sorted(steps)}); was a layer skipped?")
        return torch.stack([torch.stack(rows) for rows in self._rows], dim=1)


def _probe_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA computes the output, as without the probe."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _active is not None:
        _active.record(module, query, key, attention_mask)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PROBE_NAME, _probe_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PROBE_NAME, sdpa_mask)


@contextmanager
def argmax_probe(model) -> Iterator[ArgmaxProbe]:
    """Route ``model``'s attention through the probe; the original implementation is restored on exit."""
    global _active
    if _active is not None:
        raise RuntimeError("An attention probe is already active; detection runs one model at a time.")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    original = model.config._attn_implementation
    _register()
    probe = ArgmaxProbe(config.num_hidden_layers)
    model.set_attn_implementation(PROBE_NAME)
    _active = probe
    try:
        yield probe
    finally:
        _active = None
        model.set_attn_implementation(original)
