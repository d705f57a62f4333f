"""Tokens of texts spliced from slices of long texts, each long text tokenized only once.

A long-context prompt is a few slices of a haystack (or of passages) glued with short literal text. Tokenizers
work locally: a token deep inside a slice does not change when the slice is cut out and glued to other text;
only tokens near a cut or a join can. So each long text is tokenized once, with character offsets, and cached
per tokenizer; a spliced text costs one tokenization of a short window around each join, taken with a few
tokens of context on both sides. A window's tokens are trusted only if they split at exactly the characters
where the cached tokens around them split, and the context tokens next to the window equal the cached ones;
otherwise the margins widen, and as a last resort the whole text is tokenized. The result therefore equals
tokenizing the spliced text directly.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MARGINS = (8, 32)  # tokens kept untrusted on each side of a cut, tried in turn before tokenizing everything
_TEXTS_PER_TOKENIZER = 8192
_WINDOWS_PER_TOKENIZER = 16384


@dataclass(frozen=True, eq=False)
class Tokenized:
    """A text with its tokens (no special tokens) and each token's character span."""

    text: str
    ids: np.ndarray  # [n] token ids
    starts: np.ndarray  # [n] first character of each token
    ends: np.ndarray  # [n] one past its last character
    clean: np.ndarray  # [n + 1] clean[i]: tokens before i end where tokens from i start (a cut there splits no char)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Piece:
    """Characters [start, end) of a tokenized text."""

    source: Tokenized
    start: int
    end: int


class _Cache:
    """Per-tokenizer memo of tokenized texts and of window tokenizations, least recently used dropped first."""

    def __init__(self) -> None:
        self.texts: OrderedDict[str, Tokenized] = OrderedDict()
        self.windows: OrderedDict[str, tuple] = OrderedDict()


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cache(tokenizer) -> _Cache:
    cache = _CACHES.get(tokenizer)
    if cache is None:
        cache = _CACHES[tokenizer] = _Cache()
    return cache


def _remember(memo: OrderedDict, key, value, limit: int):
    memo[key] = value
    if len(memo) > limit:
        memo.popitem(last=False)
    return value


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoding["input_ids"], encoding["offset_mapping"]


def tokenize(tokenizer, text: str) -> Tokenized:
    """``text``'s tokens and offsets, computed once per tokenizer and text."""
    cache = _cache(tokenizer)
    found = cache.texts.get(text)
    if found is not None:
        cache.texts.move_to_end(text)
        return found
    ids, offsets = _encode(tokenizer, text)
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = spans[:, 0].copy(), spans[:, 1].copy()
    clean = np.ones(len(ids) + 1, dtype=bool)
    if len(ids) > 1:
        clean[1:-1] = ends[:-1] <= starts[1:]
    tokenized = Tokenized(text, np.asarray(ids, dtype=np.int64), starts, ends, clean)
    return _remember(cache.texts, text, tokenized, _TEXTS_PER_TOKENIZER)


def count(tokenizer, text: str) -> int:
    """Number of tokens of ``text`` without special tokens, cached."""
    return len(tokenize(tokenizer, text))


def literal(tokenizer, text: str) -> Piece:
    """A short text as a piece of its own."""
    return Piece(tokenize(tokenizer, text), 0, len(text))


def _interior(piece: Piece, first: bool, last: bool, margin: int) -> tuple[int, int]:
    """Token range [lo, hi) of ``piece.source`` that keeps its tokens in any spliced text (may be empty)."""
    source = piece.source
    n, clean = len(source.ids), source.clean
    if piece.start == 0:
        lo = 0 if first else margin
    else:
        lo = int(source.starts.searchsorted(piece.start, side="left")) + margin
    while 0 < lo < n and not clean[lo]:
        lo += 1
    if piece.end == len(source.text):
        hi = n if last else n - margin
    else:
        hi = int(source.ends.searchsorted(piece.end, side="right")) - margin
    while 0 < hi < n and not clean[hi]:
        hi -= 1
    return lo, hi


