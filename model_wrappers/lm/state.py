"""A condition as one loaded model evaluates it: its heads resolved, its mode bound, and the evidence it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..condition import Condition, Head
from ..heads.scores import HeadScores
from ..masking.audit import MaskingAudit
from ..masking.modes import MaskMode


@dataclass(frozen=True)
class ConditionState:
    """What :class:`~.rh_masked.RHMaskedLM` and the engine need of the condition being evaluated."""

    condition: Condition  # resolved: every masked head listed
    mode: MaskMode  # bound to the model
    scores: HeadScores | None
    audit: MaskingAudit = field(default_factory=MaskingAudit)

    @property
    def heads(self) -> tuple[Head, ...]:
        return self.condition.heads

    def record(self) -> dict:
        """``config.rh_masking`` of the results file, but the model's identity: the condition and its proof."""
        return {
            **self.condition.record(),
            "audit": self.audit.describe({layer for layer, _ in self.heads}),
            "head_scores": self.scores.path if self.scores else None,
            "head_scores_sha256": self.scores.sha256 if self.scores else None,
        }
