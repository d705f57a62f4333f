"""The straightforward prompt construction: tokenize the whole haystack, cut it, insert, tokenize the result again.

The definition the fast builders (spliced from cached tokens) must reproduce, byte for byte: the identity tests
compare against it, and the prompt benchmark times it.
"""

from __future__ import annotations

import re

from rh_tasks.extractive_qa import distractor_context

SENTENCE_END = re.compile(r"[.!?][\"'”’)]*\s+")


def count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_ends(tokenizer, text: str) -> list[int]:
    return [end for _, end in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def reference_insert_needle(tokenizer, haystack: str, needle: str, context_tokens: int, depth: float):
    """(text, needle_start, num_tokens), tokenizing the haystack and the result whole."""
    needle = needle.strip()
    budget = context_tokens - count(tokenizer, needle) - 2
    text = haystack.strip()
    ends = token_ends(tokenizer, text)
    while len(ends) < budget:
        text = f"{text}\n\n{haystack.strip()}"
        ends = token_ends(tokenizer, text)
    text = text[: ends[budget - 1]]
    target = 0 if depth == 0 else ends[min(budget, round(budget * depth / 100)) - 1]
    boundaries = [m.end() for m in SENTENCE_END.finditer(text + " ", 0, target + 1) if m.end() <= target + 1]
    cut = min(boundaries[-1], len(text)) if boundaries else 0
    before, after = text[:cut].rstrip(), text[cut:].lstrip()
    start = len(before) + 1 if before else 0
    joined = " ".join(part for part in (before, needle, after) if part)
    return joined, start, count(tokenizer, joined)


def reference_passages(tokenizer, gold: str, distractors: list[str], num_tokens: int, depth: float) -> dict:
    """extractive_qa's context, counting every candidate context by tokenizing it whole."""
    gold, sep = gold.strip(), distractor_context.SEPARATOR
    sep_tokens, gold_tokens = count(tokenizer, sep), count(tokenizer, gold)
    budget, best, counts = num_tokens - gold_tokens, None, {}
    for _ in range(4):
        chosen, used = [], 0
        for text in distractors:
            if text not in counts:
                counts[text] = count(tokenizer, text)
            cost = counts[text] + sep_tokens
            if used + cost <= budget:
                chosen.append((text, cost))
                used += cost
                continue
            room = budget - used - sep_tokens
            if room >= distractor_context.MIN_PARTIAL_TOKENS:
                chosen.append((text[: token_ends(tokenizer, text)[room - 1]].rstrip(), room + sep_tokens))
            break
        starts = [0]
        for _, cost in chosen:
            starts.append(starts[-1] + cost)
        position = min(range(len(starts)), key=lambda i: (abs(starts[i] - starts[-1] * depth / 100), i))
        passages = [text for text, _ in chosen]
        before = sep.join(passages[:position])
        text = sep.join([*passages[:position], gold, *passages[position:]])
        measured = count(tokenizer, text)
        if measured <= num_tokens and (best is None or measured > best["num_tokens"]):
            best = {
                "text": text,
                "gold_start": len(before) + len(sep) if before else 0,
                "gold_position": position,
                "num_passages": len(chosen) + 1,
                "depth_actual": 100 * starts[position] / starts[-1] if starts[-1] else float(depth),
                "num_tokens": measured,
            }
        if measured == num_tokens:
            break
        budget += num_tokens - measured
    return best
