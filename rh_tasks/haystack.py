"""Needle-in-a-haystack contexts built gkamradt-style, measured in the evaluated model's tokens.

The haystack is trimmed to a token budget, the needle goes in at ``depth`` percent of the context, moved back
to the preceding sentence boundary so it never splits a sentence. Texts shorter than the budget are repeated,
as gkamradt and RULER do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"[.!?][\"'”’)]*\s+")


@dataclass(frozen=True)
class NeedleContext:
    text: str
    needle_start: int  # character offsets of the needle inside ``text``
    needle_end: int
    num_tokens: int  # tokens of ``text`` alone, without special tokens


def _token_ends(tokenizer, text: str) -> list[int]:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [end for _, end in encoding["offset_mapping"]]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def insert_needle(tokenizer, haystack: str, needle: str, context_tokens: int, depth: float) -> NeedleContext:
    """A context of about ``context_tokens`` tokens with ``needle`` at ``depth`` percent (0 = start, 100 = end)."""
    if not 0 <= depth <= 100:
        raise ValueError(f"depth={depth} must lie between 0 and 100 (percent of the context).")
    needle = needle.strip()
    budget = context_tokens - _count(tokenizer, needle) - 2  # two separating spaces
    if budget < 1:
        raise ValueError(f"A context of {context_tokens} tokens cannot hold the needle {needle!r}.")

    text = haystack.strip()
    ends = _token_ends(tokenizer, text)
    while len(ends) < budget:  # repeat a short haystack, at paragraph boundaries
        text = f"{text}\n\n{haystack.strip()}"
        ends = _token_ends(tokenizer, text)
    text = text[: ends[budget - 1]]

    target = 0 if depth == 0 else ends[min(budget, round(budget * depth / 100)) - 1]
    # The trimmed text usually ends mid-sentence, so depth 100 too means "after the last complete sentence".
    boundaries = [m.end() for m in _SENTENCE_END.finditer(text + " ", 0, target + 1) if m.end() <= target + 1]
    cut = min(boundaries[-1], len(text)) if boundaries else 0
    before, after = text[:cut].rstrip(), text[cut:].lstrip()
    start = len(before) + 1 if before else 0
    joined = " ".join(part for part in (before, needle, after) if part)
    return NeedleContext(
        text=joined, needle_start=start, needle_end=start + len(needle), num_tokens=_count(tokenizer, joined)
    )
