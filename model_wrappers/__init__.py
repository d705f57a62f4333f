"""Head masking for Hugging Face causal LMs, and the ``rh-masked`` lm-eval model built on it."""

from .architectures import SUPPORTED_MODEL_TYPES, HeadGeometry, UnsupportedArchitectureError
from .audit import MaskingAudit, MaskingError
from .head_scores import HeadScoreFileError, HeadScores, load_head_scores
from .head_selection import HeadSelection, select_heads
from .masking import MODES, PHASES, head_output_means, mask_heads

__all__ = [
    "MODES",
    "PHASES",
    "SUPPORTED_MODEL_TYPES",
    "HeadGeometry",
    "HeadScoreFileError",
    "HeadScores",
    "HeadSelection",
    "MaskingAudit",
    "MaskingError",
    "UnsupportedArchitectureError",
    "head_output_means",
    "load_head_scores",
    "mask_heads",
    "select_heads",
]
