"""Which tokens of a GSM8K solution copy a number, and from where: to see where masking heads hurts a chain of thought.

Each token of a scored solution gets one class, by where the content of the number it belongs to could come from:

- ``question``: a token of a number whose value appears in the question;
- ``earlier_step``: a token of a number whose value is not in the question but appears earlier in the solution, in a
  number that ends before this one starts;
- ``new_number``: a token of a number whose value is in neither;
- ``text``: every other token.

A value in both the question and an earlier step is ``question``.

Numbers are found the same way in the question and in the solution:

- digits: a maximal run of digits, with thousands written ``1,000`` or ``12,345,678`` (a comma followed by exactly
  three digits, and no fourth, is a thousands separator; "1,2" is two numbers) and an optional decimal part
  ``3.5``. A number may also start at its decimal point, ``.25`` as in "500*.25", unless that point comes right
  after a digit or another point ("3.5.5" is 3.5 and 5). A point not followed by a digit is not part of a number:
  in "is 6." the number is "6".
- signs, ``$`` and ``%`` are not part of a number: "-3" is the number "3", "$5" and "5%" are the number "5".
- words: ``zero`` to ``twenty``, ``thirty``, ``forty``, ``fifty``, ``sixty``, ``seventy``, ``eighty``, ``ninety``,
  ``hundred``, ``thousand`` and ``half`` (0.5), in any case, as whole words only. Each word is its own number:
  "twenty-five" is 20 and 5, "two hundred" is 2 and 100. Nothing else is a number: not "twice", "dozen", "third",
  ordinals, plurals ("hundreds") or words inside others ("often", "someone"); "one" as a pronoun counts as 1.

Values are compared after normalisation: commas removed, leading zeros of the integer part and trailing zeros of
the decimal part dropped (and the point, if no decimal digit is left), so "10.00" = "10", "0.50" = ".5" = "0.5",
"007" = "7"; a word is its value ("five" = "5", "half" = "0.5").

Tokens are character spans ``[start, end)`` of the solution. A token takes the class of the number that any of its
characters belongs to, so all the tokens of "1", "2", "5" in a number 125 share its class, and " 12" with a leading
space is a token of 12. A token overlapping two numbers ("2x3" in one token) takes the first one's class. Every other
token, and any empty span (a token that decodes to nothing), is ``text``. A span outside the solution is an error.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import NamedTuple

CLASSES = ("question", "earlier_step", "new_number", "text")
TITLES = {
    "question": "number from the question",
    "earlier_step": "number from an earlier step",
    "new_number": "new number",
    "text": "text",
}

_ZERO_TO_TWENTY = (
    "zero one two three four five six seven eight nine ten"
    " eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
)
_TENS = "thirty forty fifty sixty seventy eighty ninety"
_WORD_VALUES = {word: str(value) for value, word in enumerate(_ZERO_TO_TWENTY.split())}
_WORD_VALUES |= {word: str(10 * tens) for tens, word in enumerate(_TENS.split(), start=3)}
_WORD_VALUES |= {"hundred": "100", "thousand": "1000", "half": "0.5"}

_NUMBER = re.compile(
    r"(?P<digits>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\d.])\.\d+)"
    rf"|\b(?P<word>{'|'.join(_WORD_VALUES)})\b",
    re.IGNORECASE,
)


class Number(NamedTuple):
    """A number's characters ``text[start:end]`` and its normalised value."""

    start: int
    end: int
    value: str


def _normalise(digits: str) -> str:
    whole, _, decimals = digits.replace(",", "").partition(".")
    whole, decimals = whole.lstrip("0") or "0", decimals.rstrip("0")
    return f"{whole}.{decimals}" if decimals else whole


def find_numbers(text: str) -> list[Number]:
    """Every number in the text, in order, as the module docstring defines them."""
    return [
        Number(
            match.start(),
            match.end(),
            _normalise(match["digits"]) if match["digits"] else _WORD_VALUES[match["word"].lower()],
        )
        for match in _NUMBER.finditer(text)
    ]


def _number_classes(question: str, solution: str) -> list[tuple[Number, str]]:
    in_question = {number.value for number in find_numbers(question)}
    seen: set[str] = set()
    classes = []
    for number in find_numbers(solution):
        if number.value in in_question:
            classes.append((number, "question"))
        elif number.value in seen:
            classes.append((number, "earlier_step"))
        else:
            classes.append((number, "new_number"))
        seen.add(number.value)
    return classes


def classify_tokens(question: str, solution: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    """The class (one of ``CLASSES``) of each token, given as its ``[start, end)`` span in ``solution``."""
    numbers = _number_classes(question, solution)
    # Numbers are disjoint and in order, so only the first one ending after a token starts can overlap it.
    ends = [number.end for number, _ in numbers]
    classes = []
    for start, end in spans:
        if not 0 <= start <= end <= len(solution):
            raise ValueError(f"token span ({start}, {end}) is not within the solution's {len(solution)} characters")
        i = bisect.bisect_right(ends, start)
        overlaps = start < end and i < len(numbers) and numbers[i][0].start < end
        classes.append(numbers[i][1] if overlaps else "text")
    return classes
