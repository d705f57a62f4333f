"""Head scores, and the two formats rh-eval writes for other tools (it reads more: see :mod:`.formats`).

* Retrieval_Head JSON (Wu et al. 2024; also read by HeadKV and DeCoRe): one object
  ``{"layer-head": [score per detection sample]}`` keyed by 0-based *query* head, in layer-major order (HeadKV
  reshapes the values in key order). Consumers rank heads by the mean of each list. rh-eval writes a metadata
  sidecar ``<name>.meta.json`` beside it (model identity, head counts, how the scores were made); the JSON
  itself stays in the plain format so those tools read it unchanged.
* DuoAttention ``full_attention_heads.tsv``: a tab-separated ``[layers x kv_heads]`` matrix of gates. Every
  query head reads its group's KV head, so each query head of a group gets the group's gate. Exporting goes the
  other way: a group's gate is its best query head's score, as a group retrieves if any of its heads copies.

Files are validated against the model's :class:`HeadGeometry`; a mismatch is an error naming both shapes.
Writes are atomic (temporary file, then rename), so a crash never leaves a half-written score file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..masking.architectures import HeadGeometry

RETRIEVAL_THRESHOLD = 0.1  # Wu et al.: heads whose mean score exceeds 0.1 are retrieval heads


class HeadScoreFileError(ValueError):
    """A head-score file is unreadable, malformed, or does not match the model."""


class UnknownFormatError(HeadScoreFileError):
    """The file is in none of the formats rh-eval reads; its message goes on to list them."""


@dataclass(frozen=True)
class HeadScores:
    """Mean retrieval score of every query head, ``means[layer, head]``."""

    means: np.ndarray  # [num_layers, num_heads]
    num_samples: int  # per-head samples in a Retrieval_Head file; 1 for DuoAttention gates
    path: str
    sha256: str
    metadata: dict | None = None  # the rh-eval sidecar, when there is one
    format: str = "retrieval_head"  # a key of formats.FORMATS
    ranked: tuple[tuple[int, int], ...] | None = None  # a ranked list without scores: its heads, best first
    kv_heads_only: bool = False  # KV gates read without a model: ``means`` is [layers, kv_heads]

    def ranking(self) -> list[tuple[int, int]]:
        """All heads, best first; ties broken by (layer, head) so the order is reproducible."""
        layers, heads = self.means.shape
        order = sorted((-self.means[l, h], l, h) for l in range(layers) for h in range(heads))
        return [(l, h) for _, l, h in order]

    def retrieval_heads(self, threshold: float = RETRIEVAL_THRESHOLD) -> list[tuple[int, int]]:
        """Heads at or above ``threshold``; a ranked list's own heads, whatever the threshold."""
        if self.ranked is not None:
            return list(self.ranked)
        return [(l, h) for l, h in self.ranking() if self.means[l, h] >= threshold]

    @property
    def has_cutoff(self) -> bool:
        """Whether the file says which heads are retrieval heads: by Wu et al.'s 0.1 cut-off, or by listing them.

        QRHead's detection scores (QRScore or NDCG@10) are on another scale, with no published cut-off, and so are
        the attention-mass definitions of ``rh-eval detect``, whose sidecar records no threshold.
        """
        return self.format != "qrhead_scores" and self.definition_threshold is not None

    @property
    def definition(self) -> str | None:
        """The score definition an rh-eval sidecar names (``set``, ``query_focus``, ...), if there is one."""
        score = (self.metadata or {}).get("score")
        return score.get("definition") if isinstance(score, dict) else None

    @property
    def definition_threshold(self) -> float | None:
        """The cut-off the sidecar records for its definition; Wu et al.'s 0.1 for files without one."""
        score = (self.metadata or {}).get("score")
        if isinstance(score, dict) and "retrieval_threshold" in score:
            return score["retrieval_threshold"]
        return RETRIEVAL_THRESHOLD

    @property
    def description(self) -> str:
        """What the numbers are, for messages: ``QRHead scores``, ``'query_focus' scores``, ..."""
        if self.format == "qrhead_scores":
            return "QRHead scores"
        return f"{self.definition!r} scores" if self.definition else "scores"

    def check_geometry(self, geometry: HeadGeometry) -> None:
        expected = (geometry.num_layers, geometry.num_heads)
        if self.kv_heads_only:
            raise HeadScoreFileError(
                f"{self.path} holds one gate per KV head and was read without the model; read it with the model's "
                "geometry to expand it to query heads."
            )
        if self.ranked is not None and self.means.shape != expected:
            outside = [(l, h) for l, h in self.ranked if l >= expected[0] or h >= expected[1]]
            raise HeadScoreFileError(
                f"{self.path} lists head {outside[0] if outside else self.ranked[0]}, read for a grid of "
                f"{self.means.shape[0]} layers x {self.means.shape[1]} heads, but the model has {expected[0]} "
                f"layers x {expected[1]} query heads. Use a head list made for this model."
            )
        if self.means.shape != expected:
            raise HeadScoreFileError(
                f"{self.path} scores {self.means.shape[0]} layers x {self.means.shape[1]} heads, but the model has "
                f"{expected[0]} layers x {expected[1]} query heads. Use a score file detected on this model "
                "(rh-eval detect)."
            )
        recorded = (self.metadata or {}).get("num_key_value_heads")
        if recorded is not None and recorded != geometry.num_kv_heads:
            raise HeadScoreFileError(
                f"{metadata_path(self.path)} says the scored model has {recorded} KV heads, but this model has "
                f"{geometry.num_kv_heads}. Use a score file detected on this model (rh-eval detect)."
            )

    def kv_gates(self, geometry: HeadGeometry) -> np.ndarray:
        """``[num_layers, num_kv_heads]``: each KV group's best query-head score (DuoAttention's layout)."""
        self.check_geometry(geometry)
        return self.means.reshape(geometry.num_layers, geometry.num_kv_heads, geometry.group_size).max(-1)


