"""Needle-in-a-haystack contexts built gkamradt-style, measured in the evaluated model's tokens.

The haystack is trimmed to a token budget, the needle goes in at ``depth`` percent of the context, moved back
to the preceding sentence boundary so it never splits a sentence. Texts shorter than the budget are repeated,
as gkamradt and RULER do.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rh_tasks.shared import token_splice
from rh_tasks.shared.task_data import TASK_DATA

HAYSTACKS = {"time_machine": "haystack/time_machine_ch01-08.txt.gz"}
# The question follows the context as in Retrieval_Head's NIAH prompt.
PROMPT = "<book>{context}</book>\nBased on the content of the book, Question: {question}\nAnswer:"
_SENTENCE_END = re.compile(r"[.!?][\"'”’)]*\s+")


@dataclass(frozen=True)
class NeedleContext:
    text: str
    needle_start: int  # character offset of the needle inside ``text``
    num_tokens: int  # tokens of ``text`` alone, without special tokens
    pieces: tuple[token_splice.Piece, ...] = field(default=(), repr=False, compare=False)  # ``text``, spliced


class _Haystack:
    """One haystack under one tokenizer: its repetitions, tokenized, and their sentence ends, each found once.

    Repetition ``n`` is the stripped haystack ``n`` times over, joined at paragraph breaks; a budget of ``b``
    tokens uses the first repetition holding at least ``b`` tokens.
    """

    def __init__(self, haystack: str) -> None:
        self.unit = haystack.strip()
        if not self.unit:
            raise ValueError("The haystack is empty; pass a text with some sentences in it.")
        self.copies: list[tuple[token_splice.Tokenized, np.ndarray, np.ndarray]] = []

    def covering(self, tokenizer, budget: int) -> tuple[token_splice.Tokenized, np.ndarray, np.ndarray]:
        """The shortest repetition of at least ``budget`` tokens, with its sentence-end match starts and ends."""
        for copy in self.copies:
            if len(copy[0]) >= budget:
                return copy
        while True:
            text = "\n\n".join([self.unit] * (len(self.copies) + 1))
            tokens = token_splice.tokenize(tokenizer, text)
            spans = np.array([m.span() for m in _SENTENCE_END.finditer(text)], dtype=np.int64).reshape(-1, 2)
            self.copies.append((tokens, spans[:, 0].copy(), spans[:, 1].copy()))
            if len(tokens) >= budget:
                return self.copies[-1]


_HAYSTACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _haystack(tokenizer, haystack: str) -> _Haystack:
    per_tokenizer = _HAYSTACKS.setdefault(tokenizer, {})
    found = per_tokenizer.get(haystack)
    if found is None:
        if len(per_tokenizer) >= 4:
            per_tokenizer.pop(next(iter(per_tokenizer)))
        found = per_tokenizer[haystack] = _Haystack(haystack)
    return found


def _last_sentence_end(text: str, match_starts: np.ndarray, match_ends: np.ndarray, target: int, size: int) -> int:
    """End of the last sentence end in ``(text[:size] + " ")[: target + 1]``, or 0 if there is none.

    The matches of the whole text ending two characters before the prefix's end are matches of the prefix too, so
    the regex only rescans from the last of them.
    """
    limit = min(target, size)
    extra = text[target] if target < size else " "
    anchor = int(np.searchsorted(match_ends, limit - 2, side="right")) - 1
    origin = int(match_starts[anchor]) if anchor >= 0 else 0
    last = 0
    for match in _SENTENCE_END.finditer(text[origin:limit] + extra):
        last = origin + match.end()
    return last


def insert_needle(tokenizer, haystack: str, needle: str, context_tokens: int, depth: float) -> NeedleContext:
    """A context of about ``context_tokens`` tokens with ``needle`` at ``depth`` percent (0 = start, 100 = end).

    The haystack is tokenized once per tokenizer; each context is then cut from the cached tokens, and only the
    joins around the needle and the cut end are tokenized again.
    """
    if not 0 <= depth <= 100:
        raise ValueError(f"depth={depth} must lie between 0 and 100 (percent of the context).")
    needle = needle.strip()
    budget = context_tokens - token_splice.count(tokenizer, needle) - 2  # two separating spaces
    if budget < 1:
        raise ValueError(f"A context of {context_tokens} tokens cannot hold the needle {needle!r}.")

    tokens, match_starts, match_ends = _haystack(tokenizer, haystack).covering(tokenizer, budget)
    text, ends = tokens.text, tokens.ends
    size = int(ends[budget - 1])  # the context is text[:size], cut after the budget-th token
    # A depth that rounds to no token indexes -1, the repetition's last token, as it always has: same prompts.
    target = 0 if depth == 0 else int(ends[min(budget, round(budget * depth / 100)) - 1])
    # The cut text usually ends mid-sentence, so depth 100 too means "after the last complete sentence".
    cut = min(_last_sentence_end(text, match_starts, match_ends, target, size), size)
    before_end, after_start = cut, cut
    while before_end > 0 and text[before_end - 1].isspace():
        before_end -= 1
    while after_start < size and text[after_start].isspace():
        after_start += 1

    has_before, has_after = before_end > 0, after_start < size
    pieces = [token_splice.Piece(tokens, 0, before_end)] if has_before else []
    if needle:
        glue = (" " if has_before else "") + needle + (" " if has_after else "")
    else:
        glue = " " if has_before and has_after else ""
    if glue:
        pieces.append(token_splice.literal(tokenizer, glue))
    if has_after:
        pieces.append(token_splice.Piece(tokens, after_start, size))
    joined = "".join(piece.source.text[piece.start : piece.end] for piece in pieces)
    start = before_end + 1 if has_before else 0
    return NeedleContext(
        text=joined,
        needle_start=start,
        num_tokens=token_splice.splice_count(tokenizer, pieces),
        pieces=tuple(pieces),
    )


def load_haystack(name_or_path: str) -> str:
    """A packaged haystack by name, or any UTF-8 text file (e.g. Paul Graham essays concatenated) by path."""
    if name_or_path in HAYSTACKS:
        return TASK_DATA.read_text(HAYSTACKS[name_or_path])
    path = Path(name_or_path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"haystack={name_or_path!r} is a folder without .txt files.")
        return "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ValueError(f"haystack={name_or_path!r} is neither a packaged haystack ({', '.join(HAYSTACKS)}) nor a path.")
