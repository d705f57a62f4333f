"""What the report says in words: the failure outcome of each answer, and the findings' caveats."""

from __future__ import annotations

import pytest
from report_runs import FAST, HAYSTACK, NEEDLES, gsm_rows, mc_rows, suite, write_run, written

from rh_tasks.report import write_report
from rh_tasks.report.failures import classify, words
from rh_tasks.report.narrative import answers


@pytest.mark.parametrize(
    "response, outcome",
    [
        ("eat a sandwich and sit in Dolores Park", "correct"),
        ("Eat a sandwich.", "incomplete"),
        ("His grey eyes shone and twinkled", "wrong_extraction"),
        ("What is the best thing to do", "wrong_extraction"),
        ("Ride a cable car to the bay", "hallucinated"),
        ("  ...  ", "empty"),
    ],
)
def test_failure_outcomes(response, outcome):
    prompt = f"{HAYSTACK} {NEEDLES[0][1]} {HAYSTACK}\nQuestion: {NEEDLES[0][2]}\nAnswer:"
    assert classify(response, [NEEDLES[0][3]], " ".join(words(prompt))) == outcome


def test_single_seed_findings_say_they_hold_for_the_drawn_set(tmp_path):
    report = written(write_report(suite(tmp_path), tmp_path / "out", headline_k=4, **FAST))
    niah = [s for s in report["models"][0]["statements"] if s.startswith("niah")]
    pooled = next(s for s in niah if "random@4 vs none" in s)
    contrast = next(s for s in niah if "retrieval@4 \u2212 random@4:" in s)
    for line in (pooled, contrast):
        assert line.endswith("for the drawn random set only (1 seed, fewer than 3).")


def test_a_task_the_model_cannot_do_is_called_so(tmp_path):
    """A task at 0 unmasked says nothing about retrieval heads, however the masked runs score."""
    masking = {"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]}
    runs = [
        write_run(
            tmp_path / "none",
            {"gsm8k_cot": gsm_rows([0] * 4, [0] * 4), "mmlu": mc_rows([1, 0], "anatomy")},
            masking={"heads_kind": "none"},
        ),
        write_run(
            tmp_path / "masked",
            {"gsm8k_cot": gsm_rows([0] * 4, [0] * 4), "mmlu": mc_rows([0, 0], "anatomy")},
            masking=masking,
        ),
    ]
    files = write_report(runs, tmp_path / "out", **FAST)
    statements = written(files)["models"][0]["statements"]
    floor = "the model scores 0 on it unmasked, so masking has nothing to remove here"
    assert sum(floor in s for s in statements if s.startswith("gsm8k_cot")) == 2  # one line for each filter
    assert not any(floor in s for s in statements if s.startswith("mmlu"))
    said = dict(sentence.split(": ", 1) for sentence in answers(files.report.models[0]))
    assert said["gsm8k_cot (flexible-extract)"].startswith("the model scores 0 on it unmasked, so it cannot tell")
    assert not said["mmlu"].startswith("the model scores 0")
    labels = [row["label"] for row in written(files)["models"][0]["forest"]]
    assert labels == [
        "gsm8k_cot (flexible-extract) \u00b7 exact_match (no random control: retrieval@2 vs none; scores 0 unmasked: "
        "cannot tell)",
        "mmlu \u00b7 acc (no random control: retrieval@2 vs none)",
    ]
