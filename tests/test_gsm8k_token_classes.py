"""Token classes of GSM8K solutions: each rule of the module docstring on a hand-built case, then packaged rows."""

from __future__ import annotations

import re

import pytest

from rh_tasks.gsm8k import token_classes as tc
from rh_tasks.gsm8k.solutions import gold_solution, split_answer
from rh_tasks.gsm8k.task import PACKAGED_TEST
from rh_tasks.shared.task_data import TASK_DATA

Q, E, N, T = tc.CLASSES


def _classify(question: str, *tokens: str) -> list[tuple[str, str]]:
    """(token, class) for a solution given as its tokens, so that each case reads as the tokenizer would split it."""
    spans, start = [], 0
    for token in tokens:
        spans.append((start, start + len(token)))
        start += len(token)
    return list(zip(tokens, tc.classify_tokens(question, "".join(tokens), spans)))


def _found(text: str) -> list[tuple[str, str]]:
    """(characters, value) of each number found in the text."""
    return [(text[number.start : number.end], number.value) for number in tc.find_numbers(text)]


def test_classes_and_titles():
    assert tc.CLASSES == ("question", "earlier_step", "new_number", "text")
    assert tuple(tc.TITLES) == tc.CLASSES and all(tc.TITLES.values())


def test_multi_token_number_shares_its_class():
    assert _classify("There are 125 apples.", "So", " 1", "2", "5", " apples") == [
        ("So", T),
        (" 1", Q),
        ("2", Q),
        ("5", Q),
        (" apples", T),
    ]
    assert _classify("There are 12 apples.", "So", " 1", "2", "5") == [("So", T), (" 1", N), ("2", N), ("5", N)]


def test_leading_space_belongs_to_the_number_and_a_lone_space_does_not():
    assert _classify("He has 12 pens.", "He", " has", " 12", " pens") == [
        ("He", T),
        (" has", T),
        (" 12", Q),
        (" pens", T),
    ]
    assert _classify("He has 12 pens.", "He has", " ", "12") == [("He has", T), (" ", T), ("12", Q)]


def test_number_words_and_digits_are_the_same_value():
    question = "She eats Three eggs and twenty-five seeds, half of them."
    assert _classify(question, "She ate ", "3", " and ", "25", " then ", "0.5") == [
        ("She ate ", T),
        ("3", Q),
        (" and ", T),
        ("25", N),  # "twenty-five" is 20 and 5
        (" then ", T),
        ("0.5", Q),  # "half"
    ]
    assert _classify("She has 5 eggs and 20 seeds.", "FIVE", " and ", "twenty", " and ", "twice") == [
        ("FIVE", Q),
        (" and ", T),
        ("twenty", Q),
        (" and ", T),
        ("twice", T),
    ]


def test_number_words_are_whole_words_from_the_list():
    values = [
        number.value for number in tc.find_numbers("one two ten eleven twenty thirty ninety hundred thousand half")
    ]
    assert values == ["1", "2", "10", "11", "20", "30", "90", "100", "1000", "0.5"]
    assert _found("Someone often went there; twice a dozen hundreds, the third one's") == [("one", "1")]
    assert _classify("Ten boxes.", "often", " ten") == [("often", T), (" ten", Q)]


def test_question_takes_precedence_over_an_earlier_step():
    assert _classify("Buy 4 pens.", "2", "*", "2", "=", "4", " and ", "4") == [
        ("2", N),
        ("*", T),
        ("2", E),
        ("=", T),
        ("4", Q),
        (" and ", T),
        ("4", Q),
    ]


def test_final_answer_computed_earlier_is_an_earlier_step():
    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    tokens = ("Natalia sold", " 48", "/", "2", " =", " 24", " clips. So", " 48", "+", "24", " =", " 72", ".")
    tokens += (" The answer is", " 72", ".")
    assert [name for _, name in _classify(question, *tokens)] == [T, Q, T, N, T, N, T, Q, T, E, T, N, T, T, E, T]


