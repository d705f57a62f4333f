"""GSM8K gold answers as one-line continuations ending "The answer is N.", on hand-built and all packaged answers."""

from __future__ import annotations

import pytest

from rh_tasks.gsm8k import solutions
from rh_tasks.gsm8k.task import PACKAGED_TEST
from rh_tasks.shared.task_data import TASK_DATA

NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return TASK_DATA.read_jsonl(PACKAGED_TEST)


def test_gold_solution_drops_annotations_and_joins_steps():
    assert solutions.gold_solution(NATALIA) == (
        "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May."
        " The answer is 72."
    )


def test_gold_solution_adds_no_punctuation_and_drops_empty_steps():
    answer = "  He sprints 3*3=<<3*3=9>>9 times \n\n   \nSo he runs 9*60=<<9*60=540>>540 meters\n#### 540 \n"
    assert solutions.gold_solution(answer) == "He sprints 3*3=9 times So he runs 9*60=540 meters The answer is 540."


def test_answer_without_steps_is_the_answer_alone():
    assert solutions.gold_solution("#### 7") == "The answer is 7."


def test_final_and_direct_answer_keep_the_answer_as_written():
    assert solutions.final_answer(NATALIA) == "72"
    assert solutions.direct_answer(NATALIA) == "The answer is 72."
    assert solutions.final_answer("500*.25=<<500*.25=125>>125 blocks\n####  2,125 ") == "2,125"
    assert solutions.direct_answer("It is -10 degrees.\n#### -10") == "The answer is -10."


@pytest.mark.parametrize(
    "answer",
    [
        "Natalia sold 48+24 = 72 clips.",  # no final line
        "Natalia sold 48+24 = 72 clips. #### 72",  # "####" not at the start of a line
        "Natalia sold 72 clips.\n####  \n",  # no final answer
        "Natalia sold 72 clips.\n#### 72\nThen more text.",  # the final line is not the last
    ],
)
def test_answer_without_final_line_is_rejected(answer):
    for convert in (solutions.gold_solution, solutions.final_answer, solutions.direct_answer):
        with pytest.raises(ValueError, match="#### N"):
            convert(answer)


def test_split_answer():
    assert solutions.split_answer("So 6. The answer is 6.") == ("So 6. The answer is", " 6.")
    assert solutions.split_answer("The answer is 1,450,000.") == ("The answer is", " 1,450,000.")
    # the last "The answer is" is the one that ends the continuation
    assert solutions.split_answer("The answer is 5. The answer is 6.5.") == ("The answer is 5. The answer is", " 6.5.")


@pytest.mark.parametrize(
    "continuation",
    ["So 6.", "The answer is 6", "The answer is 6. ", "The answer is .", "The answer is6.", "the answer is 6."],
)
def test_split_answer_rejects_other_endings(continuation):
    with pytest.raises(ValueError, match="The answer is N."):
        solutions.split_answer(continuation)


def test_every_packaged_answer_converts(rows):
    assert len(rows) == 1319
    for row in rows:
        final = solutions.final_answer(row["answer"])
        gold = solutions.gold_solution(row["answer"])
        assert final and final == final.strip()
        assert "<<" not in gold and ">>" not in gold and "####" not in gold and "\n" not in gold
        assert "  " not in gold and gold == gold.strip()
        assert gold.endswith(f" The answer is {final}.") or gold == f"The answer is {final}."
        head, tail = solutions.split_answer(gold)
        assert head + tail == gold and tail == f" {final}."
        assert solutions.split_answer(solutions.direct_answer(row["answer"])) == ("The answer is", tail)


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (
            0,
            "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day at the farmer’s market."
            " The answer is 18.",
        ),
        (
            1,
            "It takes 2/2=1 bolt of white fiber So the total amount of fabric is 2+1=3 bolts of fabric"
            " The answer is 3.",
        ),
        (
            2,
            "The cost of the house and repairs came out to 80,000+50,000=$130,000 He increased the value of the house"
            " by 80,000*1.5=120,000 So the new value of the house is 120,000+80,000=$200,000 So he made a profit of"
            " 200,000-130,000=$70,000 The answer is 70000.",
        ),
        (
            146,
            "The first set had 500 pieces, and the second set had 3 times as many as the first set, so the second set"
            " has 500*3=1500 pieces The third set had one-quarter of the 500 pieces, so that means it had 500*.25= 125"
            " pieces In total, that means Johnny picked up 500 + 1500+ 125= 2125 blocks The answer is 2,125.",
        ),
        (
            489,
            "-48 + 21 + (-3) = -30 -30/3 = -10 degrees The average highest temperature recorded in Southlandia,"
            " Northlandia, and Midlandia is -10 degrees Fahrenheit. The answer is -10.",
        ),
    ],
)
def test_packaged_answers_convert_exactly(rows, index, expected):
    assert solutions.gold_solution(rows[index]["answer"]) == expected
