"""Tensor edits: how a mode writes its masking into a model's weights, for engines that cannot run hooks.

Each :class:`~.modes.MaskMode` says which edits reproduce it under ``phase=all`` (see
:meth:`~.modes.MaskMode.weight_edits`); :mod:`model_wrappers.export` applies them to a checkpoint. Edits are
applied to the stored tensor in its own dtype, so untouched entries stay bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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


def out_axis(module: nn.Module) -> int:
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
    return 1 if hasattr(module, "nf") else 0


@torch.no_grad()
def projected(module: nn.Module, columns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """What ``values`` at input ``columns`` add to the projection's output: ``[out]`` float64."""
    weight = module.weight.detach().double().cpu()
    fill = values.reshape(-1).double().cpu()[columns]  # [n]
    if out_axis(module):
        return fill @ weight[columns, :]
    return weight[:, columns] @ fill


def no_bias_message(out_name: str, config) -> str:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    switch = (
        " (its config's attention_bias=false; a checkpoint saved with attention_bias=true would have one)"
        if hasattr(text_config, "attention_bias")
        else ""
    )
    return (
        f"mode=mean cannot be exported for model_type {text_config.model_type}: its {out_name} has no bias to hold the "
        f"masked heads' mean output{switch}. Export mode=zero or mode=uniform, or evaluate mode=mean with "
        "--model rh-masked."
    )
