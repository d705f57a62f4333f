"""How each format of :mod:`.formats` is read into :class:`HeadScores`, one parser per format.

Two kinds come out:

* **scores** for every head (Retrieval_Head JSON, QRHead detection output, DuoAttention/RLKV gates), ranked by
  score;
* **ranked lists** without scores (QRHead YAML, vLLM-Hook), where the file's order is the ranking and the listed
  heads are the file's own retrieval-head set. Their ``means`` are rank scores (1 for the first listed head down
  to 1/n, 0 for unlisted heads): an ordering, not a measurement.

A parser is given a file its format recognised, and refuses what does not hold up with a
:class:`HeadScoreFileError` that names the file. The registry stamps the format's name on what it returns.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..masking.architectures import HeadGeometry
from .scores import HeadScoreFileError, HeadScores, UnknownFormatError

_HEAD_KEY = re.compile(r"^\s*(\d+)-(\d+)\s*$")


@dataclass(frozen=True)
class ScoreFile:
    """A head-score file read once: its text, parsed as JSON, or as YAML when it is not JSON."""

    path: Path
    digest: str  # sha256 of the file's bytes
    text: str
    is_json: bool
    data: object  # the JSON value; otherwise the YAML value, or None where YAML cannot read the text either
    json_error: json.JSONDecodeError | None = None

    @classmethod
    def read(cls, raw: bytes, path: Path) -> ScoreFile:
        digest = hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UnknownFormatError(f"{path} is not a text file.") from None
        try:
            return cls(path, digest, text, is_json=True, data=json.loads(text))
        except json.JSONDecodeError as err:
            json_error = err
        try:
            import yaml

            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        return cls(path, digest, text, is_json=False, data=data, json_error=json_error)

    def scores(self, means: np.ndarray, num_samples: int, **fields) -> HeadScores:
        return HeadScores(means=means, num_samples=num_samples, path=str(self.path), sha256=self.digest, **fields)


def retrieval_head_json(file: ScoreFile, geometry: HeadGeometry | None) -> HeadScores:
    """Every ``L-H`` key of a full L x H grid must be present, each with the same number of finite scores."""
    path = file.path
    means: dict[tuple[int, int], float] = {}
    lengths = set()
    for key, scores in file.data.items():
        try:
            layer, head = (int(part) for part in key.split("-"))
        except ValueError:
            raise HeadScoreFileError(f"{path}: key {key!r} is not 'layer-head' (e.g. '16-19').") from None
        if layer < 0 or head < 0:
            raise HeadScoreFileError(f"{path}: key {key!r} has a negative index.")
        if not scores:
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
    return file.scores(grid, lengths.pop())


def qrhead_scores(file: ScoreFile, geometry: HeadGeometry | None) -> HeadScores:
    """QRHead's detection output scores every head; its values (QRScore or NDCG@10) have no 0.1 cut-off."""
    path = file.path
    scores: dict[tuple[int, int], float] = {}
    for key, value in file.data:
        head = _parse_key(key, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise HeadScoreFileError(f"{path}: the score of {key!r} is not a finite number.")
        if head in scores:
            raise HeadScoreFileError(f"{path}: head {key!r} appears twice.")
        scores[head] = float(value)
    layers, heads = 1 + max(l for l, _ in scores), 1 + max(h for _, h in scores)
    if len(scores) != layers * heads:
        raise HeadScoreFileError(
            f"{path} is mis-shaped: {layers * heads - len(scores)} of the {layers} x {heads} heads have no score."
        )
    grid = np.zeros((layers, heads))
    for (l, h), value in scores.items():
        grid[l, h] = value
    return file.scores(grid, 1)


def kv_gates(file: ScoreFile, geometry: HeadGeometry | None) -> HeadScores:
    """One gate per KV head; values slightly outside [0, 1] are kept as written (they still rank)."""
    path = file.path
    try:
        with warnings.catch_warnings():  # an empty file is reported below, more clearly than numpy's warning
            warnings.simplefilter("ignore", UserWarning)
            gates = np.loadtxt(io.StringIO(file.text), delimiter="\t", ndmin=2, dtype=float)
    except ValueError as err:
        raise UnknownFormatError(
            f"{path} is not a tab-separated matrix of numbers ({err}); expected DuoAttention's "
            f"full_attention_heads.tsv or RLKV's adapter_weights.tsv, one row per layer and one column per KV head."
        ) from err
    if gates.size == 0:
        raise HeadScoreFileError(f"{path} is empty; expected one row of gates per layer.")
    if not np.isfinite(gates).all():
        raise HeadScoreFileError(f"{path} has a gate that is not a finite number.")
    if geometry is None:  # no model: one row per layer, one column per KV head, as written
        return file.scores(gates, 1, kv_heads_only=True)
    expected = (geometry.num_layers, geometry.num_kv_heads)
    if gates.shape != expected:
        raise HeadScoreFileError(
            f"{path} holds {gates.shape[0]} layers x {gates.shape[1]} KV heads, but the model has {expected[0]} "
            f"layers x {expected[1]} KV heads. Use a file made for this model."
        )
    return file.scores(np.repeat(gates, geometry.group_size, axis=1), 1)  # [L, KV] -> [L, H]: a group's heads


def qrhead_head_set(file: ScoreFile, geometry: HeadGeometry | None) -> HeadScores:
    """QRHead's YAML names its heads in one string, best first: ``attn_head_set: "14-22,13-16,..."``."""
    value, path = file.data["attn_head_set"], file.path
    if not isinstance(value, str):
        raise HeadScoreFileError(f'{path}: attn_head_set must be a string such as "14-22,13-16".')
    if value.strip() == "full_heads":
        raise HeadScoreFileError(
            f'{path} sets attn_head_set: "full_heads", QRHead\'s full-attention baseline: it means every head '
            "and ranks none. Use one of QRHead's ranked head sets (..._qr_head_*.yaml)."
        )
    return _ranked_list([_parse_key(item, path) for item in value.split(",")], file, geometry)


def vllm_hook_heads(file: ScoreFile, geometry: HeadGeometry | None) -> HeadScores:
    """vLLM-Hook's model config lists ``important_heads`` at its top level or under ``params``."""
    data = file.data
    heads = data["important_heads"] if "important_heads" in data else data["params"]["important_heads"]
    if not isinstance(heads, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
        for pair in heads
    ):
        raise HeadScoreFileError(f"{file.path}: important_heads must be a list of [layer, head] integer pairs.")
    return _ranked_list([tuple(pair) for pair in heads], file, geometry)


def _parse_key(key, path: Path) -> tuple[int, int]:
    match = _HEAD_KEY.match(key) if isinstance(key, str) else None
    if match is None:
        raise HeadScoreFileError(f"{path}: {key!r} is not a head written 'layer-head' (e.g. '14-22').")
    return int(match[1]), int(match[2])


def _ranked_list(heads: list[tuple[int, int]], file: ScoreFile, geometry: HeadGeometry | None) -> HeadScores:
    """A ranked head list as :class:`HeadScores`: its grid is the model's, or the smallest that holds the list."""
    path = file.path
    if not heads:
        raise HeadScoreFileError(f"{path} lists no heads.")
    if any(l < 0 or h < 0 for l, h in heads):
        raise HeadScoreFileError(f"{path} lists a head with a negative index.")
    repeated = sorted({head for head in heads if heads.count(head) > 1})
    if repeated:
        raise HeadScoreFileError(f"{path} lists head(s) {repeated} more than once.")
    if geometry is not None:
        shape = (geometry.num_layers, geometry.num_heads)
        outside = [head for head in heads if head[0] >= shape[0] or head[1] >= shape[1]]
        if outside:
            raise HeadScoreFileError(
                f"{path} lists head {outside[0]} (layer, query head), but the model has {shape[0]} layers x "
                f"{shape[1]} query heads. Use a head list made for this model."
            )
    else:
        shape = (1 + max(l for l, _ in heads), 1 + max(h for _, h in heads))
    means = np.zeros(shape)
    for rank, (l, h) in enumerate(heads):
        means[l, h] = (len(heads) - rank) / len(heads)
    return file.scores(means, 0, ranked=tuple(heads))
