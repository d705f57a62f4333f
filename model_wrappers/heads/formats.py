"""Head-score files of the field, recognised by their content and read into :class:`HeadScores`.

Each project publishes its heads in its own layout (see :data:`FORMATS`). A file is recognised by what it holds,
not by its name, because the projects reuse ``.json`` for different layouts. Two kinds come out:

* **scores** for every head (Retrieval_Head JSON, QRHead detection output, DuoAttention/RLKV gates), ranked by
  score;
* **ranked lists** without scores (QRHead YAML, vLLM-Hook), where the file's order is the ranking and the listed
  heads are the file's own retrieval-head set. Their ``means`` are rank scores (1 for the first listed head down
  to 1/n, 0 for unlisted heads): an ordering, not a measurement.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np

from ..masking.architectures import HeadGeometry
from .scores import HeadScoreFileError, HeadScores, _parse_retrieval_head_json

# name -> what it is, in the order of the refusal message
FORMATS = {
    "retrieval_head": "Retrieval_Head JSON (Wu et al., HeadKV, CompressKV scores, rh-eval detect): "
    '{"layer-head": [scores]}',
    "qrhead_scores": 'QRHead detection output: [["layer-head", score], ...]',
    "qrhead_yaml": 'QRHead head set: YAML with attn_head_set: "layer-head,layer-head,..." (ranked, no scores)',
    "vllm_hook": "IBM vLLM-Hook model config: important_heads: [[layer, head], ...] (no scores)",
    "kv_gates": "DuoAttention full_attention_heads.tsv or RLKV adapter_weights.tsv: layers x KV heads, tab-separated",
}

_HEAD_KEY = re.compile(r"^\s*(\d+)-(\d+)\s*$")


def accepted_formats() -> str:
    return "Accepted formats:\n" + "\n".join(f"  - {text}" for text in FORMATS.values())


def detect_format(raw: bytes, path: Path) -> tuple[str, object]:
    """The format of ``raw`` and its parsed content, or a refusal that lists the accepted formats."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HeadScoreFileError(f"{path} is not a text file.\n{accepted_formats()}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        json_error = err
    else:
        return _json_layout(data, path), data
    try:
        import yaml

        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and "attn_head_set" in data:
        return "qrhead_yaml", data
    if "\t" in text or path.suffix == ".tsv":
        return "kv_gates", text
    reason = f"not valid JSON ({json_error})" if path.suffix == ".json" else "in no format rh-eval reads"
    raise HeadScoreFileError(f"{path} is {reason}.\n{accepted_formats()}")


def _json_layout(data, path: Path) -> str:
    if isinstance(data, dict) and data:
        params = data.get("params")
        if "important_heads" in data or (isinstance(params, dict) and "important_heads" in params):
            return "vllm_hook"
        values_are_lists = all(isinstance(v, list) for v in data.values())
        if values_are_lists and all(str(k).isdigit() for k in data):
            raise HeadScoreFileError(
                f'{path} looks like CompressKV\'s per-layer head order ({{"layer": [heads, best first]}}). It '
                "ranks the heads within each layer only, so it names no model-wide top K to mask; use the "
                'score file it was made from (..._SRH.json, {"layer-head": [scores]}) instead.'
            )
        if values_are_lists:
            return "retrieval_head"
    if (
        isinstance(data, list)
        and data
        and all(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in data)
    ):
        return "qrhead_scores"
    if not data:
        raise HeadScoreFileError(
            f'{path} holds no head scores; expected a non-empty {{"layer-head": [scores]}} object.\n'
            f"{accepted_formats()}"
        )
    raise HeadScoreFileError(f"{path} holds JSON in no layout rh-eval reads.\n{accepted_formats()}")


def read_head_score_file(raw: bytes, path: Path, geometry: HeadGeometry | None) -> HeadScores:
    """Detect the format of ``raw`` and read it; lists and KV gates are laid out on ``geometry`` when given."""
    name, content = detect_format(raw, path)
    digest = hashlib.sha256(raw).hexdigest()
    if name == "retrieval_head":
        return _parse_retrieval_head_json(raw, path)
    if name == "qrhead_scores":
        return _qrhead_scores(content, path, digest)
    if name == "kv_gates":
        return _kv_gates(content, path, digest, geometry)
    if name == "qrhead_yaml":
        heads = _qrhead_head_set(content["attn_head_set"], path)
    else:
        heads = _vllm_hook_heads(content, path)
    return ranked_list(heads, path, digest, name, geometry)


