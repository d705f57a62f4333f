"""Long contexts made of whole distractor passages with one gold passage at a controlled depth.

Unlike a needle in a haystack, the evidence here is a full paragraph, so it is never split: the gold passage goes
in at the passage boundary closest to ``depth`` percent of the distractor tokens, and only the last distractor is
cut (at a token boundary) to reach the token budget. The depth actually realised is returned, as passages make
it coarser than the requested one.

Each passage is tokenized once per tokenizer and cached, so a context is counted from the passages' cached
tokens plus a short window around each join, not by tokenizing the whole context again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rh_tasks.shared import token_splice

SEPARATOR = "\n\n"
MIN_PARTIAL_TOKENS = 8  # a shorter cut distractor would be a stub, so the budget is left slightly unfilled instead


@dataclass(frozen=True)
class PassageContext:
    text: str
    gold_start: int  # character offset of the gold passage inside ``text``
    gold_position: int  # index of the gold passage among all passages
    num_passages: int
    depth_actual: float  # percent of the distractor tokens that precede the gold passage
    num_tokens: int  # tokens of ``text`` alone, without special tokens
    pieces: tuple[token_splice.Piece, ...] = field(default=(), repr=False, compare=False)  # ``text``, spliced


def _fill(tokenizer, distractors: Sequence[str], budget: int, sep_tokens: int) -> list[tuple[token_splice.Piece, int]]:
    """Distractors in order, each with its token cost (separator included), the last one cut to fill ``budget``."""
    chosen, used = [], 0
    for text in distractors:
        tokens = token_splice.tokenize(tokenizer, text)
        cost = len(tokens) + sep_tokens
        if used + cost <= budget:
            chosen.append((token_splice.Piece(tokens, 0, len(text)), cost))
            used += cost
            continue
        room = budget - used - sep_tokens
        if room >= MIN_PARTIAL_TOKENS:
            end = len(text[: int(tokens.ends[room - 1])].rstrip())
            chosen.append((token_splice.Piece(tokens, 0, end), room + sep_tokens))
        return chosen
    raise ValueError(f"The distractor passages hold fewer than {budget} tokens; supply more distractors.")


def _assemble(tokenizer, gold: token_splice.Piece, chosen: list[tuple[token_splice.Piece, int]], depth: float):
    """The passages with ``gold`` inserted, as pieces; the gold passage's index and realised depth."""
    starts = [0]
    for _, cost in chosen:
        starts.append(starts[-1] + cost)
    total = starts[-1]
    target = total * depth / 100
    position = min(range(len(starts)), key=lambda i: (abs(starts[i] - target), i))
    passages = [piece for piece, _ in chosen]
    passages.insert(position, gold)
    separator = token_splice.literal(tokenizer, SEPARATOR)
    pieces = [passages[0]]
    for passage in passages[1:]:
        pieces += [separator, passage]
    depth_actual = 100 * starts[position] / total if total else float(depth)
    return pieces, position, depth_actual


def build_context(tokenizer, gold: str, distractors: Sequence[str], num_tokens: int, depth: float) -> PassageContext:
    """About ``num_tokens`` tokens (never more) of passages, ``gold`` at ``depth`` percent (0 = first, 100 = last)."""
    if not 0 <= depth <= 100:
        raise ValueError(f"depth={depth} must lie between 0 and 100 (percent of the context).")
    gold = gold.strip()
    sep_tokens = token_splice.count(tokenizer, SEPARATOR)
    gold_piece = token_splice.literal(tokenizer, gold)
    gold_tokens = len(gold_piece.source)
    if gold_tokens > num_tokens:
        raise ValueError(f"A context of {num_tokens} tokens cannot hold a gold passage of {gold_tokens} tokens.")
    budget, best = num_tokens - gold_tokens, None
    for _ in range(4):  # joining can merge tokens across passage boundaries; correct the budget by what was measured
        chosen = _fill(tokenizer, distractors, budget, sep_tokens)
        pieces, position, depth_actual = _assemble(tokenizer, gold_piece, chosen, depth)
        measured = token_splice.splice_count(tokenizer, pieces)
        if measured <= num_tokens and (best is None or measured > best.num_tokens):
            text = "".join(piece.source.text[piece.start : piece.end] for piece in pieces)
            gold_start = sum(piece.end - piece.start for piece in pieces[: 2 * position])
            best = PassageContext(
                text,
                gold_start,
                position,
                len(chosen) + 1,
                depth_actual,
                measured,
                tuple(pieces),
            )
        if measured == num_tokens:
            break
        budget += num_tokens - measured
    if best is None:
        raise ValueError(f"Could not fit the passages into {num_tokens} tokens.")
    return best