def _window(tokenizer, left: str, middle: str, right: str, left_ids, right_ids):
    """Tokens of ``middle`` as they come out between ``left`` and ``right`` context, or None if out of sync.

    ``left_ids`` and ``right_ids`` are the cached tokens of the contexts, which the window must reproduce next to
    ``middle``: a tokenizer that looks across more than the context would disagree there first.
    """
    cache = _cache(tokenizer)
    key = f"{len(left)}:{len(middle)}:{left}{middle}{right}"
    if key in cache.windows:
        return cache.windows[key]
    ids, offsets = _encode(tokenizer, left + middle + right)
    a, b = len(left), len(left) + len(middle)
    inside_ids, inside_spans, before, after = [], [], [], []
    for token, (s, e) in zip(ids, offsets):
        if s < a < e or s < b < e:
            return _remember(cache.windows, key, None, _WINDOWS_PER_TOKENIZER)
        if e <= a and s < a:
            before.append(token)
        elif s >= b and e > b:
            after.append(token)
        else:
            inside_ids.append(token)
            inside_spans.append((s - a, e - a))
    keep_left, keep_right = min(2, len(left_ids)), min(2, len(right_ids))
    in_sync = (not left or before[len(before) - keep_left :] == list(left_ids[len(left_ids) - keep_left :])) and (
        not right or after[:keep_right] == list(right_ids[:keep_right])
    )
    result = (inside_ids, inside_spans) if in_sync else None
    return _remember(cache.windows, key, result, _WINDOWS_PER_TOKENIZER)


def _plan(tokenizer, pieces: Sequence[Piece], margin: int):
    """The spliced text as alternating runs: cached token ranges, and window tokenizations between them."""
    runs, offset, pending, left, left_ids = [], 0, [], "", ()
    for index, piece in enumerate(pieces):
        source = piece.source
        lo, hi = _interior(piece, index == 0, index == len(pieces) - 1, margin)
        if lo >= hi:
            pending.append(source.text[piece.start : piece.end])
            continue
        head = piece.start if lo == 0 and piece.start == 0 else int(source.starts[lo])
        tail = len(source.text) if hi == len(source) else int(source.ends[hi - 1])
        tail = min(tail, piece.end)
        pending.append(source.text[piece.start : head])
        context_end = int(source.ends[min(lo + margin, hi) - 1])
        middle = "".join(pending)
        if middle or left:
            window = _window(
                tokenizer, left, middle, source.text[head:context_end], left_ids, source.ids[lo : min(lo + margin, hi)]
            )
            if window is None:
                return None
            runs.append(("window", window, offset))
        offset += len(middle)
        runs.append(("cached", source, lo, hi, offset - head))
        offset += tail - head
        context_start = max(hi - margin, lo)
        left, left_ids = source.text[int(source.starts[context_start]) : tail], source.ids[context_start:hi]
        if context_start == 0 and lo == 0:
            left = source.text[piece.start : tail]
        pending = [source.text[tail : piece.end]]
    middle = "".join(pending)
    if middle:
        window = _window(tokenizer, left, middle, "", left_ids, ())
        if window is None:
            return None
        runs.append(("window", window, offset))
    return runs


def _spliced(tokenizer, pieces: Sequence[Piece]):
    for margin in MARGINS:
        runs = _plan(tokenizer, pieces, margin)
        if runs is not None:
            return runs
    text = "".join(p.source.text[p.start : p.end] for p in pieces)
    return [("window", _encode(tokenizer, text), 0)]


def splice_count(tokenizer, pieces: Sequence[Piece]) -> int:
    """Tokens of the concatenated pieces, as ``len(tokenizer(text, add_special_tokens=False).input_ids)``."""
    total = 0
    for run in _spliced(tokenizer, pieces):
        total += len(run[1][0]) if run[0] == "window" else run[3] - run[2]
    return total


def splice_encode(tokenizer, pieces: Sequence[Piece]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of the concatenated pieces, as the tokenizer gives them for the text."""
    ids, spans = [], []
    for run in _spliced(tokenizer, pieces):
        if run[0] == "window":
            (window_ids, window_spans), shift = run[1], run[2]
            ids.extend(window_ids)
            spans.extend((s + shift, e + shift) for s, e in window_spans)
        else:
            _, source, lo, hi, shift = run
            ids.extend(source.ids[lo:hi].tolist())
            spans.extend(zip((source.starts[lo:hi] + shift).tolist(), (source.ends[lo:hi] + shift).tolist()))
    return ids, spans
