"""Where the per-head query and output slices live in each supported architecture.

Masking hooks two public modules per layer instead of forking modeling code: the projection whose output
holds the queries (``[B, T, H*D]`` at some offset) and the output projection whose input is the
concatenated head outputs (``[B, T, H*D]``). Both are independent of the attention kernel.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn

# model_type -> (path to decoder layers, attention attribute, query projection, output projection)
_LAYOUTS: dict[str, tuple[str, str, str, str]] = {
    "llama": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "mistral": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "mixtral": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "qwen2": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "qwen3": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "gemma": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "gemma3_text": ("model.layers", "self_attn", "q_proj", "o_proj"),
    "phi3": ("model.layers", "self_attn", "qkv_proj", "o_proj"),
    "gpt2": ("transformer.h", "attn", "c_attn", "c_proj"),
}

SUPPORTED_MODEL_TYPES = tuple(sorted(_LAYOUTS))


class UnsupportedArchitectureError(ValueError):
    """The model's attention layout is unknown, so its heads cannot be masked safely."""


@dataclass(frozen=True)
class HeadGeometry:
    """Head counts of a model; heads are always *query* heads, ``kv_group(h)`` is the KV head they read."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def kv_group(self, head: int) -> int:
        return head // self.group_size

    @classmethod
    def from_config(cls, config) -> HeadGeometry:
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        num_heads = config.num_attention_heads
        # Gemma-3's head_dim is not hidden_size // num_heads, so trust the config when it says.
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
        return cls(
            num_layers=config.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
        )


@dataclass(frozen=True)
class AttentionSite:
    """The hook points of one layer's attention."""

    query: nn.Module  # output [B, T, width]; queries are the first H*D columns
    out_proj: nn.Module  # input [B, T, H*D], head h at columns h*D:(h+1)*D
    attention: nn.Module  # the attention module, called with the layer's attention_mask keyword


def check_supported(config) -> str:
    """The model type named by ``config``, or a clear error if its heads cannot be masked."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    kind = text_config.model_type
    if kind not in _LAYOUTS:
        raise UnsupportedArchitectureError(
            f"Head masking does not support model_type {kind!r}. Supported model types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    return kind


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """One :class:`AttentionSite` per decoder layer, or a clear error for an unknown architecture."""
    kind = check_supported(model.config)
    layers_path, attn_name, query_name, out_name = _LAYOUTS[kind]
    layers = model.get_submodule(layers_path)
    sites = []
    for layer in layers:
        attn = getattr(layer, attn_name)
        sites.append(AttentionSite(query=getattr(attn, query_name), out_proj=getattr(attn, out_name), attention=attn))
    return sites


def decoder(model: nn.Module) -> nn.Module:
    """The stack of decoder layers: its hooks mark where each forward pass begins and ends."""
    layers_path = _LAYOUTS[check_supported(model.config)][0]
    return model.get_submodule(layers_path.rsplit(".", 1)[0])


def cache_keyword(model: nn.Module) -> str:
    """The keyword under which this transformers release's ``forward`` takes the KV cache; releases rename it."""
    parameters = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    import transformers  # lazily: rh-eval heads reads score files through this module without transformers

    raise UnsupportedArchitectureError(
        f"transformers {transformers.__version__}: {type(model).__name__}.forward takes no KV cache argument "
        f"that rh-eval knows ({', '.join(parameters)}). Use the transformers release of constraints.txt."
    )
