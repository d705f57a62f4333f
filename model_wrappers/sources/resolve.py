"""Where a model's weights come from: the one reading of ``pretrained`` (and ``gguf_file``) that everyone uses.

``pretrained`` omitted means the embedded SmolLM2-135M-Instruct, ``gemma-3-270m`` the optional packaged
Gemma-3-270M, a folder plus ``gguf_file`` a local GGUF checkpoint (converted once into a safetensors cache), and
anything else a transformers checkpoint (hub id or folder). The wrapper, the task tokenizer and detection all
resolve a model through :func:`model_source`, so they always agree on which weights are meant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .gguf_cache import (
    EMBEDDED_GGUF_SHA256,
    EMBEDDED_NAME,
    GEMMA_GGUF_SHA256,
    GEMMA_NAME,
    MANIFEST_NAME,
    cached_gguf_dir,
    embedded_model_dir,
    gemma_model_dir,
)

SOURCE_KINDS = ("embedded", "gemma", "gguf", "checkpoint")


@dataclass(frozen=True)
class ModelSource:
    """A model as named by the user; nothing is loaded or converted until :meth:`loadable` is called."""

    kind: str  # one of SOURCE_KINDS
    pretrained: str | None = None
    gguf_file: str | None = None

    @property
    def name(self) -> str:
        """The name results record for this model."""
        return {"embedded": EMBEDDED_NAME, "gemma": GEMMA_NAME}.get(self.kind, str(self.pretrained))

    @property
    def known_sha256(self) -> str | None:
        """sha256 of the GGUF the packaged models are converted from (None for other kinds)."""
        return {"embedded": EMBEDDED_GGUF_SHA256, "gemma": GEMMA_GGUF_SHA256}.get(self.kind)

    def loadable(self) -> tuple[str, str | None]:
        """(path or hub id, gguf_file) that transformers can load; GGUF checkpoints resolve to their cache."""
        if self.kind == "embedded":
            return str(embedded_model_dir()), None
        if self.kind == "gemma":
            return str(gemma_model_dir()), None
        if self.kind == "gguf":
            return str(cached_gguf_dir(Path(self.pretrained, self.gguf_file))), None
        return str(self.pretrained), self.gguf_file


def model_source(pretrained: str | Path | None, gguf_file: str | None = None) -> ModelSource:
    """Classify a model name the way ``--model_args pretrained=...,gguf_file=...`` means it."""
    if pretrained is None:
        return ModelSource("embedded")
    if pretrained == GEMMA_NAME:
        return ModelSource("gemma", GEMMA_NAME)
    if gguf_file and Path(pretrained, gguf_file).is_file():
        return ModelSource("gguf", str(pretrained), gguf_file)
    return ModelSource("checkpoint", str(pretrained), gguf_file)


def cached_gguf_sha256(cache_dir: str | Path) -> str:
    """sha256 of the GGUF a safetensors cache folder was converted from, as its manifest records it."""
    return json.loads((Path(cache_dir) / MANIFEST_NAME).read_text())["gguf_sha256"]
