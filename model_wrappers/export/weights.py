"""Masking under ``phase=all`` as edits to a model's weights, so that any engine serving the weights runs it.

The edits reproduce :func:`~model_wrappers.masking.hooks.mask_heads` exactly:

* ``uniform``: the masked heads' query outputs (weight rows, and bias entries where there is a bias) become 0,
  which is what the hook multiplies them by. A zero query stays zero through RoPE and a bias-free q-norm.
* ``zero``: the masked heads' input columns of the output projection become 0.
* ``mean``: those columns become 0 and the heads' mean output, projected, is added to the output projection's
  bias. Without a bias there is nowhere to put the constant, so that combination is refused.

Edits are described per tensor, by the parameter's name in ``model.state_dict()``, and applied to the stored
tensor in its own dtype: untouched entries stay bit-exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..masking.architectures import HeadGeometry, attention_sites, check_supported
from ..masking.hooks import MODES, validate_heads


class ExportRefusedError(ValueError):
    """This masking condition cannot be written into this model's weights; the message says what would be needed."""


@dataclass(frozen=True)
class TensorEdit:
    """Zero ``index`` along ``axis`` of one tensor, then add ``add`` (float64, broadcast to the tensor)."""

    axis: int | None = None
    index: torch.Tensor | None = None  # [n] long
    add: torch.Tensor | None = None

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        """The edited copy of ``tensor``, in its dtype."""
        edited = tensor.clone()
        if self.index is not None:
            edited.index_fill_(self.axis, self.index.to(edited.device), 0)
        if self.add is not None:
            edited = (edited.double() + self.add.to(edited.device)).to(tensor.dtype)
        return edited


def weight_edits(
    model: nn.Module,
    heads: Iterable[Sequence[int]],
    mode: str,
    means: dict[int, torch.Tensor] | None = None,
) -> dict[str, TensorEdit]:
    """``{state_dict name: edit}`` that bakes masking ``heads`` under ``mode`` (and ``phase=all``) into ``model``.

    Raises :class:`ExportRefusedError` when ``mode`` cannot be expressed in this architecture's weights.
    """
    if mode not in MODES:
        raise ExportRefusedError(f"Unknown mask mode {mode!r}; choose one of {', '.join(MODES)}.")
    kind = check_supported(model.config)
    geometry = HeadGeometry.from_config(model.config)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in validate_heads(heads, geometry):
        by_layer[layer].append(head)
    if mode == "mean" and by_layer and means is None:
        raise ValueError("mode='mean' needs the per-head mean outputs from head_output_means(model, ids).")
    names = {module: name for name, module in model.named_modules()}
    sites = attention_sites(model)
    edits = {}
    for layer, layer_heads in sorted(by_layer.items()):
        columns = torch.cat([torch.arange(h * geometry.head_dim, (h + 1) * geometry.head_dim) for h in layer_heads])
        site = sites[layer]
        if mode == "uniform":
            module, name = site.query, names[site.query]
            edits[f"{name}.weight"] = TensorEdit(axis=_out_axis(module), index=columns)
            if module.bias is not None:
                edits[f"{name}.bias"] = TensorEdit(axis=0, index=columns)
            continue
        module, name = site.out_proj, names[site.out_proj]
        edits[f"{name}.weight"] = TensorEdit(axis=1 - _out_axis(module), index=columns)
        if mode == "mean":
            if module.bias is None:
                raise ExportRefusedError(_no_bias_message(kind, name.rsplit(".", 1)[-1], model.config))
            edits[f"{name}.bias"] = TensorEdit(add=_mean_contribution(module, columns, means[layer]))
    return edits


def _out_axis(module: nn.Module) -> int:
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
    return 1 if hasattr(module, "nf") else 0


@torch.no_grad()
def _mean_contribution(module: nn.Module, columns: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """What the masked heads' mean outputs add to the projection's output: ``[out]`` float64."""
    weight = module.weight.detach().double().cpu()
    fill = means.reshape(-1).double().cpu()[columns]  # [n]
    if _out_axis(module):
        return fill @ weight[columns, :]
    return weight[:, columns] @ fill


def _no_bias_message(kind: str, out_name: str, config) -> str:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    switch = (
        " (its config's attention_bias=false; a checkpoint saved with attention_bias=true would have one)"
        if hasattr(text_config, "attention_bias")
        else ""
    )
    return (
        f"mode=mean cannot be exported for model_type {kind}: its {out_name} has no bias to hold the masked heads' "
        f"mean output{switch}. Export mode=zero or mode=uniform, or evaluate mode=mean with --model rh-masked."
    )
