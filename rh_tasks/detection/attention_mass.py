"""Attention-mass scores of a head, from a few attention rows: HeadKV's and a QRHead-style definition.

* ``retrieval_reasoning`` (HeadKV, Fu et al. 2025, arXiv 2410.19258; ``retrieval_calculate`` in
  ``Important_Head/retrieval_head_detection_r2.py`` of FYYFU/HeadKV): at each decode step take the k = n
  most-attended keys of the head's last row (n = the needle span's length in tokens) and add the attention
  those among them that lie in the span receive, divided by n. No token has to match the generated one. As in
  HeadKV's decode loop, which stops after as many steps as the answer has tokens, only the first n steps count.
* ``query_focus`` (after QRHead, Zhang et al. 2025, arXiv 2506.09944; ``score_docs_per_head_for_detection`` in
  ``src/qrretriever/attn_retriever.py`` of princeton-pli/QRHead): the attention from the question's tokens to
  each needle token, averaged over the question's tokens, minus the same with the null question "N/A" in the
  question's place; tokens whose calibrated value falls below mean - 2 std of the span are dropped, the rest
  summed.

The functions here take attention rows already computed, so they are tested without a model.
"""

from __future__ import annotations

import torch


def attention_logits(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``[H, R, K]`` unscaled dot products of some query rows with every key, per query head.

    ``query`` is ``[H, R, D]`` (one sequence's rows) and ``key`` ``[KV, K, D]``; each KV head serves
    ``H // KV`` consecutive query heads (GQA). One batched product per KV head reads the keys in place: a
    broadcast over the group would copy them, which costs more than the product on every decode step.
    """
    heads, rows, dim = query.shape
    kv_heads, keys = key.shape[0], key.shape[1]
    grouped = query.reshape(kv_heads, heads // kv_heads * rows, dim)  # [KV, G*R, D]
    return torch.bmm(grouped, key.transpose(1, 2)).reshape(heads, rows, keys)


def apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` ``[H, R, K]`` under ``mask`` ``[1 or H, R, K]``: boolean (True = may attend) or additive."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask.to(scores.dtype)


def attention_probs(logits: torch.Tensor, scale: float, mask: torch.Tensor | None) -> torch.Tensor:
    """``[H, R, K]`` float32 softmax attention from unscaled ``logits`` and the attention's logit ``scale``."""
    return torch.softmax(apply_mask(logits.float() * scale, mask), dim=-1)


def top_k_span_mass(probs: torch.Tensor, span: tuple[int, int], k: int) -> torch.Tensor:
    """``[H]``: the attention in ``span`` of the ``k`` most-attended keys, divided by ``k`` (one HeadKV step).

    ``probs`` is ``[H, K]`` (one row per head) and ``span`` indexes its keys; keys a sliding window evicted
    have no attention, so a window shorter than ``k`` ranks only the keys it holds.
    """
    values, index = probs.topk(min(k, probs.shape[-1]), dim=-1)  # [H, k]
    inside = (index >= span[0]) & (index < span[1])
    return (values * inside).sum(-1) / k


def query_focus(question: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """QRHead's calibrated score of one sample from the span's attention under the question and the null question.

    Args:
        question: ``[..., n]`` attention from the question's tokens to each of the n span tokens, averaged over
            the question's tokens.
        null: ``[..., n]`` the same under the null question.

    Returns:
        ``[...]``: the sum over span tokens of the calibrated attention, tokens below mean - 2 std (QRHead's
        outlier cut, with torch's unbiased std) left out. A one-token span has no spread, so nothing is cut.
    """
    calibrated = question - null  # [..., n]
    if calibrated.shape[-1] < 2:
        return calibrated.sum(-1)
    threshold = calibrated.mean(-1) - 2 * calibrated.std(-1)
    return calibrated.masked_fill(calibrated <= threshold[..., None], 0.0).sum(-1)
