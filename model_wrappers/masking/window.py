"""Attention heads restricted to a window of positions, as a context manager that always removes its hooks.

Wu et al. 2024 (arXiv 2404.15574) end with an implication that DuoAttention (arXiv 2410.10819), RazorAttention
and HeadKV build on: only retrieval heads need the whole KV cache, the other heads can stream. Here every head
outside a kept set attends only to the first ``sink`` real tokens and the ``window`` most recent positions of what
it may otherwise see (its causal prefix, intersected with its layer's own sliding window); kept heads attend as
usual. Windows count positions back from the query, itself included; sinks skip left padding.

A forward pre-hook on each attention module replaces the ``attention_mask`` keyword it hands to the attention
kernel by a per-head mask ``[B, H, Q, K]``: the model's own mask (causal, padding, sliding window) and, for the
windowed heads, the window. Query and key positions are absolute, read from the KV cache the module is given
(``Cache.get_seq_length`` and ``Cache.get_mask_sizes``, the sizes the model built its own mask from), so a pass
over a cached prefix, or a sliding layer's cropped cache, is placed correctly. Only eager and SDPA attention take
such a mask; flash and flex attention are refused.

Cost: the per-head mask exists for one layer at a time and holds ``B*H*Q*K`` elements (bool under SDPA, the
model's float dtype under eager), twice that while it is built: 151 MB for one 4096-token prefill with 9 heads
under SDPA; ``B*H*K`` per decoded token. Under ``phase="decode"`` the prompt's pass carries the whole mask too,
though only its last ``tail`` rows window anything. A materialized mask also keeps SDPA off its causal fast path,
which costs more than building the mask on long prefills. A mask that would change nothing (every key within
reach of the window) is not built at all.

``phase`` works as in :func:`~model_wrappers.masking.hooks.mask_heads`: ``all`` windows every position;
``decode`` reads the prompt with full attention and windows its last ``tail`` positions and every decoded token,
as compressing the cache after prefill does (kvpress).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import transformers
from torch import nn

from ..condition import Head, check_choice
from .architectures import HeadGeometry, attention_sites, decoder
from .audit import MaskingAudit, MaskingError
from .hooks import PhaseGate, RowGate, validate_heads
from .modes import DeviceCache

IMPLEMENTATIONS = ("eager", "sdpa")  # attention kernels that take a per-head mask


class UnsupportedAttentionError(ValueError):
    """The model's attention kernel cannot take a per-head mask, so its heads cannot be windowed."""


@contextmanager
def window_heads(
    model: nn.Module,
    kept: Iterable[Sequence[int]],
    *,
    window: int,
    sink: int = 4,
    phase: str = "all",
    tail: int = 1,
    audit: MaskingAudit | None = None,
) -> Iterator[MaskingAudit]:
    """Window every head of ``model`` except the ``kept`` ``(layer, query_head)`` pairs while the context is open.

    Args:
        model: a causal LM of a supported architecture, loaded with ``attn_implementation`` ``sdpa`` or ``eager``.
        kept: query heads that keep full attention; under GQA, list every query head of a group to keep the group.
        window: how many most recent positions a windowed head attends to, the query itself included.
        sink: how many first real tokens a windowed head attends to as well (attention sinks).
        phase: ``all`` (every position of every pass) or ``decode`` (see the module docstring). Under ``decode``,
            open one context per prompt: one ``generate`` call, or one forward pass.
        tail: under ``decode``, how many trailing positions of the prompt's pass are windowed: 1 for generation,
            the continuation's length when the pass scores a continuation.
        audit: counts to add to (a condition keeps one across calls); a new one by default. Its layers are the
            layers with a windowed head, and its masked positions are the windowed ones.

    Yields:
        The :class:`MaskingAudit` of this context. When every head is kept, no hook is installed at all.
    """
    _check_window(window, sink)
    check_choice("phase", phase)
    if not isinstance(tail, int) or tail < 1:
        raise ValueError(f"tail={tail!r} must be a positive integer.")
    geometry = HeadGeometry.from_config(model.config)
    windowed = windowed_heads(validate_heads(kept, geometry), geometry)
    audit = MaskingAudit() if audit is None else audit
    if not windowed:
        yield audit
        return
    _check_implementation(model)
    gate = PhaseGate(phase, tail, sorted({layer for layer, _ in windowed}), audit, opener="window_heads")
    with _hooks(model, gate, [windowed], window, sink):
        yield audit


