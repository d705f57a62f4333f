"""What the masking hooks actually did, counted as they ran, so a results file can prove its intervention.

A masked condition is only evidence if its heads were masked in every forward pass that needed it. The hooks
count forward passes and masked positions per masked layer, and :func:`masking_had_effect` checks once, on a
probe input, that masking changes the logits at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


class MaskingError(RuntimeError):
    """The hooks could not mask what the condition asks for; results computed now would be mislabelled."""


@dataclass
class LayerCounts:
    forward_passes: int = 0
    masked_positions: int = 0  # rows x positions whose masked heads were taken out
    unmasked_positions: int = 0  # rows x positions read intact (the prompt, under phase="decode")


@dataclass
class MaskingAudit:
    """Running counts over every ``mask_heads`` context a condition opens."""

    forward_passes: int = 0
    layers: dict[int, LayerCounts] = field(default_factory=lambda: defaultdict(LayerCounts))
    canary_logit_change: float | None = None

    def record(self, layer: int, rows: int, positions: int, masked: int) -> None:
        counts = self.layers[layer]
        counts.forward_passes += 1
        counts.masked_positions += rows * masked
        counts.unmasked_positions += rows * (positions - masked)

    def problems(self, masked_layers: set[int]) -> list[str]:
        """Why these counts do not prove that the masked layers were masked; empty when they do."""
        found = []
        if not masked_layers:
            return found
        if self.canary_logit_change is None or self.canary_logit_change <= 0:
            found.append("the load-time canary did not show that masking changes the logits")
        if self.forward_passes == 0:
            found.append("no forward pass ran under masking")
        for layer in sorted(masked_layers):
            counts = self.layers.get(layer, LayerCounts())
            if counts.forward_passes != self.forward_passes:
                found.append(
                    f"layer {layer}'s hooks ran in {counts.forward_passes} of {self.forward_passes} forward passes"
                )
            elif self.forward_passes and counts.masked_positions == 0:
                found.append(f"layer {layer} masked no position")
        return found

    def describe(self, masked_layers: set[int]) -> dict:
        """The audit as it goes into ``config.rh_masking.audit`` of lm-eval's results file."""
        problems = self.problems(masked_layers)
        return {
            "clean": not problems,
            "problems": problems,
            "forward_passes": self.forward_passes,
            "canary_logit_change": self.canary_logit_change,
            "layers": {str(layer): vars(self.layers[layer]).copy() for layer in sorted(self.layers)},
        }
