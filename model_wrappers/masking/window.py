"""Attention heads restricted to a window of positions, as a context manager that always removes its hooks.

Wu et al. 2024 (arXiv 2404.15574) end with an implication that DuoAttention (arXiv 2410.10819), RazorAttention
and HeadKV build on: only retrieval heads need the whole KV cache, the other heads can stream. Here every head
outside a kept set attends only to the first ``sink`` real tokens and the ``window`` most recent positions of what
it may otherwise see (its causal prefix, intersected with its layer's own sliding window); kept heads attend as
usual. Windows count positions back from the query, itself included; sinks skip left padding.

A forward pre-hook on each attention module of a layer with windowed heads places the call: query and key
positions are absolute, read from the KV cache the module is given (``Cache.get_seq_length`` and
``Cache.get_mask_sizes``, the sizes the model built its own mask from), so a pass over a cached prefix, or a
sliding layer's cropped cache, is placed correctly. What happens next depends on the attention kernel:

* SDPA: while a context is open, transformers' ``sdpa`` entry of its ``AttentionInterface`` is routed through
  this module (restored when the last context closes; other models' calls pass through unchanged). Kept heads
  run the model's own SDPA call, on its causal fast path when the model passes no mask, for the KV groups that
  hold a kept head only; windowed heads run :func:`~.banded.banded_attention` on their sinks and a band of
  recent keys, combined with the model's own mask (padding, a layer's sliding window). A pass of at most
  ``DENSE_QUERIES`` queries (a decode step) instead makes one SDPA call with a per-head mask ``[B, H, Q, K]``:
  linear in the keys, and cheaper than copying each head's band when rows of several conditions decode together.
  A pass in which a hooked module's attention did not go through that call raises :class:`MaskingError`.
* eager: the ``attention_mask`` keyword becomes a per-head mask ``[B, H, Q, K]``: the model's own mask and, for
  the windowed heads, the window. Eager attention builds ``[B, H, Q, K]`` scores itself, so the mask adds no
  growth in order.
* flash and flex attention are refused: their kernels take the padding mask in forms (unpadded sequences,
  block masks) the windows are not written for. Load the model with ``attn_implementation="sdpa"``.

Cost: under SDPA nothing grows with ``T**2`` beyond what plain SDPA itself does: a windowed head costs
``O(T * (W + S))`` time and memory (chunks of ``C = max(64, W)`` queries read ``S`` sinks and a band of
``C + W - 1`` keys, at most 4096 queries per SDPA call), and kept heads cost what they cost unwindowed. With 3
of 32 heads kept (window 64, 4 sinks, the 4-layer random Llama of ``benchmarks/bench_window.py``, one thread),
windowed ÷ plain measured 0.92 (forward) and 1.02 (16-token generation) at 2048 tokens, 0.53 and 1.04 at 8192:
a forward pass is cheaper than plain attention, since most heads skip the full causal product. Short inputs pay
a fixed cost per layer and pass instead (1.19 and 1.14 at 256 tokens, 1.05 and 1.08 at 1024). Under eager the
per-head mask exists for one layer at a time and holds ``B*H*Q*K`` elements of the model's float dtype (twice
that while it is built). Under ``phase="decode"`` the prompt's pass runs every head in full and bands only its
last ``tail`` rows. A window that would change nothing (every key within reach of the window or a sink) leaves
the call untouched.

``phase`` works as in :func:`~model_wrappers.masking.hooks.mask_heads`: ``all`` windows every position;
``decode`` reads the prompt with full attention and windows its last ``tail`` positions and every decoded token,
as compressing the cache after prefill does (kvpress).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import transformers
from torch import nn

from ..condition import Head, check_choice
from .architectures import HeadGeometry, attention_sites, decoder
from .audit import MaskingAudit, MaskingError
from .banded import banded_attention
from .hooks import PhaseGate, RowGate, validate_heads

IMPLEMENTATIONS = ("eager", "sdpa")  # attention kernels whose heads can be windowed
DENSE_QUERIES = 64  # passes of at most this many queries take one SDPA call with a per-head mask [B, H, Q, K]


class UnsupportedAttentionError(ValueError):
    """The model's attention kernel is not one whose heads can be windowed (flash, flex)."""


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
            f"Windowed heads run under SDPA or eager attention; attn_implementation={implementation!r} takes the "
            "padding mask in a form (unpadded sequences, block masks) windows are not placed in. Load the model "
            "with attn_implementation='sdpa' (or 'eager')."
        )


