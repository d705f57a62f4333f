"""Reading retrieval-head score files.

The Retrieval_Head format (Wu et al. 2024) is one JSON object ``{"layer-head": [score per detection sample]}``
keyed by 0-based *query* head. Consumers rank heads by the mean of each list.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .architectures import HeadGeometry

RETRIEVAL_THRESHOLD = 0.1  # Wu et al.: heads whose mean score exceeds 0.1 are retrieval heads


class HeadScoreFileError(ValueError):
    """A head-score file is unreadable, malformed, or does not match the model."""


@dataclass(frozen=True)
class HeadScores:
    """Mean retrieval score of every query head, ``means[layer, head]``."""

    means: np.ndarray  # [num_layers, num_heads]
    num_samples: int
    path: str
    sha256: str

    def ranking(self) -> list[tuple[int, int]]:
        """All heads, best first; ties broken by (layer, head) so the order is reproducible."""
        layers, heads = self.means.shape
        order = sorted(((-self.means[l, h], l, h) for l in range(layers) for h in range(heads)))
        return [(l, h) for _, l, h in order]

    def retrieval_heads(self, threshold: float = RETRIEVAL_THRESHOLD) -> list[tuple[int, int]]:
        return [(l, h) for l, h in self.ranking() if self.means[l, h] >= threshold]

    def check_geometry(self, geometry: HeadGeometry) -> None:
        expected = (geometry.num_layers, geometry.num_heads)
        if self.means.shape != expected:
            raise HeadScoreFileError(
                f"{self.path} scores {self.means.shape[0]} layers x {self.means.shape[1]} heads, but the model has "
                f"{expected[0]} layers x {expected[1]} query heads. Use a score file detected on this model "
                "(rh-eval detect)."
            )


def load_head_scores(path: str | Path) -> HeadScores:
    """Parse a Retrieval_Head JSON file; every ``L-H`` key of a full L x H grid must be present."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise HeadScoreFileError(f"Cannot read head-score file {path}: {err.strerror}.") from err
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HeadScoreFileError(f"{path} is not valid JSON ({err}); expected {{\"layer-head\": [scores]}}.") from err
    if not isinstance(data, dict) or not data:
        raise HeadScoreFileError(f"{path} holds no head scores; expected a non-empty {{\"layer-head\": [scores]}} object.")

    means: dict[tuple[int, int], float] = {}
    lengths = set()
    for key, scores in data.items():
        try:
            layer, head = (int(part) for part in key.split("-"))
        except ValueError:
            raise HeadScoreFileError(f"{path}: key {key!r} is not 'layer-head' (e.g. '16-19').") from None
        if layer < 0 or head < 0:
            raise HeadScoreFileError(f"{path}: key {key!r} has a negative index.")
        if not isinstance(scores, list) or not scores:
            raise HeadScoreFileError(f"{path}: {key!r} must map to a non-empty list of per-sample scores.")
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
            raise HeadScoreFileError(f"{path}: {key!r} has a score that is not a finite number.")
        means[(layer, head)] = float(np.mean(scores))
        lengths.add(len(scores))

    num_layers = 1 + max(l for l, _ in means)
    num_heads = 1 + max(h for _, h in means)
    missing = num_layers * num_heads - len(means)
    if missing:
        raise HeadScoreFileError(
            f"{path} is mis-shaped: {missing} of the {num_layers} x {num_heads} heads have no scores."
        )
    if len(lengths) != 1:
        raise HeadScoreFileError(f"{path}: heads have different numbers of samples ({sorted(lengths)}).")
    grid = np.zeros((num_layers, num_heads))
    for (layer, head), mean in means.items():
        grid[layer, head] = mean
    return HeadScores(means=grid, num_samples=lengths.pop(), path=str(path), sha256=hashlib.sha256(raw).hexdigest())
