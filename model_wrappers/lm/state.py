"""A condition as one loaded model evaluates it: its heads resolved, its mode bound, and the evidence it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..condition import Condition, Head
from ..heads.scores import HeadScores
from ..masking.architectures import HeadGeometry
from ..masking.audit import MaskingAudit
from ..masking.modes import MaskMode
from ..masking.window import windowed_heads


@dataclass(frozen=True)
class ConditionState:
    """What :class:`~.rh_masked.RHMaskedLM` and the engine need of the condition being evaluated."""

    condition: Condition  # resolved: every masked (or, with a window, kept) head listed
    mode: MaskMode  # bound to the model
    scores: HeadScores | None
    audit: MaskingAudit = field(default_factory=MaskingAudit)
    geometry: HeadGeometry | None = None  # the model's; needed to list the heads a window changes

    @property
    def heads(self) -> tuple[Head, ...]:
        """The condition's head set: masked ones, or the kept ones of a windowed condition."""
        return self.condition.heads

    @property
    def windowed(self) -> bool:
        return self.condition.window is not None

    @property
    def changed(self) -> tuple[Head, ...]:
        """The heads whose attention the condition changes: the masked ones, or every head a window restricts."""
        if not self.windowed:
            return self.heads
        if self.geometry is None:
            raise ValueError("A windowed condition's state needs the model's geometry to list its windowed heads.")
        return tuple(windowed_heads(self.heads, self.geometry))

    def record(self) -> dict:
        """``config.rh_masking`` of the results file, but the model's identity: the condition and its proof.

        A windowed condition adds the KV groups its kept heads occupy and the model's KV groups: what a KV cache
        would keep whole, the report's memory axis.
        """
        memory = {}
        if self.windowed:
            geometry = self.geometry
            kept = {(layer, geometry.kv_group(head)) for layer, head in self.heads}
            memory = {"kept_kv_groups": len(kept), "kv_groups": geometry.num_layers * geometry.num_kv_heads}
        return {
            **self.condition.record(),
            **memory,
            "audit": self.audit.describe({layer for layer, _ in self.changed}),
            "head_scores": self.scores.path if self.scores else None,
            "head_scores_sha256": self.scores.sha256 if self.scores else None,
        }
