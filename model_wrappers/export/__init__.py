"""Masked checkpoints: a ``phase=all`` masking condition written into a model's weights for serving engines.

:mod:`.weights` turns a condition into tensor edits, :mod:`.checkpoint` writes them at the least disk cost,
:mod:`.export` verifies the folder against ``rh-masked``, :mod:`.source` resolves the condition through
``rh-masked``, and :mod:`.record` reads back what an exported folder is (without importing torch).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExportRecordError": "record",
    "ExportRefusedError": "weights",
    "ExportVerificationError": "export",
    "MaskedSource": "export",
    "RECORD_NAME": "record",
    "export_masked": "export",
    "masked_source": "source",
    "read_export_record": "record",
    "weight_edits": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