def metadata_path(path: str | Path) -> Path:
    """Where the sidecar of a score file lives: ``scores.json`` -> ``scores.meta.json``."""
    return Path(path).with_suffix(".meta.json")


def write_retrieval_head_json(path: str | Path, per_sample: np.ndarray, metadata: dict | None = None) -> None:
    """Write ``per_sample[sample, layer, head]`` as Retrieval_Head JSON (layer-major keys), plus the sidecar."""
    per_sample = np.asarray(per_sample, dtype=float)
    if per_sample.ndim != 3 or per_sample.shape[0] == 0:
        raise ValueError(
            f"per_sample must be [samples, layers, heads] with at least one sample; got {per_sample.shape}."
        )
    if not np.isfinite(per_sample).all():
        raise ValueError("Refusing to write a head score that is not a finite number.")
    _, layers, heads = per_sample.shape
    data = {f"{l}-{h}": per_sample[:, l, h].tolist() for l in range(layers) for h in range(heads)}
    atomic_write_text(Path(path), json.dumps(data) + "\n")
    if metadata is not None:
        atomic_write_text(metadata_path(path), json.dumps(metadata, indent=1) + "\n")


def write_duo_tsv(path: str | Path, gates: np.ndarray, metadata: dict | None = None) -> None:
    """Write ``gates[layer, kv_head]`` as DuoAttention's ``full_attention_heads.tsv`` (np.savetxt, tabs)."""
    gates = np.asarray(gates, dtype=float)
    if gates.ndim != 2 or gates.size == 0 or not np.isfinite(gates).all():
        raise ValueError(f"gates must be a finite, non-empty [layers, kv_heads] matrix; got shape {gates.shape}.")
    buffer = io.StringIO()
    np.savetxt(buffer, gates, delimiter="\t")
    atomic_write_text(Path(path), buffer.getvalue())
    if metadata is not None:
        atomic_write_text(metadata_path(path), json.dumps(metadata, indent=1) + "\n")