@contextmanager
def window_rows(
    model: nn.Module,
    rows_kept: Sequence[Iterable[Sequence[int]]],
    *,
    window: int | Sequence[int],
    sink: int = 4,
    fresh: int,
    audits: Sequence[MaskingAudit],
) -> Iterator[None]:
    """Window a different head set in each row of a batch, at every position of every pass.

    Row ``i`` keeps ``rows_kept[i]`` whole and windows every other head, to ``window`` positions or, given one
    window per row, to ``window[i]``; the rows share ``sink``. This is how several conditions continue
    one shared prefix read with full attention: row ``i`` holds a copy of the prefix's KV cache, and windows are
    placed on absolute positions, the cached prefix included. The first pass must feed exactly the ``fresh``
    positions the cache does not hold and every later pass one decoded token; any other shape raises
    :class:`MaskingError`. ``audits[i]`` counts row ``i``'s windowing (rows of one condition share an audit).
    """
    windows = [window] * len(rows_kept) if isinstance(window, int) else list(window)
    for each in windows:
        _check_window(each, sink)
    if len(windows) != len(rows_kept):
        raise ValueError(f"{len(rows_kept)} rows need {len(rows_kept)} windows, got {len(windows)}.")
    if len(audits) != len(rows_kept):
        raise ValueError(f"{len(rows_kept)} rows need {len(rows_kept)} audits, got {len(audits)}.")
    geometry = HeadGeometry.from_config(model.config)
    windowed = [windowed_heads(validate_heads(kept, geometry), geometry) for kept in rows_kept]
    if not any(windowed):
        yield
        return
    _check_implementation(model)
    gate = RowGate(fresh, sorted({layer for heads in windowed for layer, _ in heads}), windowed, audits)
    with _hooks(model, gate, windowed, windows[0] if len(set(windows)) == 1 else windows, sink):
        yield


def windowed_heads(kept: Iterable[Head], geometry: HeadGeometry) -> list[Head]:
    """Every ``(layer, query_head)`` of the model that is not in ``kept``, sorted."""
    kept = set(kept)
    return [
        (layer, head)
        for layer in range(geometry.num_layers)
        for head in range(geometry.num_heads)
        if (layer, head) not in kept
    ]


def _check_window(window, sink) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(
            f"window={window!r} must be a positive integer: how many most recent positions a windowed head reads."
        )
    if not isinstance(sink, int) or isinstance(sink, bool) or sink < 0:
        raise ValueError(f"sink={sink!r} must be an integer >= 0: how many first tokens a windowed head keeps.")


def _check_implementation(model: nn.Module) -> None:
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in IMPLEMENTATIONS:
        raise UnsupportedAttentionError(
            f"Windowed heads need a per-head attention mask, which attn_implementation={implementation!r} cannot "
            f"take (flash attention takes no mask tensor). Load the model with attn_implementation='sdpa' or "
            "'eager'."
        )