def _parse_key(key, path: Path) -> tuple[int, int]:
    match = _HEAD_KEY.match(key) if isinstance(key, str) else None
    if match is None:
        raise HeadScoreFileError(f"{path}: {key!r} is not a head written 'layer-head' (e.g. '14-22').")
    return int(match[1]), int(match[2])


def _qrhead_scores(items: list, path: Path, digest: str) -> HeadScores:
    """QRHead's detection output scores every head; its values (QRScore or NDCG@10) have no 0.1 cut-off."""
    scores: dict[tuple[int, int], float] = {}
    for key, value in items:
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
    return HeadScores(means=grid, num_samples=1, path=str(path), sha256=digest, format="qrhead_scores")


def _kv_gates(text: str, path: Path, digest: str, geometry: HeadGeometry | None) -> HeadScores:
    """One gate per KV head; values slightly outside [0, 1] are kept as written (they still rank)."""
    try:
        with warnings.catch_warnings():  # an empty file is reported below, more clearly than numpy's warning
            warnings.simplefilter("ignore", UserWarning)
            gates = np.loadtxt(io.StringIO(text), delimiter="\t", ndmin=2, dtype=float)
    except ValueError as err:
        raise HeadScoreFileError(
            f"{path} is not a tab-separated matrix of numbers ({err}); expected DuoAttention's "
            f"full_attention_heads.tsv or RLKV's adapter_weights.tsv, one row per layer and one column per KV head.\n"
            f"{accepted_formats()}"
        ) from err
    if gates.size == 0:
        raise HeadScoreFileError(f"{path} is empty; expected one row of gates per layer.")
    if not np.isfinite(gates).all():
        raise HeadScoreFileError(f"{path} has a gate that is not a finite number.")
    if geometry is None:  # no model: one row per layer, one column per KV head, as written
        return HeadScores(
            means=gates, num_samples=1, path=str(path), sha256=digest, format="kv_gates", kv_heads_only=True
        )
    expected = (geometry.num_layers, geometry.num_kv_heads)
    if gates.shape != expected:
        raise HeadScoreFileError(
            f"{path} holds {gates.shape[0]} layers x {gates.shape[1]} KV heads, but the model has {expected[0]} "
            f"layers x {expected[1]} KV heads. Use a file made for this model."
        )
    means = np.repeat(gates, geometry.group_size, axis=1)  # [L, KV] -> [L, H]: every query head of a group
    return HeadScores(means=means, num_samples=1, path=str(path), sha256=digest, format="kv_gates")


def _qrhead_head_set(value, path: Path) -> list[tuple[int, int]]:
    if not isinstance(value, str):
        raise HeadScoreFileError(f'{path}: attn_head_set must be a string such as "14-22,13-16".')
    if value.strip() == "full_heads":
        raise HeadScoreFileError(
            f'{path} sets attn_head_set: "full_heads", QRHead\'s full-attention baseline: it means every head '
            "and ranks none. Use one of QRHead's ranked head sets (..._qr_head_*.yaml)."
        )
    return [_parse_key(item, path) for item in value.split(",")]


def _vllm_hook_heads(data: dict, path: Path) -> list[tuple[int, int]]:
    heads = data["important_heads"] if "important_heads" in data else data["params"]["important_heads"]
    if not isinstance(heads, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
        for pair in heads
    ):
        raise HeadScoreFileError(f"{path}: important_heads must be a list of [layer, head] integer pairs.")
    return [tuple(pair) for pair in heads]


def ranked_list(
    heads: list[tuple[int, int]], path: Path, digest: str, name: str, geometry: HeadGeometry | None
) -> HeadScores:
    """A ranked head list as :class:`HeadScores`: its grid is the model's, or the smallest that holds the list."""
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
    return HeadScores(means=means, num_samples=0, path=str(path), sha256=digest, format=name, ranked=tuple(heads))
