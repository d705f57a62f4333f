"""Head masking for Hugging Face causal LMs, and the ``rh-masked`` lm-eval model built on it.

The intervention layer: it depends on no other rh-eval package. Names load on first use, so that code which only
reads head-score files (the report, ``rh-eval heads``) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MODES": "masking",
    "PHASES": "masking",
    "SUPPORTED_MODEL_TYPES": "architectures",
    "Condition": "condition",
    "ConditionBatch": "shared_prefill",
    "HeadGeometry": "architectures",
    "HeadScoreFileError": "head_scores",
    "HeadScores": "head_scores",
    "HeadSelection": "head_selection",
    "MaskingAudit": "audit",
    "MaskingError": "audit",
    "UnsupportedArchitectureError": "architectures",
    "head_output_means": "masking",
    "load_head_scores": "head_scores",
    "mask_heads": "masking",
    "mask_rows": "masking",
    "model_source": "model_source",
    "select_heads": "head_selection",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