@contextmanager
def _hooks(model: nn.Module, gate, windowed: list[list[Head]], window: int | list[int], sink: int) -> Iterator[None]:
    """Install the hooks that window ``windowed[row]`` (one head list and window for all rows, or one per row)."""
    geometry = HeadGeometry.from_config(model.config)
    sites = attention_sites(model)
    stack = decoder(model)
    pattern = _Pattern(stack, window, sink)
    handles = [
        stack.register_forward_pre_hook(gate.begin),
        stack.register_forward_pre_hook(pattern.begin, with_kwargs=True),
        stack.register_forward_hook(gate.end),
    ]
    try:
        for layer in gate.layers:
            full = _full_heads(windowed, layer, geometry.num_heads)
            hook = _mask_hook(gate, pattern, layer, full, model.config._attn_implementation)
            handles.append(sites[layer].attention.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _full_heads(windowed: list[list[Head]], layer: int, num_heads: int) -> DeviceCache:
    """True at the heads of ``layer`` that keep full attention, ``[rows, H, 1, 1]``."""

    def build():
        full = torch.ones(len(windowed), num_heads, 1, 1, dtype=torch.bool)
        for row, heads in enumerate(windowed):
            full[row, [head for at, head in heads if at == layer], 0, 0] = False
        return full

    return DeviceCache(build)


class _Pattern:
    """Which keys a windowed head may read in the current forward pass, built once per pass and layer shape.

    The decoder's 2D padding mask, when there is one, says which tokens are real, so that the sinks are the first
    real tokens of each row and not its left padding.
    """

    def __init__(self, stack: nn.Module, window: int | list[int], sink: int):
        self.window = window if isinstance(window, int) else torch.tensor(window)[:, None, None]  # or [B, 1, 1]
        self.sink = sink
        self.signature = inspect.signature(stack.forward)
        if "attention_mask" not in self.signature.parameters:
            raise MaskingError(
                f"{type(stack).__name__}.forward takes no attention_mask (transformers {transformers.__version__}), "
                "so windowed heads cannot tell padding from the first tokens. Pin an earlier transformers release."
            )
        self.sinks: torch.Tensor | None = None  # [B, L] True at each row's first `sink` real tokens
        self.built: dict[tuple, torch.Tensor | None] = {}

    def begin(self, module, args, kwargs) -> None:
        mask = self.signature.bind_partial(*args, **kwargs).arguments.get("attention_mask")
        self.built = {}
        if mask is None:
            self.sinks = None
            return
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            kind = f"{mask.dim()}D" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise MaskingError(
                f"Windowed heads need the 2D padding mask [batch, positions], but the model was given a prepared "
                f"{kind} mask (static caches and compiled generation prepare one). Use a dynamic KV cache."
            )
        real = mask.bool()
        self.sinks = real & (real.cumsum(dim=-1) <= self.sink)

    def allowed(self, past: int, queries: int, offset: int, keys: int, first: int, device) -> torch.Tensor | None:
        """Keys a windowed head may read, ``[B or 1, 1, Q, K]``, before the model's own mask; None when all.

        With one window per row, ``B`` rows.

        Queries sit at absolute positions ``past ..``, keys at ``offset ..``; queries before index ``first`` of
        the pass are not windowed.
        """
        shape = (past, queries, offset, keys, first)
        if shape not in self.built:
            q = torch.arange(past, past + queries, device=device)[:, None]
            k = torch.arange(offset, offset + keys, device=device)
            window = self.window if isinstance(self.window, int) else self.window.to(device)
            allowed = (q - k < window) | (torch.arange(queries, device=device) < first)[
                :, None
            ]  # [Q, K]; [B, Q, K] per row
            allowed = (allowed | self._sink_keys(k)[:, None, :])[:, None]
            self.built[shape] = None if bool(allowed.all()) else allowed
        return self.built[shape]

    def _sink_keys(self, k: torch.Tensor) -> torch.Tensor:
        """Which of the keys at absolute positions ``k`` ``[K]`` are sinks, ``[B or 1, K]``."""
        if self.sinks is None:
            return (k < self.sink)[None]
        sinks = self.sinks.to(k.device)
        inside = k < sinks.shape[-1]  # keys past the padding mask are not real tokens
        return sinks[:, k.clamp(max=sinks.shape[-1] - 1)] & inside


def _mask_hook(gate, pattern: _Pattern, layer: int, full: DeviceCache, implementation: str):
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if "attention_mask" not in kwargs or not isinstance(hidden, torch.Tensor):
            raise MaskingError(
                f"Layer {layer}'s attention was called without the hidden_states and attention_mask it is hooked "
                f"for (keywords {sorted(kwargs)}, transformers {transformers.__version__}), so its heads would run "
                "unwindowed. Pin an earlier transformers release or report this model."
            )
        first = gate.masked_from(layer, hidden)  # hidden [B, Q, width]
        rows, queries = hidden.shape[:2]
        cache = next((v for v in (*args, *kwargs.values()) if isinstance(v, transformers.Cache)), None)
        past, (keys, offset) = (0, (queries, 0)) if cache is None else (
            cache.get_seq_length(layer), cache.get_mask_sizes(queries, layer)
        )  # fmt: skip
        base = kwargs["attention_mask"]  # [B, 1, Q, K]: bool (SDPA), additive float (eager), or None (causal)
        if base is not None and tuple(base.shape[-2:]) != (queries, keys):
            raise MaskingError(
                f"Layer {layer}'s attention mask covers {tuple(base.shape[-2:])} query and key positions where the "
                f"KV cache holds {(queries, keys)} (transformers {transformers.__version__}): windows cannot be placed."
            )
        allowed = pattern.allowed(past, queries, offset, keys, first, hidden.device)
        if allowed is None:
            return None
        heads = full.get(allowed)
        if heads.shape[0] not in (1, rows):
            raise MaskingError(f"{heads.shape[0]} rows of windowed heads were given for a batch of {rows} rows.")
        allowed = allowed | heads  # [B, H, Q, K]
        if base is None:  # no padding: causality alone
            causal = torch.arange(past, past + queries, device=hidden.device)[:, None] >= torch.arange(
                offset, offset + keys, device=hidden.device
            )
            kwargs["attention_mask"] = _kernel_mask(allowed & causal, implementation, hidden.dtype)
        elif base.dtype == torch.bool:
            kwargs["attention_mask"] = base & allowed
        else:
            kwargs["attention_mask"] = torch.where(allowed, base, torch.finfo(base.dtype).min)
        return args, kwargs

    return hook


def _kernel_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """``allowed`` as the kernel reads a mask: bool for SDPA, additive (0 or the dtype's minimum) for eager."""
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)