@contextmanager
def _hooks(model: nn.Module, gate, windowed: list[list[Head]], window: int | list[int], sink: int) -> Iterator[None]:
    """Install the hooks that window ``windowed[row]`` (one head list and window for all rows, or one per row)."""
    geometry = HeadGeometry.from_config(model.config)
    sites = attention_sites(model)
    stack = decoder(model)
    pattern = _Pattern(stack, window, sink)
    implementation = model.config._attn_implementation
    routed = [
        _Routed(gate, pattern, layer, _full_heads(windowed, layer, geometry.num_heads), geometry)
        for layer in gate.layers
    ] if implementation == "sdpa" else []  # fmt: skip

    def end(module, args, output):
        for layer in routed:
            layer.check_called()
        gate.end(module, args, output)

    handles = [
        stack.register_forward_pre_hook(gate.begin),
        stack.register_forward_pre_hook(pattern.begin, with_kwargs=True),
        stack.register_forward_hook(end),
    ]
    try:
        with _sdpa_routes({sites[layer.layer].attention: layer for layer in routed}):
            for layer in gate.layers:
                hook = next((r.before for r in routed if r.layer == layer), None) or _mask_hook(
                    gate, pattern, layer, _full_heads(windowed, layer, geometry.num_heads), implementation
                )
                handles.append(sites[layer].attention.register_forward_pre_hook(hook, with_kwargs=True))
            yield
    finally:
        for handle in handles:
            handle.remove()


