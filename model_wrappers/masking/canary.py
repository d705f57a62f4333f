"""A load-time check that masking reaches the logits: a no-op intervention must never produce results."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import transformers
from torch import nn

from ..condition import Head
from .architectures import HeadGeometry, cache_keyword
from .audit import MaskingAudit, MaskingError
from .hooks import mask_heads, validate_heads
from .modes import MaskMode, as_mode
from .window import window_heads, windowed_heads

PROBE_TEXT = "The canary sings in the mine until the air goes bad, and then it stops."


@torch.no_grad()
def check_masking_changes_logits(
    model: nn.Module,
    heads: list[Head],
    probe_ids: torch.Tensor,
    *,
    mode: str | MaskMode = "uniform",
    phase: str = "all",
    audit: MaskingAudit | None = None,
) -> float:
    """Largest change masking makes to the last position's logits on ``probe_ids`` ``[1, T]``.

    Raises :class:`MaskingError` when there is none. The probe's counts are not added to ``audit``; only the
    change is recorded there.
    """
    if not heads:
        return 0.0
    mode = as_mode(mode)
    change = _logit_change(model, probe_ids, lambda: mask_heads(model, heads, mode=mode, phase=phase))
    if not change > 0:
        raise MaskingError(
            f"masking had no effect: masking {len(heads)} heads (mode={mode.name}, phase={phase}) left the logits of a "
            f"probe input unchanged (transformers {transformers.__version__}). The hooks do not reach this "
            "model's attention; no results were computed."
        )
    if audit is not None:
        audit.canary_logit_change = change
    return change


class Probe:
    """A probe input and the unchanged model's last-position logits on it, computed once for many conditions.

    Under ``phase="decode"`` only the last position is intervened on, so the probe's prefix is read once into a
    KV cache and each condition runs one token over a copy of it; the unchanged logits come the same way, so
    that a no-op intervention gives exactly the same numbers.
    """

    def __init__(self, model: nn.Module, probe_ids: torch.Tensor):
        self.model = model
        self.ids = probe_ids if model.device.type == "meta" else probe_ids.to(model.device)  # [1, T]
        self._plain: dict[str, torch.Tensor] = {}
        self._prefix: transformers.Cache | None = None

    @property
    def length(self) -> int:
        return self.ids.shape[-1]

    @torch.no_grad()
    def change(self, intervention: Callable[[], AbstractContextManager], phase: str) -> float:
        """Largest change ``intervention`` makes to the last position's logits."""
        if phase not in self._plain:
            self._plain[phase] = self._last_logits(phase)
        with intervention():
            changed = self._last_logits(phase)
        return (changed - self._plain[phase]).abs().max().item()

    def _last_logits(self, phase: str) -> torch.Tensor:
        if phase != "decode":
            return self.model(self.ids).logits[:, -1].float()
        keyword = cache_keyword(self.model)
        if self._prefix is None:
            self._prefix = transformers.DynamicCache(config=self.model.config)
            self.model(self.ids[:, :-1], use_cache=True, **{keyword: self._prefix})
        cache = copy.deepcopy(self._prefix)
        return self.model(self.ids[:, -1:], use_cache=True, **{keyword: cache}).logits[:, -1].float()


@torch.no_grad()
def check_window_changes_logits(
    model: nn.Module,
    kept: list[Head],
    probe_ids: torch.Tensor | Probe,
    *,
    window: int,
    sink: int = 4,
    phase: str = "all",
    audit: MaskingAudit | None = None,
) -> float:
    """Largest change windowing every head but ``kept`` makes to the last position's logits on ``probe_ids``.

    ``probe_ids`` ``[1, T]`` must be as long as the contexts the condition is meant to shorten: a window that
    covers the whole probe changes nothing, and that raises :class:`MaskingError` as well. A :class:`Probe`
    shares its unchanged logits between the conditions checked on it. Returns 0.0 when every head is kept
    (nothing is windowed). The probe's counts are not added to ``audit``.
    """
    geometry = HeadGeometry.from_config(model.config)
    if not windowed_heads(validate_heads(kept, geometry), geometry):
        return 0.0
    probe = probe_ids if isinstance(probe_ids, Probe) else Probe(model, probe_ids)
    change = probe.change(lambda: window_heads(model, kept, window=window, sink=sink, phase=phase), phase)
    if not change > 0:
        raise MaskingError(
            f"windowing had no effect: keeping {len(kept)} heads whole and giving the others a window of {window} "
            f"positions and {sink} sinks (phase={phase}) left the logits of a {probe.length}-token probe "
            f"unchanged (transformers {transformers.__version__}). Either the window covers the probe, so this "
            "condition is the full model, or the hooks do not reach this model's attention; no results were computed."
        )
    if audit is not None:
        audit.canary_logit_change = change
    return change


def _logit_change(model: nn.Module, probe_ids: torch.Tensor, intervention: Callable[[], AbstractContextManager]):
    if model.device.type != "meta":
        probe_ids = probe_ids.to(model.device)
    plain = model(probe_ids).logits[:, -1].float()
    with intervention():
        changed = model(probe_ids).logits[:, -1].float()
    return (changed - plain).abs().max().item()
