"""GSM8K gold answers rewritten as continuations of lm-eval's 8-shot ``gsm8k_cot`` prompt.

A gold answer is a few reasoning lines with calculator annotations, ``<<48/2=24>>``, then a ``#### N`` line. The
prompt's exemplars are one line each and end "The answer is N.", so scoring the raw answer would score an unfamiliar
format: the annotations are dropped, the lines joined into one, and the ``####`` line becomes "The answer is N.".
"""

from __future__ import annotations

import re

ANSWER_PREFIX = "The answer is"

_ANNOTATION = re.compile(r"<<[^>]*>>")
# The "#### N" line must be the last line with text on it.
_FINAL_LINE = re.compile(r"^####(.*)\s*\Z", re.MULTILINE)
_ENDS_WITH_ANSWER = re.compile(rf"(.*{ANSWER_PREFIX})( \S+\.)", re.DOTALL)


def _split(answer: str) -> tuple[str, str]:
    """(the reasoning lines, the final answer) of a GSM8K gold answer."""
    match = _FINAL_LINE.search(answer)
    if match is None or not match.group(1).strip():
        raise ValueError(f"a GSM8K answer must end with a '#### N' line giving the final answer; got {answer!r}")
    return answer[: match.start()], match.group(1).strip()


def final_answer(answer: str) -> str:
    """The text after ``####``, stripped and otherwise as written (a few test answers keep commas: "2,125")."""
    return _split(answer)[1]


def direct_answer(answer: str) -> str:
    """The final answer alone, in the exemplars' closing words: "The answer is N."."""
    return f"{ANSWER_PREFIX} {final_answer(answer)}."


def gold_solution(answer: str) -> str:
    """The reasoning without calculator annotations, one step per line joined by a space, then "The answer is N.".

    Steps are joined as written: one that ends without punctuation ("... 3 bolts of fabric") gets none added.
    """
    reasoning, final = _split(answer)
    steps = [step.strip() for step in _ANNOTATION.sub("", reasoning).splitlines()]
    return " ".join([*filter(None, steps), f"{ANSWER_PREFIX} {final}."])


def split_answer(continuation: str) -> tuple[str, str]:
    """(everything up to and including the last "The answer is", the rest " N.") of a continuation ending so.

    The second part is the answer alone, so that its tokens can be scored apart from the reasoning before it.
    """
    match = _ENDS_WITH_ANSWER.fullmatch(continuation)
    if match is None:
        raise ValueError(f"the continuation must end with '{ANSWER_PREFIX} N.'; got {continuation[-80:]!r}")
    return match.group(1), match.group(2)
