"""Attention-head masking as a context manager that always removes its hooks.

Three ways to take a head out (Wu et al. 2024, arXiv 2404.15574, use the first):

* ``uniform``: the head's query is zeroed, so every score is equal and the head attends uniformly over the
  positions it may see (its causal prefix, or its sliding window). Its output becomes the mean of the values.
  Zeroing the query before RoPE and before a bias-free q-norm keeps it zero, so this is exact under eager,
  SDPA and flash attention alike.
* ``zero``: the head's output is zeroed before the output projection.
* ``mean``: the head's output is replaced by its mean output over a reference text (see :func:`head_output_means`).

``phase="decode"`` leaves the prompt (any forward pass with an empty KV cache) unmasked and masks only the
generated tokens, as the paper's NIAH experiments did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .architectures import HeadGeometry, attention_sites, decoder

MODES = ("uniform", "zero", "mean")
PHASES = ("all", "decode")

Head = tuple[int, int]


class _PhaseGate:
    """Shared on/off switch for a set of hooks; with ``phase="decode"`` it opens only once a KV cache exists."""

    def __init__(self, phase: str):
        self.open = phase == "all"

    def before_decoder(self, module, args, kwargs):
        cache = kwargs.get("past_key_values")
        self.open = cache is not None and cache.get_seq_length() > 0


def validate_heads(heads: Iterable[Sequence[int]], geometry: HeadGeometry) -> list[Head]:
    """Sorted, de-duplicated ``(layer, query_head)`` pairs, or a ValueError naming the first bad one."""
    checked = set()
    for head in heads:
        if len(head) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in head):
            raise ValueError(f"A head is a pair of integers (layer, query_head); got {head!r}.")
        layer, index = head
        if not 0 <= layer < geometry.num_layers or not 0 <= index < geometry.num_heads:
            raise ValueError(
                f"Head {tuple(head)} is out of range: the model has {geometry.num_layers} layers "
                f"(0..{geometry.num_layers - 1}) and {geometry.num_heads} query heads per layer "
                f"(0..{geometry.num_heads - 1})."
            )
        checked.add((layer, index))
    return sorted(checked)


@contextmanager
def mask_heads(
    model: nn.Module,
    heads: Iterable[Sequence[int]],
    mode: str = "uniform",
    phase: str = "all",
    means: dict[int, torch.Tensor] | None = None,
) -> Iterator[list[Head]]:
    """Mask ``(layer, query_head)`` pairs of a Hugging Face causal LM while the context is open.

    Args:
        model: a causal LM of a supported architecture (see ``SUPPORTED_MODEL_TYPES``).
        heads: query heads to mask; under GQA, list every query head of a group to mask the group.
        mode: ``uniform`` (paper), ``zero`` or ``mean``.
        phase: ``all`` or ``decode``.
        means: for ``mode="mean"``, per-layer mean head outputs ``[num_heads, head_dim]`` from
            :func:`head_output_means`.

    Yields:
        The validated, sorted list of masked heads. With no heads, no hook is installed at all, so the model
        is untouched.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mask mode {mode!r}; choose one of {', '.join(MODES)}.")
    if phase not in PHASES:
        raise ValueError(f"Unknown mask phase {phase!r}; choose one of {', '.join(PHASES)}.")
    geometry = HeadGeometry.from_config(model.config)
    masked = validate_heads(heads, geometry)
    if mode == "mean" and means is None:
        raise ValueError("mode='mean' needs the per-head mean outputs: pass means=head_output_means(model, ids).")
    if not masked:
        yield masked
        return
    sites = attention_sites(model)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in masked:
        by_layer[layer].append(head)

    gate = _PhaseGate(phase)
    handles = []
    try:
        if phase == "decode":
            handles.append(decoder(model).register_forward_pre_hook(gate.before_decoder, with_kwargs=True))
        for layer, layer_heads in by_layer.items():
            site = sites[layer]
            if mode == "uniform":
                hook = _query_hook(gate, layer_heads, geometry, _out_features(site.query))
                handles.append(site.query.register_forward_hook(hook))
            else:
                fill = means[layer] if mode == "mean" else None
                hook = _output_hook(gate, layer_heads, geometry, fill)
                handles.append(site.out_proj.register_forward_pre_hook(hook))
        yield masked
    finally:
        for handle in handles:
            handle.remove()


def _out_features(module: nn.Module) -> int:
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
    return module.nf if hasattr(module, "nf") else module.out_features


def _head_columns(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def _keep_vector(width: int, columns: torch.Tensor) -> torch.Tensor:
    """Ones except zeros at the masked heads' columns: one multiply masks them and leaves the rest bit-exact."""
    keep = torch.ones(width)
    keep[columns] = 0.0
    return keep


class _DeviceCache:
    """Builds a small constant once per (device, dtype): hooks stay allocation-free on the hot path."""

    def __init__(self, build):
        self.build = build
        self.cache = {}

    def get(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self.cache:
            self.cache[key] = self.build().to(device=like.device, dtype=like.dtype)
        return self.cache[key]


def _query_hook(gate: _PhaseGate, heads: list[int], geometry: HeadGeometry, width: int):
    columns = _head_columns(heads, geometry.head_dim)

    keep = _DeviceCache(lambda: _keep_vector(width, columns))

    def hook(module, args, output):  # output: [B, T, width], queries first
        if gate.open:
            return output * keep.get(output)
        return None

    return hook


def _output_hook(gate: _PhaseGate, heads: list[int], geometry: HeadGeometry, means: torch.Tensor | None):
    width = geometry.num_heads * geometry.head_dim
    columns = _head_columns(heads, geometry.head_dim)

    def build_fill():
        fill = torch.zeros(width)
        if means is not None:
            fill[columns] = means.reshape(-1).float().cpu()[columns]
        return fill

    keep, fill = _DeviceCache(lambda: _keep_vector(width, columns)), _DeviceCache(build_fill)

    def hook(module, args):  # args[0]: [B, T, H*D]
        if not gate.open:
            return None
        x = args[0]
        masked = x * keep.get(x)
        if means is not None:
            masked = masked + fill.get(x)
        return (masked, *args[1:])

    return hook


@torch.no_grad()
def head_output_means(model: nn.Module, input_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Mean output of every head over the tokens of ``input_ids`` ``[B, T]``: ``{layer: [num_heads, head_dim]}``.

    Used by ``mode="mean"`` (mean ablation), which keeps the head's average contribution and removes only its
    token-specific information.
    """
    geometry = HeadGeometry.from_config(model.config)
    sums: dict[int, torch.Tensor] = {}
    handles = []

    def recorder(layer):
        def hook(module, args):
            x = args[0].detach().float()  # [B, T, H*D]
            sums[layer] = x.reshape(-1, x.shape[-1]).mean(dim=0).reshape(geometry.num_heads, geometry.head_dim)

        return hook

    try:
        for layer, site in enumerate(attention_sites(model)):
            handles.append(site.out_proj.register_forward_pre_hook(recorder(layer)))
        # With weights offloaded by accelerate (device_map with "cpu"/"disk"), model.device is "meta" and
        # accelerate's own hooks move the inputs to where each module runs.
        model(input_ids if model.device.type == "meta" else input_ids.to(model.device))
    finally:
        for handle in handles:
            handle.remove()
    return {layer: mean.cpu() for layer, mean in sums.items()}
