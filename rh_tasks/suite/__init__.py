"""``rh-eval suite``: one YAML file runs the whole causal experiment and writes its report."""

from model_wrappers.condition import Condition

from .config import SuiteConfig, SuiteConfigError, load_suite, parse_suite
from .identity import differences
from .runner import SuiteStateError, run_suite

__all__ = [
    "Condition",
    "SuiteConfig",
    "SuiteConfigError",
    "SuiteStateError",
    "differences",
    "load_suite",
    "parse_suite",
    "run_suite",
]
