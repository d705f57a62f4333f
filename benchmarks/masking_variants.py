"""The lm-eval models the masking benchmarks time side by side, all on one already-loaded model.

Sharing one set of weights is what makes their ratios fair: the wrappers differ only in what rh-masked adds.
"""

from __future__ import annotations

import random

from lm_eval.models.huggingface import HFLM

from model_wrappers import HeadGeometry
from model_wrappers.lm.rh_masked import RHMaskedLM


def random_heads(model, k: int, seed: int = 0) -> list[list[int]]:
    """``k`` (layer, head) pairs drawn with ``seed`` from every query head of ``model``, sorted."""
    geometry = HeadGeometry.from_config(model.config)
    grid = [[layer, head] for layer in range(geometry.num_layers) for head in range(geometry.num_heads)]
    return sorted(random.Random(seed).sample(grid, k))


def wrappers(model, tokenizer, heads: list[list[int]], *, decode: bool = False) -> dict[str, HFLM]:
    """lm-eval's ``hf``, ``rh-masked heads=none`` and ``rh-masked`` masking ``heads`` (uniform, every position);
    with ``decode``, also the paper's decode phase on the same heads."""
    shared = {"pretrained": model, "tokenizer": tokenizer, "batch_size": 1}
    variants = {
        "hf": HFLM(**shared),
        "heads=none": RHMaskedLM(**shared, heads="none"),
        f"K={len(heads)}": RHMaskedLM(**shared, heads=heads),
    }
    if decode:
        variants[f"K={len(heads)} decode"] = RHMaskedLM(**shared, heads=heads, phase="decode")
    return variants
