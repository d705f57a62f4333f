"""Reading a head-score file in any format of :mod:`.formats`, with its rh-eval sidecar if present."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..masking.architectures import HeadGeometry
from .formats import read_head_score_file
from .scores import HeadScoreFileError, HeadScores, metadata_path


def load_head_scores(path: str | Path, geometry: HeadGeometry | None = None) -> HeadScores:
    """Read a head-score file in any format of :mod:`.formats`, with its sidecar if present.

    With ``geometry`` the scores are checked against the model, a TSV's KV gates are expanded to the query heads
    of each group, and a ranked list is laid out on the model's grid. Without it, a TSV stays one gate per KV head.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise HeadScoreFileError(f"Cannot read head-score file {path}: {err.strerror}.") from err
    if not raw.strip():
        raise HeadScoreFileError(f"{path} is empty; regenerate it with rh-eval detect, or pass another file.")
    scores = read_head_score_file(raw, path, geometry)
    sidecar = metadata_path(path)
    if sidecar.is_file():
        try:
            scores = replace(scores, metadata=json.loads(sidecar.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise HeadScoreFileError(f"{sidecar} is not valid JSON ({err}); delete or regenerate it.") from err
    if geometry is not None:
        scores.check_geometry(geometry)
    return scores
