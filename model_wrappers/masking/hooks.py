"""Attention-head masking as a context manager that always removes its hooks.

What a masked head becomes is its mode (:mod:`.modes`); this module decides where and when the modes write.

``phase="decode"`` is the paper's decode phase (``needle_in_haystack_with_mask.py``): the prompt is read
unmasked up to its last token, and the last prompt token and every generated token are masked, so the first
answer token already comes from a masked pass. The hooks tell the two apart by position alone, with no reliance
on how a transformers release passes its KV cache: the first forward pass in the context is the prompt (its last
``tail`` positions are masked: 1 for generation, the continuation's length for a loglikelihood request), and
every later pass must be one cached decoding step, masked whole. Anything else raises :class:`MaskingError`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import transformers
from torch import nn

from ..condition import Head, check_choice
from .architectures import HeadGeometry, attention_sites, decoder
from .audit import MaskingAudit, MaskingError
from .modes import MaskMode, as_mode


class _Gate:
    """Decides which positions of each forward pass the hooks mask, and checks that every masked layer ran.

    A pre-hook on the decoder opens a pass and a post-hook closes it; in between, each masked layer's hook asks
    :meth:`masked_from` where masking starts. Positions are counted, never read from the model's arguments.
    """

    def __init__(self, layers: list[int]):
        self.layers = layers
        self.passes = 0  # forward passes completed inside this context
        self.length: int | None = None  # positions in the current pass
        self.ran: list[int] = []

    def begin(self, module, args) -> None:
        self.length, self.ran = None, []

    def masked_from(self, layer: int, output: torch.Tensor) -> int:
        """First masked position of this pass, for a hook that sees ``output`` ``[B, T, width]``."""
        length = output.shape[1]
        if self.length is None:
            self.check_pass(length)
            self.length = length
        elif length != self.length:
            raise MaskingError(f"Layer {layer} saw {length} positions where earlier layers saw {self.length}.")
        self.ran.append(layer)
        return self.record(layer, output.shape[0], length)

    def end(self, module, args, output) -> None:
        if sorted(self.ran) != self.layers:
            raise MaskingError(
                f"A forward pass reached the masked layers {sorted(self.ran)} of {self.layers}: the model no "
                f"longer calls the hooked modules (transformers {transformers.__version__}), so its heads "
                "would run unmasked. Pin an earlier transformers release or report this model."
            )
        self.passes += 1
        for audit in self.audits():
            audit.forward_passes += 1

    def check_pass(self, length: int) -> None:
        """Raise :class:`MaskingError` if a pass of ``length`` positions cannot be masked as asked."""

    def record(self, layer: int, rows: int, length: int) -> int:
        """Count this layer's pass in the audits; return the first masked position."""
        raise NotImplementedError

    def audits(self) -> list[MaskingAudit]:
        raise NotImplementedError


class PhaseGate(_Gate):
    """One head set for every row; ``phase`` decides which positions are masked (see the module docstring)."""

    def __init__(self, phase: str, tail: int, layers: list[int], audit: MaskingAudit, opener: str = "mask_heads"):
        super().__init__(layers)
        self.phase, self.tail, self.audit = phase, tail, audit
        self.opener = opener  # the context manager to open once per prompt, named in errors

    def check_pass(self, length: int) -> None:
        if self.phase == "decode" and self.passes and length != 1:
            raise MaskingError(
                f"phase='decode' masks from the prompt's last token on, so after the prompt's forward pass "
                f"every pass must decode one cached token, but pass {self.passes + 1} fed {length} positions "
                f"(transformers {transformers.__version__}). Open one {self.opener} context per generate call "
                "and keep use_cache=True; chunked prefill and assisted decoding are not supported."
            )

    def record(self, layer: int, rows: int, length: int) -> int:
        first = 0 if self.phase == "all" or self.passes else max(length - self.tail, 0)
        self.audit.record(layer, rows=rows, positions=length, masked=length - first)
        return first

    def audits(self) -> list[MaskingAudit]:
        return [self.audit]


