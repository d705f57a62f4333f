"""Attention to a few sink keys and a sliding window of recent keys, in O(T * (W + S)) time and memory.

Queries are cut into chunks of ``C`` consecutive positions. The keys a chunk may read are its ``C + W - 1``
most recent positions (a band, one strided view of the padded keys) and the ``S`` sinks, so one SDPA call over
``[chunks, C, S + C + W - 1]`` scores every chunk at once and nothing ``T x T`` is ever built. Chunks are batched
into blocks of a bounded number of queries, so memory per call does not grow with the sequence either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_QUERIES = 4096  # queries per SDPA call: bounds the memory of one call whatever the sequence length


def chunk_size(window: int) -> int:
    """Queries per chunk: the band of ``C + W - 1`` keys costs at most twice the window, and chunks stay wide."""
    return max(64, window)


def banded_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kv_of_head: torch.Tensor,
    *,
    first_key: int,
    window: int | torch.Tensor,
    sinks: tuple[torch.Tensor, torch.Tensor] | None,
    allowed: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    """Each query reads the keys within ``window`` positions back (itself included) and the ``sinks``.

    Args:
        query: ``[B, H, Q, D]``, the queries of the heads to window, at key indices ``first_key ..``.
        key, value: ``[B, KV, K, D]``, the layer's keys and values (a KV cache, the new positions included).
        kv_of_head: ``[H]``, the KV head each query head reads (GQA).
        window: how many most recent keys a query reads, one for all rows or ``[B]``.
        sinks: key indices ``[B, S]`` of each row's sink tokens and whether each one exists ``[B, S]``.
        allowed: ``[B, 1, Q, K]`` bool, the model's own mask (causality, padding, its sliding window) for these
            queries, or None for causality alone.
        scale: the attention's logit scale (SDPA's default when None).

    Returns:
        ``[B, Q, H, D]``: what each query head reads, laid out as transformers' attention functions return it.
    """
    queries = query.shape[2]
    widest = int(window.max()) if isinstance(window, torch.Tensor) else window
    chunk = min(chunk_size(widest), queries)
    block = chunk * max(1, BLOCK_QUERIES // chunk)
    window = window.view(-1, 1, 1, 1).to(query.device) if isinstance(window, torch.Tensor) else window
    outputs = [
        _block(
            query[:, :, start : start + block],
            key,
            value,
            kv_of_head,
            first_key + start,
            window,
            widest,
            chunk,
            sinks,
            None if allowed is None else allowed[:, 0, start : start + block],
            scale,
        )  # fmt: skip
        for start in range(0, queries, block)
    ]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def _block(query, key, value, kv_of_head, first_key, window, widest, chunk, sinks, allowed, scale):
    """:func:`banded_attention` for one block of queries; ``allowed`` is ``[B, Q, K]`` here.

    Chunks go to SDPA as batch rows, ``[B * n, H, C, D]`` against ``[B * n, H, S + L, D]`` with one mask per chunk
    shared by the heads: the layout SDPA's fused CPU kernel takes (a 5-D batch falls back to a slower path).
    """
    rows, heads, queries, dim = query.shape
    keys, device = key.shape[2], query.device
    chunks = -(-queries // chunk)
    span = chunk + widest - 1  # keys in one chunk's band
    low, high = first_key - widest + 1, first_key + chunks * chunk  # band keys of the whole block: [low, high)
    starts = torch.arange(chunks, device=device)[:, None] * chunk  # [n, 1]
    at_query = starts + torch.arange(chunk, device=device)  # [n, C] query index within the block
    at_key = first_key - widest + 1 + starts + torch.arange(span, device=device)  # [n, L] key index

    def band(states):  # [B, KV, K, D] -> [B, n, H, L, D]
        inside = states[:, :, max(low, 0) : min(high, keys)]
        padded = F.pad(inside, (0, 0, max(0, -low), max(0, high - keys)))
        return padded.unfold(2, span, chunk).permute(0, 2, 1, 4, 3)[:, :, kv_of_head]

    back = torch.arange(chunk, device=device)[:, None] - torch.arange(span, device=device) + widest - 1  # [C, L]
    mask = (back >= 0) & (back < window) & ((at_key >= 0) & (at_key < keys))[:, None, :]
    mask = mask if mask.dim() == 4 else mask[None]  # [B or 1, n, C, L]
    if allowed is not None:
        mask = mask & allowed[:, at_query.clamp(max=queries - 1)[:, :, None], at_key.clamp(0, keys - 1)[:, None, :]]
    keys_of, values_of = band(key), band(value)
    if sinks is not None:
        index, exists = sinks  # [B, S]
        count = index.shape[1]
        clamped = index.clamp(0, keys - 1)
        pick = clamped[:, None, :, None]

        def with_sinks(states, banded):  # [B, KV, K, D], [B, n, H, L, D] -> [B, n, H, S + L, D]
            where = pick.expand(states.shape[0], states.shape[1], -1, states.shape[3])
            picked = states.gather(2, where)[:, kv_of_head]  # [B, H, S, D]
            return torch.cat([picked[:, None].expand(-1, chunks, -1, -1, -1), banded], dim=3)

        distance = (first_key + at_query)[None, :, :, None] - index[:, None, None, :]  # [B, n, C, S]
        sink_mask = exists[:, None, None, :] & (distance >= window)  # closer sinks are in the band already
        if allowed is not None:
            rows_of = torch.arange(allowed.shape[0], device=device)[:, None, None]
            flat = at_query.clamp(max=queries - 1).reshape(1, -1, 1)
            sink_mask = sink_mask & allowed[rows_of, flat, clamped[:, None, :]].view(-1, chunks, chunk, count)
        keys_of, values_of = with_sinks(key, keys_of), with_sinks(value, values_of)
        mask = torch.cat([sink_mask, mask.expand(sink_mask.shape[0], -1, -1, -1)], dim=-1)
    readable = keys_of.shape[3]
    padded_query = F.pad(query, (0, 0, 0, chunks * chunk - queries)).view(rows, heads, chunks, chunk, dim)
    out = F.scaled_dot_product_attention(
        padded_query.transpose(1, 2).reshape(rows * chunks, heads, chunk, dim),
        keys_of.reshape(rows * chunks, heads, readable, dim),
        values_of.reshape(rows * chunks, heads, readable, -1),
        attn_mask=mask.expand(rows, -1, -1, -1).reshape(rows * chunks, 1, chunk, readable),
        scale=scale,
    )  # [B * n, H, C, D]
    return (
        out.view(rows, chunks, heads, chunk, -1).transpose(2, 3).reshape(rows, chunks * chunk, heads, -1)[:, :queries]
    )
