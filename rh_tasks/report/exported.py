"""Stock runs on folders written by ``rh-eval export``: they are the masked condition the folder records.

A stock ``lm_eval --model hf`` (or ``vllm``) run records no ``rh_masking`` of its own, only the model folder it
loaded, so the folder's record is read back here. Such a run must never pass for the unmasked baseline, so the
folder has to exist where the report runs. Refused: a run naming a local path that is no folder here (a missing
export would read as unmasked), a folder marked as an export whose record cannot be read, and a folder exported
after the run started (it may no longer hold the weights the run evaluated). A name shaped like a hub id
(``org/name``) that is no local folder is a hub model.

No hook ran in such a run, so its masking audit is the export's verification: the written weights gave
``rh-masked``'s logits within the recorded tolerance, and masking changed the logits (the canary).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from model_wrappers.export.record import ExportRecordError, read_export_record

_FOLDER_KEYS = ("pretrained", "model", "path")  # where hf, vllm and local-completions name the weights
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # a repository id; no local path is needed


def exported_masking(results: Path, model_args, started: float | None = None) -> dict | None:
    """``rh_masking`` recorded by the exported folder that ``model_args`` load, or ``None`` if they load none.

    ``started`` is the run's start (lm-eval's ``date``, Unix seconds). Raises :class:`ExportRecordError` for
    every case the module docstring refuses.
    """
    if isinstance(model_args, str):
        model_args = dict(part.split("=", 1) for part in model_args.split(",") if "=" in part)
    if not isinstance(model_args, dict):
        return None
    for key in _FOLDER_KEYS:
        value = model_args.get(key)
        if not isinstance(value, str):
            continue
        if not Path(value).is_dir():
            if not _HUB_ID.fullmatch(value):
                raise ExportRecordError(
                    f"{results}: the run evaluated {value}, which is not a folder here. If it was exported by "
                    "rh-eval export, only its record says which heads it masks; run the report where the folder "
                    "is, or put it back."
                )
            continue
        try:
            record = read_export_record(value)
        except ExportRecordError as err:
            raise ExportRecordError(f"{results}: the run evaluated {value}, but {err}") from None
        if record is None:
            continue
        created = (record.get("export") or {}).get("created")
        if isinstance(created, (int, float)) and isinstance(started, (int, float)) and created > started:
            raise ExportRecordError(
                f"{results}: {value} was exported at {_when(created)}, after this run started ({_when(started)}), "
                "so it may not hold the weights the run evaluated. Evaluate that folder again."
            )
        return {**record["rh_masking"], "audit": _verification_audit(record)}
    return None


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _verification_audit(record: dict) -> dict:
    """The audit a stock run on an exported folder carries: was the folder verified against rh-masked?"""
    export, canary = record.get("export") or {}, (record["rh_masking"].get("audit") or {}).get("canary_logit_change")
    problems = []
    reached, tolerance = export.get("max_abs_logit_diff"), export.get("tolerance")
    if not isinstance(reached, (int, float)) or not isinstance(tolerance, (int, float)) or not reached <= tolerance:
        problems.append(f"the export was not verified within its tolerance ({reached} > {tolerance})")
    if not isinstance(canary, (int, float)) or not canary > 0:
        problems.append("the export records no change of the logits under masking (canary)")
    return {"clean": not problems, "problems": problems, "exported": export}
