"""Copy-paste retrieval scores from arg-max attention positions (Wu et al. 2024, arXiv 2404.15574, §2).

At each decode step a head *copies* when its most-attended position lies in the needle span and holds the
token the model just generated. A head's sample score is:

* ``set`` (the paper's definition, the default): |g_h ∩ k| / |k|, with k the set of distinct tokens of the
  answer and g_h the set of tokens the head copied. Each distinct answer token counts once, wherever the head
  copied it from, so an answer that repeats a token ("by the river ... the tram") scores 1 for a head that
  copies all of it, and the score is at most 1.
* ``multiset`` (what the reference code computes): every copy event counts, divided by the answer's length in
  tokens, so a head that copies the same token twice scores 2/n and the score can exceed 1.

This module is pure tensor arithmetic, so it is tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFINITIONS = ("set", "multiset")
SET_COUNTING = "distinct answer tokens"


@dataclass(frozen=True)
class CopyScores:
    """Both definitions of one sample's score, ``[num_layers, num_heads]`` each."""

    set: torch.Tensor
    multiset: torch.Tensor

    def get(self, definition: str) -> torch.Tensor:
        if definition not in DEFINITIONS:
            raise ValueError(f"Unknown score definition {definition!r}; choose one of {', '.join(DEFINITIONS)}.")
        return getattr(self, definition)


def copy_scores(
    positions: torch.Tensor, generated: torch.Tensor, prompt_ids: torch.Tensor, span: tuple[int, int]
) -> CopyScores:
    """Score every head of one sample.

    Args:
        positions: ``[steps, num_layers, num_heads]`` arg-max attention position of each head at each decode
            step, as an index into the sequence (prompt followed by the generated tokens).
        generated: ``[steps]`` the token produced at each step (step ``s``'s query row predicted it).
        prompt_ids: ``[prompt_len]`` the prompt tokens.
        span: ``[start, end)`` token positions of the needle (its answer part) in the prompt.
    """
    start, end = span
    length = end - start
    if length < 1:
        raise ValueError(f"The needle span {span} is empty; cannot score copies from it.")
    if positions.ndim != 3 or positions.shape[0] != generated.shape[0]:
        raise ValueError(f"positions {tuple(positions.shape)} must be [steps, layers, heads] with one step per token.")
    steps, layers, heads = positions.shape
    if steps == 0:
        zeros = torch.zeros(layers, heads)
        return CopyScores(set=zeros, multiset=zeros.clone())

    in_span = (positions >= start) & (positions < end)  # [steps, L, H]
    offset = (positions - start).clamp(0, length - 1)  # [steps, L, H] index into the needle
    needle = prompt_ids[start:end].to(generated.device)  # [n]
    copied = in_span & (needle[offset] == generated[:, None, None])  # [steps, L, H]

    multiset = copied.sum(0).float() / length  # [L, H]
    distinct, token_of_position = torch.unique(needle, return_inverse=True)  # [u], [n]
    token = token_of_position[offset]  # [steps, L, H] distinct-token index of each attended needle position
    counts = torch.zeros(layers, heads, distinct.numel())  # [L, H, u] copies of each distinct answer token
    counts.scatter_add_(2, token.permute(1, 2, 0).long(), copied.permute(1, 2, 0).float())
    unique = (counts > 0).sum(-1).float() / distinct.numel()  # [L, H]
    return CopyScores(set=unique, multiset=multiset)
