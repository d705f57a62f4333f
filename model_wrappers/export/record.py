"""What an exported folder says it is: ``rh_eval_export.json``, and the marker in its config that points to it.

The marker lives in ``config.json`` because that file travels with the weights (engines and ``save_pretrained``
keep unknown config keys), so a folder whose record went missing is still known to hold masked weights.
Reading has no heavy imports: the report uses it.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORD_NAME = "rh_eval_export.json"
MARKER_KEY = "rh_eval_export"  # key in the exported config.json; its value is RECORD_NAME


class ExportRecordError(ValueError):
    """A folder holds masked weights but its record of which condition they are cannot be read."""


def read_export_record(folder: str | Path) -> dict | None:
    """The record of an exported folder, ``None`` for a folder that is no export (or no folder at all).

    Raises :class:`ExportRecordError` when the folder is marked as an export but its record is missing,
    unreadable or lacks ``rh_masking``: its weights are masked, so it must not pass for the unmasked model.
    """
    folder = Path(folder)
    record_path = folder / RECORD_NAME
    if not record_path.is_file() and not _is_marked(folder):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportRecordError(
            f"{folder} holds weights exported by rh-eval export, but its record {RECORD_NAME} cannot be read "
            f"({err}), so which heads it masks is unknown. Export that condition again."
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("rh_masking"), dict):
        raise ExportRecordError(
            f"{record_path} has no rh_masking entry, so which heads the folder masks is unknown. "
            "Export that condition again."
        )
    return record


def _is_marked(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and MARKER_KEY in config
