"""How a masked head is taken out: one small class per mode, each saying where it hooks and what it writes.

Three modes (Wu et al. 2024, arXiv 2404.15574, use the first):

* :class:`Uniform`: the head's query is zeroed at the query projection's output, so every score is equal and
  the head attends uniformly over the positions it may see (its causal prefix, or its sliding window). Its
  output becomes the mean of the values. Zeroing the query before RoPE and before a bias-free q-norm keeps it
  zero, so this is exact under eager, SDPA and flash attention alike.
* :class:`Zero`: the head's output is zeroed before the output projection.
* :class:`Mean`: the head's output is replaced by its mean output over a reference text
  (see :func:`head_output_means`).

A mode writes into one row of a batch or into every row alike: ``per_row`` lists the masked query heads of one
layer, once for all rows or once per row. To add a mode, subclass :class:`MaskMode`, name it in
:data:`model_wrappers.condition.CHOICES`, and register it in :data:`MASK_MODES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ..condition import MODES, check_choice
from .architectures import AttentionSite, HeadGeometry, attention_sites
from .weight_edits import ExportRefusedError, TensorEdit, no_bias_message, out_axis, projected

PerRow = list[list[int]]  # masked query heads of one layer: one list for every row, or one list per row


class MaskMode:
    """Where a mode hooks, and what it writes there. Instances are bound to one model (see :meth:`bind`)."""

    name: ClassVar[str]

    def bind(self, model: nn.Module, reference_ids: Callable[[], torch.Tensor]) -> MaskMode:
        """This mode ready for ``model``; a mode that needs a reference pass (``mean``) runs it here, once."""
        return self

    def install(self, site: AttentionSite, layer: int, per_row: PerRow, geometry: HeadGeometry, gate):
        """Register this layer's hook; return its handle. ``gate.masked_from(layer, x)`` says where to start."""
        raise NotImplementedError

    def weight_edits(self, site: AttentionSite, layer: int, columns: torch.Tensor, name_of, config) -> dict:
        """``{parameter name: TensorEdit}`` that write this mode into one layer's weights, as under ``phase=all``.

        ``columns`` are the masked heads' columns; ``name_of(module)`` is a module's name in the model.
        """
        raise ExportRefusedError(f"mode={self.name} has no weight edit; evaluate it with --model rh-masked.")


class Uniform(MaskMode):
    name = "uniform"

    def install(self, site, layer, per_row, geometry, gate):
        keep = _keep(per_row, geometry.head_dim, _out_features(site.query))

        def hook(module, args, output):  # output: [B, T, width], queries first
            first = gate.masked_from(layer, output)
            if first == 0:
                return output * keep.get(output)
            output[:, first:] *= keep.get(output)  # the prompt before `first` stays bit-exact
            return output

        return site.query.register_forward_hook(hook)

    def weight_edits(self, site, layer, columns, name_of, config):
        """The heads' query rows (and bias entries) become the 0 the hook multiplies them by."""
        name = name_of(site.query)
        edits = {f"{name}.weight": TensorEdit(axis=out_axis(site.query), index=columns)}
        if site.query.bias is not None:
            edits[f"{name}.bias"] = TensorEdit(axis=0, index=columns)
        return edits


class Zero(MaskMode):
    name = "zero"

    def install(self, site, layer, per_row, geometry, gate):
        width = geometry.num_heads * geometry.head_dim
        keep, fill = _keep(per_row, geometry.head_dim, width), self._fill(layer, per_row, geometry.head_dim, width)

        def hook(module, args):  # args[0]: [B, T, H*D]
            x = args[0]
            first = gate.masked_from(layer, x)
            masked = x[:, first:] * keep.get(x)
            if fill is not None:
                masked = masked + fill.get(x)
            if first == 0:
                return (masked, *args[1:])
            x = x.clone()
            x[:, first:] = masked
            return (x, *args[1:])

        return site.out_proj.register_forward_pre_hook(hook)

    def _fill(self, layer: int, per_row: PerRow, head_dim: int, width: int) -> DeviceCache | None:
        """What to add where the heads were zeroed: nothing."""
        return None

    def weight_edits(self, site, layer, columns, name_of, config):
        """The heads' input columns of the output projection become 0."""
        return {f"{name_of(site.out_proj)}.weight": TensorEdit(axis=1 - out_axis(site.out_proj), index=columns)}


