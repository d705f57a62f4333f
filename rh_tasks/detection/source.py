"""The model named by ``--model_args`` (lm-eval's syntax), its head geometry, and an identity for its weights.

Score files are only meaningful for the weights they were detected on, so the sidecar records a digest of the
weights (GGUF or local files) or the hub revision, not just a name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from model_wrappers.files import sha256_file
from model_wrappers.masking.architectures import HeadGeometry, check_supported
from model_wrappers.sources.resolve import model_source

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def parse_model_args(text: str | None) -> dict:
    """``pretrained=...,gguf_file=...`` into a dict; empty for the embedded model."""
    if not text:
        return {}
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


def model_identity(model_args: dict) -> dict:
    """Name plus weights sha256 (local files) or revision (hub ids) of the model ``model_args`` names."""
    source = model_source(model_args.get("pretrained"), model_args.get("gguf_file"))
    if source.known_sha256:
        return {"model": source.name, "weights_sha256": source.known_sha256}
    path = Path(source.pretrained)
    if source.kind == "gguf":
        return {
            "model": f"{source.pretrained}/{source.gguf_file}",
            "weights_sha256": sha256_file(path / source.gguf_file),
        }
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        digest = hashlib.sha256("".join(f"{p.name}:{sha256_file(p)}\n" for p in files).encode()).hexdigest()
        return {"model": source.pretrained, "weights_sha256": digest, "weight_files": [p.name for p in files]}
    return {"model": source.pretrained, "revision": model_args.get("revision", "main")}


def _load_kwargs(model_args: dict) -> tuple[str, dict]:
    path, gguf_file = model_source(model_args.get("pretrained"), model_args.get("gguf_file")).loadable()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    for key in ("revision", "trust_remote_code"):
        if key in model_args:
            kwargs[key] = model_args[key]
    return path, kwargs


def load_geometry(model_args: dict) -> HeadGeometry:
    """Head counts from the model's config alone (no weights)."""
    from transformers import AutoConfig

    path, kwargs = _load_kwargs(model_args)
    config = AutoConfig.from_pretrained(path, **kwargs)
    check_supported(config)
    return HeadGeometry.from_config(config)


def load_model(model_args: dict, device: str, dtype: str):
    """(model, tokenizer) in eval mode, with SDPA attention for the prefill."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, kwargs = _load_kwargs(model_args)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype) if dtype != "auto" else "auto", attn_implementation="sdpa", **kwargs
    )
    check_supported(model.config)
    return model.to(device).eval(), tokenizer
