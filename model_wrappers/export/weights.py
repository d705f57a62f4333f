"""Masking under ``phase=all`` as edits to a model's weights, so that any engine serving the weights runs it.

Each mode says what it writes (:meth:`~model_wrappers.masking.modes.MaskMode.weight_edits`), and the edits
reproduce :func:`~model_wrappers.masking.hooks.mask_heads` exactly:

* ``uniform``: the masked heads' query outputs (weight rows, and bias entries where there is a bias) become 0,
  which is what the hook multiplies them by. A zero query stays zero through RoPE and a bias-free q-norm.
* ``zero``: the masked heads' input columns of the output projection become 0.
* ``mean``: those columns become 0 and the heads' mean output, projected, is added to the output projection's
  bias. Without a bias there is nowhere to put the constant, so that combination is refused.

Edits are described per tensor, by the parameter's name in ``model.state_dict()``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from torch import nn

from ..masking.architectures import HeadGeometry, attention_sites, check_supported
from ..masking.hooks import validate_heads
from ..masking.modes import MaskMode, head_columns
from ..masking.weight_edits import TensorEdit


def weight_edits(model: nn.Module, heads: Iterable[Sequence[int]], mode: MaskMode) -> dict[str, TensorEdit]:
    """``{state_dict name: edit}`` that bakes masking ``heads`` under ``mode`` (and ``phase=all``) into ``model``.

    Raises :class:`~model_wrappers.masking.weight_edits.ExportRefusedError` when ``mode`` cannot be expressed in
    this architecture's weights.
    """
    check_supported(model.config)
    geometry = HeadGeometry.from_config(model.config)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in validate_heads(heads, geometry):
        by_layer[layer].append(head)
    names = {module: name for name, module in model.named_modules()}
    sites = attention_sites(model)
    edits = {}
    for layer, layer_heads in sorted(by_layer.items()):
        columns = head_columns(layer_heads, geometry.head_dim)
        edits.update(mode.weight_edits(sites[layer], layer, columns, names.__getitem__, model.config))
    return edits