class Mean(Zero):
    """:class:`Zero`, plus each masked head's mean output at its columns."""

    name = "mean"

    def __init__(self, means: dict[int, torch.Tensor] | None = None):
        self.means = means

    def bind(self, model, reference_ids):
        return self if self.means is not None else Mean(head_output_means(model, reference_ids()))

    def _fill(self, layer, per_row, head_dim, width):
        if self.means is None:
            raise ValueError("Mean() masks nothing before bind(model, reference_ids) has computed its means.")
        flat = self.means[layer].reshape(-1).float().cpu()

        def build():
            fill = torch.zeros(len(per_row), 1, width)
            for row, heads in enumerate(per_row):
                columns = head_columns(heads, head_dim)
                fill[row, :, columns] = flat[columns]
            return fill[0, 0] if len(per_row) == 1 else fill

        return DeviceCache(build)

    def weight_edits(self, site, layer, columns, name_of, config):
        """:class:`Zero`'s edit, and the heads' projected mean output folded into the output projection's bias."""
        module, name = site.out_proj, name_of(site.out_proj)
        if module.bias is None:
            raise ExportRefusedError(no_bias_message(name.rsplit(".", 1)[-1], config))
        edits = super().weight_edits(site, layer, columns, name_of, config)
        edits[f"{name}.bias"] = TensorEdit(add=projected(module, columns, self.means[layer]))
        return edits


MASK_MODES: dict[str, type[MaskMode]] = {mode.name: mode for mode in (Uniform, Zero, Mean)}
if tuple(MASK_MODES) != MODES:
    raise ImportError(f"Masking modes {tuple(MASK_MODES)} do not match the condition's vocabulary {MODES}.")


def as_mode(mode: str | MaskMode, means: dict[int, torch.Tensor] | None = None) -> MaskMode:
    """A mode object from its name (``means`` for ``mean``), or the object itself."""
    if isinstance(mode, MaskMode):
        return mode
    check_choice("mode", mode)
    if mode == "mean" and means is None:
        raise ValueError("mode='mean' needs the per-head mean outputs: pass means=head_output_means(model, ids).")
    return Mean(means) if mode == "mean" else MASK_MODES[mode]()


def _out_features(module: nn.Module) -> int:
    return module.weight.shape[out_axis(module)]


def head_columns(heads: list[int], head_dim: int) -> torch.Tensor:
    """The columns of ``heads`` in a ``[..., num_heads * head_dim]`` activation."""
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads]) if heads else torch.arange(0)


def _keep(per_row: PerRow, head_dim: int, width: int) -> DeviceCache:
    """Ones except zeros at the masked heads' columns, ``[width]`` or ``[rows, 1, width]``.

    One multiply masks them and leaves every other column bit-exact.
    """

    def build():
        keep = torch.ones(len(per_row), 1, width)
        for row, heads in enumerate(per_row):
            keep[row, :, head_columns(heads, head_dim)] = 0.0
        return keep[0, 0] if len(per_row) == 1 else keep

    return DeviceCache(build)


class DeviceCache:
    """Builds a small constant once per (device, dtype): hooks stay allocation-free on the hot path."""

    def __init__(self, build):
        self.build = build
        self.cache = {}

    def get(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self.cache:
            self.cache[key] = self.build().to(device=like.device, dtype=like.dtype)
        return self.cache[key]


@torch.no_grad()
def head_output_means(model: nn.Module, input_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Mean output of every head over the tokens of ``input_ids`` ``[B, T]``: ``{layer: [num_heads, head_dim]}``.

    Used by ``mode="mean"`` (mean ablation), which keeps the head's average contribution and removes only its
    token-specific information.
    """
    geometry = HeadGeometry.from_config(model.config)
    sums: dict[int, torch.Tensor] = {}
    handles = []

    def recorder(layer):
        def hook(module, args):
            x = args[0].detach().float()  # [B, T, H*D]
            sums[layer] = x.reshape(-1, x.shape[-1]).mean(dim=0).reshape(geometry.num_heads, geometry.head_dim)

        return hook

    try:
        for layer, site in enumerate(attention_sites(model)):
            handles.append(site.out_proj.register_forward_pre_hook(recorder(layer)))
        # With weights offloaded by accelerate (device_map with "cpu"/"disk"), model.device is "meta" and
        # accelerate's own hooks move the inputs to where each module runs.
        model(input_ids if model.device.type == "meta" else input_ids.to(model.device))
    finally:
        for handle in handles:
            handle.remove()
    return {layer: mean.cpu() for layer, mean in sums.items()}