def _full_heads(windowed: list[list[Head]], layer: int, num_heads: int) -> torch.Tensor:
    """True at the heads of ``layer`` that keep full attention, ``[rows, H]``."""
    full = torch.ones(len(windowed), num_heads, dtype=torch.bool)
    for row, heads in enumerate(windowed):
        full[row, [head for at, head in heads if at == layer]] = False
    return full


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
        self.sink_positions: tuple[torch.Tensor, torch.Tensor] | None = None  # [B, S] positions, [B, S] real
        self.built: dict[tuple, torch.Tensor | None] = {}
        self.covered: dict[tuple, bool] = {}

    def begin(self, module, args, kwargs) -> None:
        mask = self.signature.bind_partial(*args, **kwargs).arguments.get("attention_mask")
        self.built, self.covered = {}, {}
        if mask is None:
            self.sinks = None
            self.sink_positions = torch.arange(self.sink)[None], torch.ones(1, self.sink, dtype=torch.bool)
            return
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            kind = f"{mask.dim()}D" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise MaskingError(
                f"Windowed heads need the 2D padding mask [batch, positions], but the model was given a prepared "
                f"{kind} mask (static caches and compiled generation prepare one). Use a dynamic KV cache."
            )
        real = mask.bool()
        self.sinks = real & (real.cumsum(dim=-1) <= self.sink)
        length = self.sinks.shape[-1]
        first = torch.where(self.sinks, torch.arange(length, device=mask.device), length).sort(dim=-1).values
        first = torch.nn.functional.pad(first, (0, max(0, self.sink - length)), value=length)[:, : self.sink]
        self.sink_positions = first, first < length

    def covers(self, past: int, queries: int, offset: int) -> bool:
        """Whether every key a windowed query may read is within its window or a sink: windowing changes nothing.

        The last query has the most keys behind its window: those at absolute positions ``offset ..`` up to its
        position minus the window.
        """
        shape = (past, queries, offset)
        if shape not in self.covered:
            windows = [self.window] if isinstance(self.window, int) else self.window.view(-1).tolist()
            rows = max(len(windows), 1 if self.sinks is None else self.sinks.shape[0])
            covered = True
            for row in range(rows):
                last = past + queries - 1 - windows[row % len(windows)]  # the last key behind the window
                if last < offset:
                    continue
                if self.sinks is None:
                    covered &= last < self.sink
                else:
                    sinks = self.sinks[row % self.sinks.shape[0]]
                    covered &= last < sinks.shape[0] and bool(sinks[offset : last + 1].all())
            self.covered[shape] = covered
        return self.covered[shape]

    def sink_keys(self, offset: int, keys: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each row's sinks as key indices of a layer whose ``keys`` keys start at ``offset``, and which exist."""
        if not self.sink:
            return None
        positions, real = self.sink_positions
        index = positions.to(device) - offset
        return index, real.to(device) & (index >= 0) & (index < keys)

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


def _placement(gate, layer: int, args, kwargs) -> tuple[int, int, int, int, torch.Tensor | None]:
    """Where this call of layer ``layer``'s attention sits: its first windowed query, the absolute position of its
    first query, how many keys it reads and the absolute position of the first one, and the model's own mask."""
    hidden = args[0] if args else kwargs.get("hidden_states")
    if "attention_mask" not in kwargs or not isinstance(hidden, torch.Tensor):
        raise MaskingError(
            f"Layer {layer}'s attention was called without the hidden_states and attention_mask it is hooked "
            f"for (keywords {sorted(kwargs)}, transformers {transformers.__version__}), so its heads would run "
            "unwindowed. Pin an earlier transformers release or report this model."
        )
    first = gate.masked_from(layer, hidden)  # hidden [B, Q, width]
    queries = hidden.shape[1]
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
    return first, past, keys, offset, base


def _per_head_mask(pattern: _Pattern, full: torch.Tensor, call, base, rows: int, queries: int, device):
    """What each head may read, ``[B, H, Q, K]`` bool: the window for windowed heads, and the model's own mask
    (or causality, when it passes none) for every head; None when the window changes nothing."""
    first, past, keys, offset = call
    allowed = pattern.allowed(past, queries, offset, keys, first, device)
    if allowed is None:
        return None
    heads = full.to(device)[..., None, None]  # [rows, H, 1, 1]
    if heads.shape[0] not in (1, rows):
        raise MaskingError(f"{heads.shape[0]} rows of windowed heads were given for a batch of {rows} rows.")
    allowed = allowed | heads
    if base is None:  # no padding: causality alone
        return allowed & (
            torch.arange(past, past + queries, device=device)[:, None]
            >= torch.arange(offset, offset + keys, device=device)
        )
    return allowed & base if base.dtype == torch.bool else allowed & (base > torch.finfo(base.dtype).min)


def _mask_hook(gate, pattern: _Pattern, layer: int, full: torch.Tensor, implementation: str):
    """Under eager attention: the layer's mask becomes a per-head mask ``[B, H, Q, K]``."""

    def hook(module, args, kwargs):
        first, past, keys, offset, base = _placement(gate, layer, args, kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        rows, queries = hidden.shape[:2]
        allowed = _per_head_mask(pattern, full, (first, past, keys, offset), base, rows, queries, hidden.device)
        if allowed is None:
            return None
        if base is not None and base.dtype != torch.bool:
            kwargs["attention_mask"] = torch.where(allowed, base, torch.finfo(base.dtype).min)
        else:
            kwargs["attention_mask"] = _kernel_mask(allowed, implementation, hidden.dtype)
        return args, kwargs

    return hook


class _Routed:
    """One layer's attention under SDPA: kept heads through the model's own SDPA call, windowed heads banded.

    The pre-hook on the attention module places the call (positions, cache, first windowed query); the model's
    SDPA call, routed here by :func:`_sdpa_routes`, then computes it. A pass in which the pre-hook ran but the
    routed call did not is an error: the heads would have run unwindowed.
    """

    def __init__(self, gate, pattern: _Pattern, layer: int, full: torch.Tensor, geometry: HeadGeometry):
        self.gate, self.pattern, self.layer = gate, pattern, layer
        self.num_heads, self.num_kv_heads = geometry.num_heads, geometry.num_kv_heads
        group = geometry.group_size
        windowed = (~full).any(dim=0).nonzero().view(-1)  # heads windowed in some row
        kept_groups = sorted({int(head) // group for head in full.any(dim=0).nonzero().view(-1)})
        self.windowed, self.kv_of_windowed = windowed, windowed // group
        self.kept_groups = torch.tensor(kept_groups, dtype=torch.long)
        self.kept_heads = torch.tensor([h for g in kept_groups for h in range(g * group, (g + 1) * group)])
        self.rows_keep = full[:, windowed] if full.shape[0] > 1 and bool(full[:, windowed].any()) else None
        self.full = full
        self.call: tuple[int, int, int, int] | None = None
        self.pending = False

    def before(self, module, args, kwargs) -> None:
        first, past, keys, offset, _ = _placement(self.gate, self.layer, args, kwargs)
        queries = (args[0] if args else kwargs["hidden_states"]).shape[1]
        self.call = None if self.pattern.covers(past, queries, offset) else (first, past, keys, offset)
        self.pending = True

    def check_called(self) -> None:
        if self.pending:
            raise MaskingError(
                f"Layer {self.layer}'s attention did not call the SDPA function of transformers' AttentionInterface "
                f"(transformers {transformers.__version__}), so its heads ran unwindowed. Load the model with "
                "attn_implementation='eager', pin an earlier transformers release, or report this model."
            )

    def attend(self, sdpa, module, query, key, value, attention_mask, **kwargs):
        """``sdpa``'s output ``[B, Q, H, D]``, with the windowed heads' rows from the first windowed query on banded."""
        self.pending = False
        if self.call is None:
            return sdpa(module, query, key, value, attention_mask, **kwargs)
        first, past, keys, offset = self.call
        rows, heads, queries, _ = query.shape
        if (heads, key.shape[1], key.shape[2]) != (self.num_heads, self.num_kv_heads, keys):
            raise MaskingError(
                f"Layer {self.layer}'s attention was called with {heads} query heads over {key.shape[1]} KV heads "
                f"and {key.shape[2]} keys, where the config and KV cache say {self.num_heads} over "
                f"{self.num_kv_heads} and {keys} (transformers {transformers.__version__}): windows cannot be placed."
            )
        unknown = {name for name in ("softcap", "position_bias") if kwargs.get(name) is not None}
        if "scaling" not in kwargs or unknown or kwargs.get("dropout"):
            raise MaskingError(
                f"Layer {self.layer}'s SDPA call came with keywords {sorted(kwargs)} (transformers "
                f"{transformers.__version__}): windowed heads need the logit scale as 'scaling', and take neither "
                "dropout (call model.eval()) nor soft-capping or a position bias."
            )
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            raise MaskingError(
                f"Layer {self.layer}'s SDPA call got a {attention_mask.dtype} mask where transformers "
                f"{transformers.__version__} builds a boolean one: windows cannot be combined with it."
            )
        device = query.device
        if queries <= DENSE_QUERIES:  # a decode step: one SDPA call with a per-head mask, linear in the keys
            mask = _per_head_mask(self.pattern, self.full, self.call, attention_mask, rows, queries, device)
            return sdpa(module, query, key, value, mask, **kwargs)
        if first > 0 or len(self.kept_groups) == self.num_kv_heads:  # every head reads its prefix in full
            out, _ = sdpa(module, query, key, value, attention_mask, **kwargs)
        else:  # only the KV groups of kept heads need full attention
            out = query.new_empty(rows, queries, heads, value.shape[-1])
            if len(self.kept_groups):
                groups, kept = self.kept_groups.to(device), self.kept_heads.to(device)
                out[:, :, kept], _ = sdpa(
                    module, query[:, kept], key[:, groups], value[:, groups], attention_mask, **kwargs
                )
        windowed = self.windowed.to(device)
        window = self.pattern.window if isinstance(self.pattern.window, int) else self.pattern.window.view(-1)
        band = banded_attention(
            query[:, windowed, first:], key, value, self.kv_of_windowed.to(device), first_key=past - offset + first,
            window=window, sinks=self.pattern.sink_keys(offset, keys, device),
            allowed=None if attention_mask is None else attention_mask[:, :, first:], scale=kwargs.get("scaling"),
        )  # fmt: skip
        if self.rows_keep is not None:  # a head windowed in one row and kept in another
            band = torch.where(self.rows_keep.to(device)[:, None, :, None], out[:, first:, windowed], band)
        out[:, first:, windowed] = band
        return out, None


_ROUTES: dict[nn.Module, _Routed] = {}  # attention modules whose SDPA calls are windowed, across open contexts
_REPLACED: list = []  # the SDPA function the router stands in for, while any route is open
_LOCK = threading.Lock()


def _route_sdpa(module, query, key, value, attention_mask, **kwargs):
    """Transformers' SDPA attention function, windowed for the modules of an open context."""
    routed = _ROUTES.get(module)
    if routed is None:
        return _REPLACED[0](module, query, key, value, attention_mask, **kwargs)
    return routed.attend(_REPLACED[0], module, query, key, value, attention_mask, **kwargs)


@contextmanager
def _sdpa_routes(routes: dict[nn.Module, _Routed]) -> Iterator[None]:
    """Route the SDPA calls of ``routes``' modules to them; other modules' calls are left as they were."""
    if not routes:
        yield
        return
    interface = getattr(transformers, "AttentionInterface", None)
    if interface is None or not hasattr(interface, "register"):
        raise MaskingError(
            f"transformers {transformers.__version__} has no AttentionInterface.register, through which windowed "
            "heads replace SDPA. Load the model with attn_implementation='eager' or pin an earlier release."
        )
    with _LOCK:
        if any(module in _ROUTES for module in routes):
            raise MaskingError("These attention modules are windowed already: close the open window context first.")
        if not _ROUTES:
            _REPLACED.append(interface()["sdpa"])
            interface.register("sdpa", _route_sdpa)
        _ROUTES.update(routes)
    try:
        yield
    finally:
        with _LOCK:
            for module in routes:
                _ROUTES.pop(module, None)
            if not _ROUTES:
                interface.register("sdpa", _REPLACED.pop())


def _kernel_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """``allowed`` as the kernel reads a mask: bool for SDPA, additive (0 or the dtype's minimum) for eager."""
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)
