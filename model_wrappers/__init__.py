"""Head masking for Hugging Face causal LMs, and the ``rh-masked`` lm-eval model built on it.

Four concerns, one subpackage each: :mod:`.masking` (architectures, hooks, audit, canary), :mod:`.heads`
(score files and head selection), :mod:`.sources` (where weights come from) and :mod:`.lm` (the lm-eval model
and its multi-condition engine). :mod:`.condition` names a condition for all of them.

The intervention layer: it depends on no other rh-eval package. Names load on first use, so that code which only
reads head-score files (the report, ``rh-eval heads``) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MODES": "condition",
    "PHASES": "condition",
    "MaskMode": "masking.modes",
    "SUPPORTED_MODEL_TYPES": "masking.architectures",
    "Condition": "condition",
    "ConditionError": "condition",
    "RHMaskedLM": "lm.rh_masked",
    "ConditionBatch": "lm.engine",
    "HeadGeometry": "masking.architectures",
    "HeadScoreFileError": "heads.scores",
    "HeadScores": "heads.scores",
    "MaskingAudit": "masking.audit",
    "MaskingError": "masking.audit",
    "UnsupportedArchitectureError": "masking.architectures",
    "UnsupportedAttentionError": "masking.window",
    "head_output_means": "masking.modes",
    "load_head_scores": "heads.load",
    "mask_heads": "masking.hooks",
    "mask_rows": "masking.hooks",
    "model_source": "sources.resolve",
    "resolve_heads": "heads.selection",
    "select_heads": "heads.selection",
    "window_heads": "masking.window",
    "window_rows": "masking.window",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
