"""A load-time check that masking reaches the logits: a no-op intervention must never produce results."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import transformers
from torch import nn

from ..condition import Head
from .architectures import HeadGeometry
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


@torch.no_grad()
def check_window_changes_logits(
    model: nn.Module,
    kept: list[Head],
    probe_ids: torch.Tensor,
    *,
    window: int,
    sink: int = 4,
    phase: str = "all",
    audit: MaskingAudit | None = None,
) -> float:
    """Largest change windowing every head but ``kept`` makes to the last position's logits on ``probe_ids``.

    ``probe_ids`` ``[1, T]`` must be as long as the contexts the condition is meant to shorten: a window that
    covers the whole probe changes nothing, and that raises :class:`MaskingError` as well. Returns 0.0 when
    every head is kept (nothing is windowed). The probe's counts are not added to ``audit``.
    """
    geometry = HeadGeometry.from_config(model.config)
    if not windowed_heads(validate_heads(kept, geometry), geometry):
        return 0.0
    change = _logit_change(model, probe_ids, lambda: window_heads(model, kept, window=window, sink=sink, phase=phase))
    if not change > 0:
        raise MaskingError(
            f"windowing had no effect: keeping {len(kept)} heads whole and giving the others a window of {window} "
            f"positions and {sink} sinks (phase={phase}) left the logits of a {probe_ids.shape[-1]}-token probe "
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
