"""The head-score files of the field that rh-eval reads: one entry per format in :data:`FORMATS`.

Each project publishes its heads in its own layout. A file is recognised by what it holds, not by its name,
because the projects reuse ``.json`` for different layouts; so no two formats may recognise the same file.
A format is its entry here, its parser in :mod:`.parsers` and a sample file in the tests' data, which the tests
recognise and read for every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..masking.architectures import HeadGeometry
from . import parsers
from .parsers import ScoreFile
from .scores import HeadScoreFileError, HeadScores, UnknownFormatError


@dataclass(frozen=True)
class Format:
    """One format: what it is called, how a file in it is recognised and read, and a sample file in it."""

    name: str  # recorded as ``HeadScores.format``
    title: str  # the file's project and kind, as summaries name it
    layout: str  # what the file holds
    recognises: Callable[[ScoreFile], bool]  # from the content
    parse: Callable[[ScoreFile, HeadGeometry | None], HeadScores]
    sample: str  # a file of tests/data/head_score_formats/ in this format

    @property
    def description(self) -> str:
        return f"{self.title}: {self.layout}"


def _lists_by_key(data) -> bool:
    return isinstance(data, dict) and bool(data) and all(isinstance(v, list) for v in data.values())


def _names_important_heads(data) -> bool:
    """vLLM-Hook's config names ``important_heads`` at its top level or under ``params``."""
    if not isinstance(data, dict):
        return False
    params = data.get("params")
    return "important_heads" in data or (isinstance(params, dict) and "important_heads" in params)


def _is_per_layer_order(data) -> bool:
    """CompressKV's ``{"layer": [heads, best first]}``: JSON keyed by layer alone, which no format reads."""
    return _lists_by_key(data) and all(str(k).isdigit() for k in data)


def _is_qrhead_yaml(file: ScoreFile) -> bool:
    return not file.is_json and isinstance(file.data, dict) and "attn_head_set" in file.data


FORMATS = {
    fmt.name: fmt
    for fmt in (  # in the order the refusal lists them
        Format(
            name="retrieval_head",
            title="Retrieval_Head JSON (Wu et al., HeadKV, CompressKV scores, rh-eval detect)",
            layout='{"layer-head": [scores]}',
            recognises=lambda file: (
                file.is_json
                and _lists_by_key(file.data)
                and not _is_per_layer_order(file.data)
                and not _names_important_heads(file.data)
            ),
            parse=parsers.retrieval_head_json,
            sample="synthetic_retrieval_head.json",
        ),
        Format(
            name="qrhead_scores",
            title="QRHead detection output",
            layout='[["layer-head", score], ...]',
            recognises=lambda file: (
                file.is_json
                and isinstance(file.data, list)
                and bool(file.data)
                and all(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in file.data)
            ),
            parse=parsers.qrhead_scores,
            sample="synthetic_qrhead_detection.json",
        ),
        Format(
            name="qrhead_yaml",
            title="QRHead head set",
            layout='YAML with attn_head_set: "layer-head,layer-head,..." (ranked, no scores)',
            recognises=_is_qrhead_yaml,
            parse=parsers.qrhead_head_set,
            sample="Llama-3.2-1B-Instruct_qr_head_NQ.yaml",
        ),
        Format(
            name="vllm_hook",
            title="IBM vLLM-Hook model config",
            layout="important_heads: [[layer, head], ...] (no scores)",
            recognises=lambda file: file.is_json and _names_important_heads(file.data),
            parse=parsers.vllm_hook_heads,
            sample="attention_tracker_Qwen2-1.5B-Instruct.json",
        ),
        Format(
            name="kv_gates",
            title="DuoAttention full_attention_heads.tsv or RLKV adapter_weights.tsv",
            layout="layers x KV heads, tab-separated",
            recognises=lambda file: (
                not file.is_json
                and not _is_qrhead_yaml(file)  # a YAML head set may hold a tab
                and ("\t" in file.text or file.path.suffix == ".tsv")  # one KV head per layer has no tab
            ),
            parse=parsers.kv_gates,
            sample="duo-attention_Meta-Llama-3.1-8B-Instruct_full_attention_heads.tsv",
        ),
    )
}


def accepted_formats() -> str:
    return "Accepted formats:\n" + "\n".join(f"  - {fmt.description}" for fmt in FORMATS.values())


def recognise(file: ScoreFile) -> Format:
    """The format that recognises ``file``, or a refusal that says what the file is instead."""
    for fmt in FORMATS.values():
        if fmt.recognises(file):
            return fmt
    path, data = file.path, file.data
    if not file.is_json:
        reason = f"not valid JSON ({file.json_error})" if path.suffix == ".json" else "in no format rh-eval reads"
        raise UnknownFormatError(f"{path} is {reason}.")
    if _is_per_layer_order(data):
        raise HeadScoreFileError(
            f'{path} looks like CompressKV\'s per-layer head order ({{"layer": [heads, best first]}}). It '
            "ranks the heads within each layer only, so it names no model-wide top K to mask; use the "
            'score file it was made from (..._SRH.json, {"layer-head": [scores]}) instead.'
        )
    if not data:
        raise UnknownFormatError(
            f'{path} holds no head scores; expected a non-empty {{"layer-head": [scores]}} object.'
        )
    raise UnknownFormatError(f"{path} holds JSON in no layout rh-eval reads.")


def read_head_score_file(raw: bytes, path: Path, geometry: HeadGeometry | None) -> HeadScores:
    """Recognise the format of ``raw`` and read it; lists and KV gates are laid out on ``geometry`` when given."""
    try:
        file = ScoreFile.read(raw, path)
        fmt = recognise(file)
        return replace(fmt.parse(file, geometry), format=fmt.name)
    except UnknownFormatError as err:
        err.args = (f"{err}\n{accepted_formats()}",)
        raise
