"""Long contexts made of whole distractor passages with one gold passage at a controlled depth.

Unlike a needle in a haystack, the evidence here is a full paragraph, so it is never split: the gold passage goes
in at the passage boundary closest to ``depth`` percent of the distractor tokens, and only the last distractor is
cut (at a token boundary) to reach the token budget. The depth actually realised is returned, as passages make
it coarser than the requested one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SEPARATOR = "\n\n"
MIN_PARTIAL_TOKENS = 8  # a shorter cut distractor would be a stub, so the budget is left slightly unfilled instead


@dataclass(frozen=True)
class PassageContext:
    text: str
    gold_start: int  # character offsets of the gold passage inside ``text``
    gold_end: int
    gold_position: int  # index of the gold passage among all passages
    num_passages: int
    depth_actual: float  # percent of the distractor tokens that precede the gold passage
    num_tokens: int  # tokens of ``text`` alone, without special tokens


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _truncate(tokenizer, text: str, n_tokens: int) -> str:
    ends = [end for _, end in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    return text[: ends[n_tokens - 1]].rstrip()


def _fill(tokenizer, distractors: Sequence[str], budget: int, sep_tokens: int, counts: dict) -> list[tuple[str, int]]:
    """Distractors in order, each with its token cost (separator included), the last one cut to fill ``budget``."""
    chosen, used = [], 0
    for text in distractors:
        if text not in counts:
            counts[text] = count_tokens(tokenizer, text)
        cost = counts[text] + sep_tokens
        if used + cost <= budget:
            chosen.append((text, cost))
            used += cost
            continue
        room = budget - used - sep_tokens
        if room >= MIN_PARTIAL_TOKENS:
            chosen.append((_truncate(tokenizer, text, room), room + sep_tokens))
        return chosen
    raise ValueError(f"The distractor passages hold fewer than {budget} tokens; supply more distractors.")


def _assemble(gold: str, chosen: list[tuple[str, int]], depth: float) -> tuple[str, int, int, float]:
    starts = [0]
    for _, cost in chosen:
        starts.append(starts[-1] + cost)
    total = starts[-1]
    target = total * depth / 100
    position = min(range(len(starts)), key=lambda i: (abs(starts[i] - target), i))
    passages = [text for text, _ in chosen]
    before = SEPARATOR.join(passages[:position])
    gold_start = len(before) + len(SEPARATOR) if before else 0
    text = SEPARATOR.join([*passages[:position], gold, *passages[position:]])
    depth_actual = 100 * starts[position] / total if total else float(depth)
    return text, gold_start, position, depth_actual


def build_context(tokenizer, gold: str, distractors: Sequence[str], num_tokens: int, depth: float) -> PassageContext:
    """About ``num_tokens`` tokens (never more) of passages, ``gold`` at ``depth`` percent (0 = first, 100 = last)."""
    if not 0 <= depth <= 100:
        raise ValueError(f"depth={depth} must lie between 0 and 100 (percent of the context).")
    gold = gold.strip()
    sep_tokens = count_tokens(tokenizer, SEPARATOR)
    gold_tokens = count_tokens(tokenizer, gold)
    if gold_tokens > num_tokens:
        raise ValueError(f"A context of {num_tokens} tokens cannot hold a gold passage of {gold_tokens} tokens.")
    counts: dict[str, int] = {}
    budget, best = num_tokens - gold_tokens, None
    for _ in range(4):  # joining can merge tokens across passage boundaries; correct the budget by what was measured
        chosen = _fill(tokenizer, distractors, budget, sep_tokens, counts)
        text, gold_start, position, depth_actual = _assemble(gold, chosen, depth)
        measured = count_tokens(tokenizer, text)
        if measured <= num_tokens and (best is None or measured > best.num_tokens):
            best = PassageContext(
                text, gold_start, gold_start + len(gold), position, len(chosen) + 1, depth_actual, measured
            )
        if measured == num_tokens:
            break
        budget += num_tokens - measured
    if best is None:
        raise ValueError(f"Could not fit the passages into {num_tokens} tokens.")
    return best
