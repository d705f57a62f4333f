"""The task data shipped in ``rh_tasks/data`` (haystacks, needles, SQuAD, GSM8K, MMLU), every file checksummed."""

from __future__ import annotations

from pathlib import Path

from model_wrappers.packaged import PackagedData, PackagedDataError

TASK_DATA = PackagedData(Path(__file__).resolve().parents[1] / "data")

__all__ = ["TASK_DATA", "PackagedDataError"]
