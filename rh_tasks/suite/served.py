"""A suite's conditions on a serving engine: each masked condition exported, then evaluated by an lm-eval backend.

Under ``phase: all`` every condition is a checkpoint (:mod:`model_wrappers.export`), so the backend the suite
names (``hf`` here, ``vllm`` on a GPU machine) evaluates it as it would any model, with no hook of rh-eval's in
the loop. Exports go to ``exports/<condition>/`` of the suite's folder. The unmasked condition is exported too,
as hard links to the source's weights, so that its folder names the model as the masked ones do; the report
reads each run as the condition its folder records.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from model_wrappers.condition import Condition
from model_wrappers.export.record import ExportRecordError, read_export_record

from .config import SuiteConfig

logger = logging.getLogger(__name__)


def served_folder(config: SuiteConfig, condition: Condition, exports: Path) -> tuple[Path, dict]:
    """The checkpoint folder the backend loads for ``condition``, and the condition's record for the suite."""
    folder = exports / condition.name
    record = _reusable(folder, condition)
    if record is None:
        record = _export(config, condition, folder)
    return folder, {**record["rh_masking"], "engine": config.engine, "export": record["export"]}


def load_backend(config: SuiteConfig, folder: Path):
    """The suite's lm-eval backend on ``folder``, with the suite's model arguments (weights come from the folder)."""
    from lm_eval.api.registry import get_model

    try:
        backend = get_model(config.engine)
    except (KeyError, ValueError) as err:
        raise ValueError(f"engine={config.engine!r} is not an lm-eval backend here ({err}).") from None
    arguments = {key: value for key, value in config.model_args.items() if key != "gguf_file"}
    return backend.create_from_arg_obj(
        {**arguments, "pretrained": str(folder)}, {"batch_size": config.batch_size, "device": config.device}
    )


def _reusable(folder: Path, condition: Condition) -> dict | None:
    """The record of an earlier export of ``condition`` at ``folder``; anything else there is cleared."""
    try:
        record = read_export_record(folder) if folder.is_dir() else None
    except ExportRecordError:
        record = None
    if record is not None and _same(Condition.from_record(record["rh_masking"]), condition):
        return record
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _same(recorded: Condition, requested: Condition) -> bool:
    """A resolved condition is the requested one if everything it asks for agrees (a default K is resolved)."""
    fields = ("kind", "k", "seed", "match", "unit", "mode", "phase")
    return all(getattr(recorded, f) == getattr(requested, f) for f in fields if getattr(requested, f) is not None)


def _export(config: SuiteConfig, condition: Condition, folder: Path) -> dict:
    from model_wrappers.export.export import export_masked
    from model_wrappers.export.source import masked_source

    logger.info("Exporting %s to %s", condition.label, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    arguments = {"pretrained": config.pretrained, **config.model_args}
    return export_masked(masked_source(arguments, device=config.device, condition=condition), folder)