class RowGate(_Gate):
    """A head set per row, masked at every position; pass shapes prove that the prefix cache was used."""

    def __init__(self, fresh: int, layers: list[int], rows: list[list[Head]], audits: Sequence[MaskingAudit]):
        super().__init__(layers)
        self.fresh = fresh
        self.counts: dict[int, tuple[MaskingAudit, int, set[int]]] = {}  # id -> (audit, rows, masked layers)
        for heads, audit in zip(rows, audits):
            if heads:
                _, count, layers_of = self.counts.get(id(audit), (audit, 0, set()))
                self.counts[id(audit)] = (audit, count + 1, layers_of | {layer for layer, _ in heads})

    def check_pass(self, length: int) -> None:
        expected = 1 if self.passes else self.fresh
        if length != expected:
            raise MaskingError(
                f"Pass {self.passes + 1} over a shared prefix fed {length} positions where {expected} were expected: "
                f"the prefix's KV cache was not used (transformers {transformers.__version__}), so the prefix "
                "would have been read masked. Run the conditions one by one."
            )

    def record(self, layer: int, rows: int, length: int) -> int:
        for audit, count, layers in self.counts.values():
            if layer in layers:
                audit.record(layer, rows=count, positions=length, masked=length)
        return 0

    def audits(self) -> list[MaskingAudit]:
        return [audit for audit, _, _ in self.counts.values()]


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
    mode: str | MaskMode = "uniform",
    phase: str = "all",
    means: dict[int, torch.Tensor] | None = None,
    *,
    tail: int = 1,
    audit: MaskingAudit | None = None,
) -> Iterator[MaskingAudit]:
    """Mask ``(layer, query_head)`` pairs of a Hugging Face causal LM while the context is open.

    Args:
        model: a causal LM of a supported architecture (see ``SUPPORTED_MODEL_TYPES``).
        heads: query heads to mask; under GQA, list every query head of a group to mask the group.
        mode: ``uniform`` (paper), ``zero`` or ``mean``, or a :class:`~.modes.MaskMode` (see :mod:`.modes`).
        phase: ``all`` (every position of every pass) or ``decode`` (the paper's: see the module docstring).
            Under ``decode``, open one context per prompt: one ``generate`` call, or one forward pass.
        means: for ``mode="mean"`` by name, per-layer mean head outputs ``[num_heads, head_dim]`` from
            :func:`~.modes.head_output_means`.
        tail: under ``decode``, how many trailing positions of the prompt's pass are masked: 1 for generation
            (the last prompt token), the continuation's length when the pass scores a continuation.
        audit: counts to add to (a condition keeps one across calls); a new one by default.

    Yields:
        The :class:`MaskingAudit` of this context. With no heads, no hook is installed at all, so the model is
        untouched.
    """
    mode = as_mode(mode, means)
    check_choice("phase", phase)
    if not isinstance(tail, int) or tail < 1:
        raise ValueError(f"tail={tail!r} must be a positive integer.")
    geometry = HeadGeometry.from_config(model.config)
    masked = validate_heads(heads, geometry)
    audit = MaskingAudit() if audit is None else audit
    if not masked:
        yield audit
        return
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in masked:
        by_layer[layer].append(head)
    gate = PhaseGate(phase, tail, sorted(by_layer), audit)
    with _hooks(model, gate, {layer: [layer_heads] for layer, layer_heads in by_layer.items()}, mode):
        yield audit


@contextmanager
def mask_rows(
    model: nn.Module,
    rows: Sequence[Iterable[Sequence[int]]],
    mode: MaskMode,
    *,
    fresh: int,
    audits: Sequence[MaskingAudit],
) -> Iterator[None]:
    """Mask a different head set in each row of a batch, at every position of every pass.

    This is how several conditions continue one shared, unmasked prefix: row ``i`` holds a copy of the prefix's
    KV cache and masks ``rows[i]``. The first pass must feed exactly the ``fresh`` positions the cache does not
    hold, and every later pass one decoded token; any other shape means the cache was not used and the prefix
    would be read masked, so it raises :class:`MaskingError`. ``audits[i]`` counts row ``i``'s masking (rows of
    one condition share an audit). ``mode`` is a :class:`~.modes.MaskMode` every row shares.
    """
    if len(audits) != len(rows):
        raise ValueError(f"{len(rows)} rows need {len(rows)} audits, got {len(audits)}.")
    geometry = HeadGeometry.from_config(model.config)
    checked = [validate_heads(heads, geometry) for heads in rows]
    by_layer: dict[int, list[list[int]]] = {}
    for index, heads in enumerate(checked):
        for layer, head in heads:
            by_layer.setdefault(layer, [[] for _ in checked])[index].append(head)
    if not by_layer:
        yield
        return
    gate = RowGate(fresh, sorted(by_layer), checked, audits)
    with _hooks(model, gate, by_layer, mode):
        yield


@contextmanager
def _hooks(model: nn.Module, gate, by_layer: dict[int, list[list[int]]], mode: MaskMode) -> Iterator[None]:
    """Install the hooks that mask ``by_layer[layer][row]`` (one head list for all rows, or one per row)."""
    geometry = HeadGeometry.from_config(model.config)
    sites = attention_sites(model)
    stack = decoder(model)
    handles = [stack.register_forward_pre_hook(gate.begin), stack.register_forward_hook(gate.end)]
    try:
        for layer, per_row in by_layer.items():
            handles.append(mode.install(sites[layer], layer, per_row, geometry, gate))
        yield
    finally:
        for handle in handles:
            handle.remove()