def test_decimals_and_commas_compare_by_value():
    assert [number.value for number in tc.find_numbers("10.00 0.50 .5 007 0 0.0 1,234,567.80 3.5")] == [
        "10",
        "0.5",
        "0.5",
        "7",
        "0",
        "0",
        "1234567.8",
        "3.5",
    ]
    assert _found("500*.25 and 3.5.5 and 3..5") == [
        ("500", "500"),
        (".25", "0.25"),
        ("3.5", "3.5"),
        ("5", "5"),
        ("3", "3"),
        ("5", "5"),
    ]
    question = "It costs 1,000 dollars and weighs 0.50 kg; 2 kg costs 10."
    assert _classify(question, "1000", " + ", ".5", " + ", "10.00", " + ", "1,", "000", " + ", "3.5") == [
        ("1000", Q),
        (" + ", T),
        (".5", Q),
        (" + ", T),
        ("10.00", Q),
        (" + ", T),
        ("1,", Q),
        ("000", Q),
        (" + ", T),
        ("3.5", N),
    ]


def test_thousands_need_groups_of_exactly_three_digits():
    assert _found("1,2 and 1,0000 and 12,345 and 1,234,5678") == [
        ("1", "1"),
        ("2", "2"),
        ("1", "1"),
        ("0000", "0"),
        ("12,345", "12345"),
        ("1,234", "1234"),
        ("5678", "5678"),
    ]


def test_dollar_percent_and_minus_are_not_part_of_the_number():
    assert _found("$5 and 150% and -3") == [("5", "5"), ("150", "150"), ("3", "3")]
    question = "A $5 toy rose by 150%."
    assert _classify(question, "It", " $", "5", " went", " up", " 150", "%", " to", " -", "3") == [
        ("It", T),
        (" $", T),
        ("5", Q),
        (" went", T),
        (" up", T),
        (" 150", Q),
        ("%", T),
        (" to", T),
        (" -", T),
        ("3", N),
    ]


def test_trailing_period_is_not_part_of_the_number():
    assert tc.find_numbers("The answer is 6.") == [tc.Number(14, 15, "6")]
    assert _found("The answer is 6.5.") == [("6.5", "6.5")]
    assert _classify("Six cats.", "The answer is", " 6", ".") == [("The answer is", T), (" 6", Q), (".", T)]


def test_token_over_two_numbers_takes_the_first_ones_class():
    assert _classify("Rooms of 3 by 5.", "2x3", " and ", "5x7") == [("2x3", N), (" and ", T), ("5x7", Q)]


def test_empty_spans_are_text():
    # the empty span sits inside the number "125"
    assert tc.classify_tokens("125 apples", "So 125", [(0, 2), (4, 4), (2, 6), (6, 6)]) == [T, T, Q, T]


@pytest.mark.parametrize("span", [(-1, 2), (3, 2), (0, 7)])
def test_spans_outside_the_solution_are_rejected(span):
    with pytest.raises(ValueError, match="not within the solution"):
        tc.classify_tokens("2 apples", "So 125", [span])


@pytest.fixture(scope="module")
def solved_rows() -> list[tuple[str, str]]:
    """(question, gold solution) of the first 200 packaged test rows."""
    rows = TASK_DATA.read_jsonl(PACKAGED_TEST)[:200]
    return [(row["question"], gold_solution(row["answer"])) for row in rows]


def _char_spans(solution: str) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(solution))]


def _whitespace_spans(solution: str) -> list[tuple[int, int]]:
    return [match.span() for match in re.finditer(r"\S+", solution)]


@pytest.mark.parametrize("tokenise", [_char_spans, _whitespace_spans])
def test_packaged_solutions_digits_are_never_text(solved_rows, tokenise):
    for question, solution in solved_rows:
        spans = tokenise(solution)
        classes = tc.classify_tokens(question, solution, spans)
        assert len(classes) == len(spans) and set(classes) <= set(tc.CLASSES)
        for (start, end), name in zip(spans, classes):
            if any(char.isdigit() for char in solution[start:end]):
                assert name != T, (solution, solution[start:end])
            if tokenise is _char_spans and solution[start] in " $%+-*/=":
                assert name == T, (solution, solution[start:end])


def test_packaged_final_answers_were_computed_before(solved_rows):
    # In these rows the final answer is always a question number or a result of the steps (once "2,125" = "2125").
    for question, solution in solved_rows:
        head, _ = split_answer(solution)
        spans = _char_spans(solution)
        classes = tc.classify_tokens(question, solution, spans)
        answer_digits = {
            name for (start, _), name in zip(spans, classes) if start >= len(head) and solution[start].isdigit()
        }
        assert answer_digits and answer_digits <= {Q, E}, solution
