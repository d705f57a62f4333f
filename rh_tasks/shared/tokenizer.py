"""The tokenizer and context limit of the model a task will run on, resolved from lm-eval metadata.

Synthetic long-context tasks (``niah``, ``extractive_qa``) measure lengths in the evaluated model's own tokens,
so their builders need its tokenizer. lm-eval merges ``--model_args`` into task metadata, which is where
``pretrained``, ``tokenizer`` and ``gguf_file`` come from; with none of them, the embedded model is meant, and
``pretrained=gemma-3-270m`` names the optional packaged Gemma-3-270M.
"""

from __future__ import annotations

from functools import lru_cache

from model_wrappers.sources.resolve import model_source


def _loadable(metadata: dict) -> tuple[str, str | None]:
    return model_source(metadata.get("pretrained"), metadata.get("gguf_file")).loadable()


@lru_cache(maxsize=4)
def _load_tokenizer(source: str, gguf_file: str | None, revision: str | None, trust_remote_code: bool):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if revision:
        kwargs["revision"] = revision
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)


def resolve_tokenizer(**metadata):
    """Tokenizer of the evaluated model: ``tokenizer`` if given, else that of ``pretrained``, else the embedded one."""
    if metadata.get("tokenizer"):
        source, gguf_file = str(metadata["tokenizer"]), None
    else:
        source, gguf_file = _loadable(metadata)
    return _load_tokenizer(source, gguf_file, metadata.get("revision"), bool(metadata.get("trust_remote_code")))


@lru_cache(maxsize=4)
def _config_limit(source: str, gguf_file: str | None, trust_remote_code: bool) -> int | None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        source, trust_remote_code=trust_remote_code, **({"gguf_file": gguf_file} if gguf_file else {})
    )
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "seq_length"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    return None


def context_limit(**metadata) -> int | None:
    """Longest input in tokens the evaluation will accept: ``max_length`` if the user set it, else the model's."""
    if metadata.get("max_length"):
        return int(metadata["max_length"])
    source, gguf_file = _loadable(metadata)
    return _config_limit(source, gguf_file, bool(metadata.get("trust_remote_code")))
