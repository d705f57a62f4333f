"""A load-time check that masking reaches the logits: a no-op intervention must never produce results."""

from __future__ import annotations

import torch
import transformers
from torch import nn

from ..condition import Head
from .audit import MaskingAudit, MaskingError
from .hooks import mask_heads
from .modes import MaskMode, as_mode

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
    if model.device.type != "meta":
        probe_ids = probe_ids.to(model.device)
    plain = model(probe_ids).logits[:, -1].float()
    with mask_heads(model, heads, mode=mode, phase=phase):
        masked = model(probe_ids).logits[:, -1].float()
    change = (masked - plain).abs().max().item()
    if not change > 0:
        raise MaskingError(
            f"masking had no effect: masking {len(heads)} heads (mode={mode.name}, phase={phase}) left the logits of a "
            f"probe input unchanged (transformers {transformers.__version__}). The hooks do not reach this "
            "model's attention; no results were computed."
        )
    if audit is not None:
        audit.canary_logit_change = change
    return change
