"""The report on teacher-forced GSM8K: token classes, chain of thought against direct answers, losses, refusals.

Every run is synthetic, in lm-eval's on-disk format, with token spans and NLLs written by hand, so that each
expected number below is arithmetic on these tables and never a call into the code under test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as sps
from report_runs import FAST, MODEL, assert_well_formed, sha, write_run, written

from rh_tasks.report import write_report
from rh_tasks.report.narrative import format_value
from rh_tasks.report.pairing import group_by_model, task_table
from rh_tasks.report.runs import ReportInputError, load_runs

COT, DIRECT = "gsm8k_cot_nll", "gsm8k_direct_nll"
INTERACTION = f"{COT} \u2212 {DIRECT}"
METRICS = ("nll_token", "nll_byte", "nll_answer")
Q, E, N, T = "question", "earlier_step", "new_number", "text"
TITLES = {Q: "number from the question", E: "number from an earlier step", N: "new number", T: "text"}

# (question, gold solution as tokens with the class each is given by hand). The tokens spell " " + solution: the
# task's delimiter and then the solution, as lm-eval scores a continuation.
QUESTIONS = [
    (
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        [(" Tom", T), (" has", T), (" 3", Q), (" +", T), (" 4", Q), (" =", T), (" 7", N), (" apples.", T)]
        + [(" The", T), (" answer", T), (" is", T), (" 7", E), (".", T)],
    ),
    (
        "A box holds 6 pens. How many pens are in 2 boxes?",
        [(" Each", T), (" box", T), (" holds", T), (" 6", Q), (" pens,", T), (" so", T), (" 2", Q), (" boxes", T)]
        + [(" hold", T), (" 6", Q), (" *", T), (" 2", Q), (" =", T), (" 12", N), (" pens.", T)]
        + [(" The", T), (" answer", T), (" is", T), (" 1", E), ("2", E), (".", T)],  # 12 split in two tokens
    ),
    (
        "Sara reads 5 pages a day for 3 days, then 10 more pages. How many pages does she read?",
        [(" She", T), (" reads", T), (" 5", Q), (" *", T), (" 3", Q), (" =", T), (" 15", N), (" pages.", T)]
        + [(" Then", T), (" 15", E), (" +", T), (" 10", Q), (" =", T), (" 25", N), (" pages.", T)]
        + [(" The", T), (" answer", T), (" is", T), (" 25", E), (".", T)],
    ),
    (
        "Ann has 9 marbles. She keeps all of them. How many marbles does she have?",  # no new or earlier number
        [(" Ann", T), (" still", T), (" has", T), (" 9", Q), (" marbles.", T)]
        + [(" The", T), (" answer", T), (" is", T), (" 9", Q), (".", T)],
    ),
]
ANSWER_TOKENS = [[" The", " answer", " is", *number, "."] for number in ([" 7"], [" 1", "2"], [" 25"], [" 9"])]
# The classes count by hand: question 3 has only numbers from the question.
COUNTS = {Q: 2 + 4 + 3 + 2, E: 1 + 2 + 2 + 0, N: 1 + 1 + 2 + 0, T: 9 + 14 + 13 + 8}
QUESTIONS_WITH = {Q: 4, E: 3, N: 3, T: 4}

NONE = {"heads_kind": "none"}
RETRIEVAL = {"heads_kind": "retrieval", "k": 2, "num_masked": 2, "heads": [[1, 0], [1, 1]]}
CONDITIONS = {"none": NONE, "retrieval": RETRIEVAL} | {
    f"random{seed}": {"heads_kind": "random", "k": 2, "seed": seed, "num_masked": 2, "heads": [[0, seed], [2, 2]]}
    for seed in range(3)
}
SEEDS = [f"random{seed}" for seed in range(3)]

Nll = Callable[[str, int, int, str], float]  # (condition, question, token position, class) -> NLL of the token

# Masking the retrieval heads raises the NLL of numbers copied from the question most and of text least; random
# heads raise every token a little. Questions differ, so that the tests have a spread to work with.
RETRIEVAL_RISE = {Q: 0.9, E: 0.6, N: 0.3, T: 0.05}
RANDOM_RISE = {Q: 0.04, E: 0.03, N: 0.02, T: 0.01}


def cot_nll(condition: str, question: int, position: int, token_class: str) -> float:
    base = 0.2 + 0.1 * ((7 * position + 3 * question) % 5)
    scale = 1 + 0.25 * question
    if condition == "retrieval":
        return base + RETRIEVAL_RISE[token_class] * scale
    if condition.startswith("random"):
        return base + RANDOM_RISE[token_class] * scale * (1 + 0.5 * int(condition[-1]))
    return base


def direct_nll(condition: str, question: int, position: int, token_class: str) -> float:
    rise = {"none": 0.0, "retrieval": 0.1, "random0": 0.01, "random1": 0.02, "random2": 0.03}[condition]
    return 0.5 + 0.05 * position + rise * (1 + 0.1 * question)


def solution(question: int) -> str:
    return "".join(token for token, _ in QUESTIONS[question][1])[1:]


def direct_answer(question: int) -> str:
    return "".join(ANSWER_TOKENS[question])[1:]


def teacher_forced(task: str, question: int, condition: str, nll: Nll) -> tuple[dict, dict]:
    """A sample row and its token record: two requests, the whole continuation and the same up to "The answer is"."""
    text = QUESTIONS[question][0]
    tokens = QUESTIONS[question][1] if task == COT else [(t, T) for t in ANSWER_TOKENS[question]]
    gold = solution(question) if task == COT else direct_answer(question)
    cut = gold.index("The answer is") + len("The answer is")
    doc = {
        "question": text,
        "answer": f"{gold} #### {gold.split()[-1].rstrip('.')}",
        "continuation": gold,
        "before_answer": gold[:cut],
        "record_token_logprobs": True,
    }
    context = f"Question: {text}\nAnswer:" + (" Let's think step by step." if task == COT else "")
    logprobs = [-nll(condition, question, i, c) for i, (_, c) in enumerate(tokens)]
    n_before = next(i for i in range(len(tokens)) if "".join(t for t, _ in tokens[: i + 1]) == " " + gold[:cut]) + 1
    requests = []
    for index, (continuation, count) in enumerate(((" " + gold, len(tokens)), (" " + gold[:cut], n_before))):
        pieces = [t for t, _ in tokens[:count]]
        requests.append(
            {
                "idx": index,
                "context_sha256": sha(context),
                "continuation_sha256": sha(continuation),
                "tokens": list(range(100, 100 + count)),
                "logprobs": logprobs[:count],
                "text": "".join(pieces),
                "ends": [len("".join(pieces[: i + 1])) for i in range(count)],
            }
        )
    whole, before = sum(logprobs), sum(logprobs[:n_before])
    metrics = {
        "nll_token": -whole / len(tokens),
        "nll_byte": -whole / len((" " + gold).encode()),
        "nll_answer": before - whole,
    }
    row = {
        "doc_id": question,
        "doc": doc,
        "target": doc["answer"].split()[-1],
        "arguments": {
            f"gen_args_{i}": {"arg_0": context, "arg_1": continuation}
            for i, continuation in enumerate((" " + gold, " " + gold[:cut]))
        },
        "resps": [[[str(whole), "False"]], [[str(before), "False"]]],
        "filtered_resps": [[str(whole), "False"], [str(before), "False"]],
        "filter": "none",
        "metrics": list(METRICS),
        "doc_hash": sha(json.dumps(doc, sort_keys=True)),
        "prompt_hash": sha(context),
        "target_hash": sha(doc["answer"].split()[-1]),
        **metrics,
    }
    return row, {str(question): requests}


def nll_runs(
    root: Path, cot: Nll = cot_nll, direct: Nll = direct_nll, *, plain_baseline: bool = False, model: str = MODEL
) -> list[Path]:
    """Both tasks under every condition, each task in a results file of its own as a suite writes them; the
    second file's record holds both tasks, as rh-masked's record grows over one process. A plain baseline is an
    ``hf`` run: no masking entry and no token record."""
    folders = []
    for condition, masking in CONDITIONS.items():
        plain = plain_baseline and condition == "none"
        record: dict[str, dict] = {}
        for task, nll, date in (
            (COT, cot, "2026-01-01T10-00-00.000001"),
            (DIRECT, direct, "2026-01-01T10-00-05.000001"),
        ):
            rows = []
            for question in range(len(QUESTIONS)):
                row, entries = teacher_forced(task, question, condition, nll)
                rows.append(row)
                record.setdefault(task, {}).update(entries)
            folder = write_run(
                root / condition, {task: rows}, masking=None if plain else masking, date=date, model=model
            )
            (path,) = folder.rglob(f"results_{date}.json")
            results = json.loads(path.read_text())
            results["higher_is_better"] = {task: dict.fromkeys(METRICS, False)}
            results["configs"][task]["metric_list"] = [
                {"metric": m, "aggregation": "mean", "higher_is_better": False} for m in METRICS
            ]
            if not plain:
                results["config"]["token_logprobs"] = json.loads(json.dumps(record))
            path.write_text(json.dumps(results, indent=2))
        folders.append(root / condition)
    return folders


def token_nlls(nll: Nll, condition: str, question: int, task: str = COT) -> list[float]:
    tokens = QUESTIONS[question][1] if task == COT else [(t, T) for t in ANSWER_TOKENS[question]]
    return [nll(condition, question, i, c) for i, (_, c) in enumerate(tokens)]


def per_question(condition: str) -> np.ndarray:
    """(CoT - direct) NLL per token, per question, from the tables above."""
    return np.array(
        [
            np.mean(token_nlls(cot_nll, condition, q)) - np.mean(token_nlls(direct_nll, condition, q, DIRECT))
            for q in range(len(QUESTIONS))
        ]
    )


def comparisons(report: dict, task: str) -> dict[str, dict]:
    """A task's primary-metric comparisons by condition label."""
    return {
        c["condition"]: c
        for c in report["models"][0]["comparisons"]
        if c["task"] == task and c["metric"] == "nll_token"
    }


def class_table(markdown: str) -> dict[str, list[str]]:
    """The chain-of-thought table of report.md, by token class title."""
    section = markdown.split("### Chain of thought: where masking hurts", 1)[1].split("\n### ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith(f"| {COT} |")]
    return {cells[1]: cells for cells in rows}


def no_report_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The report of the hand-written runs, written once: (run folders, files, report.json, report.md)."""
    root = tmp_path_factory.mktemp("cot")
    folders = nll_runs(root / "runs")
    files = write_report(folders, root / "out", **FAST)
    return folders, files, written(files), files.markdown.read_text()


def test_the_tables_spell_the_solutions_they_claim():
    """The hand-written tokens are GSM8K-style solutions ending "The answer is N.", so the fixtures mean what the
    other tests assume."""
    assert solution(1) == "Each box holds 6 pens, so 2 boxes hold 6 * 2 = 12 pens. The answer is 12."
    assert [direct_answer(q) for q in range(4)] == [f"The answer is {n}." for n in (7, 12, 25, 9)]
    counts = {c: sum(c == cls for _, tokens in QUESTIONS for _, cls in tokens) for c in TITLES}
    assert counts == COUNTS


def test_class_rows_count_tokens_and_average_their_change(reported):
    """Each class row counts its tokens and questions, and Δ retrieval is the mean change over the class's tokens
    (token-weighted, not a mean of per-question means)."""
    _, files, report, markdown = reported
    assert (files.markdown.parent / "token_classes.svg").read_text().lstrip().startswith("<svg")
    assert "![ΔNLL per token by token class](token_classes.svg)" in markdown
    html = files.html.read_text()
    assert_well_formed(html)
    assert "Chain of thought: where masking hurts" in html and "number from an earlier step" in html
    table = class_table(markdown)
    assert set(table) == set(TITLES.values()) | {"whole solution"}  # then the direct and interaction rows
    assert "| direct answer |" in markdown and "| chain of thought − direct |" in markdown
    for token_class, title in TITLES.items():
        picked = [
            (q, i) for q, (_, tokens) in enumerate(QUESTIONS) for i, (_, c) in enumerate(tokens) if c == token_class
        ]
        unmasked = np.mean([cot_nll("none", q, i, token_class) for q, i in picked])
        rise = np.mean(
            [cot_nll("retrieval", q, i, token_class) - cot_nll("none", q, i, token_class) for q, i in picked]
        )
        cells = table[title]
        assert (cells[2], cells[3]) == (str(COUNTS[token_class]), str(QUESTIONS_WITH[token_class]))
        assert cells[4] == format_value(unmasked, False)
        assert cells[5].split()[0] == format_value(rise, False, signed=True)
        found = comparisons(report, f"{COT}[{token_class}]")["retrieval@2"]
        assert found["delta"] == pytest.approx(rise, abs=1e-9)
        assert (found["n"], found["n_clusters"]) == (COUNTS[token_class], QUESTIONS_WITH[token_class])
    # Not a mean of per-question means: question 0 has one earlier-step token and question 1 two.
    per_question_means = np.mean([RETRIEVAL_RISE[E] * (1 + 0.25 * q) for q in (0, 1, 2)])
    assert comparisons(report, f"{COT}[{E}]")["retrieval@2"]["delta"] != pytest.approx(per_question_means)


def test_class_comparisons_are_exploratory(reported):
    _, _, report, _ = reported
    classed = [c for c in report["models"][0]["comparisons"] if c["task"].startswith(f"{COT}[")]
    assert {c["task"] for c in classed} == {f"{COT}[{c}]" for c in TITLES}
    assert classed and not any(c["in_family"] or c["p_holm"] is not None for c in classed)
    tasks = {t["task"]: t for t in report["models"][0]["tasks"]}
    assert not any(tasks[f"{COT}[{c}]"]["headline"] for c in TITLES)


def test_interaction_is_cot_minus_direct_per_question(reported):
    """The derived task holds, per question, the CoT NLL minus the direct one; its Δs and contrast pair them."""
    folders, _, report, _ = reported
    (model,) = group_by_model(load_runs(folders))
    table = task_table(model, INTERACTION)
    by_label = {c.label: c for c in model.conditions}
    names = {"none": "none", "retrieval": "retrieval@2"} | {s: f"random@2/seed={s[-1]}" for s in SEEDS}
    assert set(by_label) == set(names.values()), by_label
    for name, label in names.items():
        assert table.scores[by_label[label]]["nll_token"] == pytest.approx(per_question(name), abs=1e-12)
    random = np.mean([per_question(s) for s in SEEDS], axis=0)
    found = comparisons(report, INTERACTION)
    assert found["retrieval@2"]["delta"] == pytest.approx(np.mean(per_question("retrieval") - per_question("none")))
    assert found["random@2"]["delta"] == pytest.approx(np.mean(random - per_question("none")))
    contrast = found["retrieval@2 \u2212 random@2"]
    assert contrast["delta"] == pytest.approx(np.mean(per_question("retrieval") - random))
    assert contrast["n"] == len(QUESTIONS)
    for label in ("random@2", "retrieval@2 \u2212 random@2"):
        assert found[label]["in_family"] and found[label]["p_holm"] is not None
    assert found["retrieval@2"]["headline"] and not found["retrieval@2"]["in_family"]  # its contrast answers


def test_interaction_answers_in_the_corrected_family(reported):
    """It is a headline task with its own answer, worded for a loss, and its tests are among the Holm family."""
    _, _, report, markdown = reported
    tasks = {t["task"]: t for t in report["models"][0]["tasks"]}
    assert tasks[INTERACTION]["headline"] and not tasks[INTERACTION]["higher_is_better"]
    family = [c for c in report["models"][0]["comparisons"] if c["in_family"]]
    # the contrast and the pooled random control for each of the three headline tasks
    assert {(c["task"], c["condition"]) for c in family} == {
        (t, a) for t in (COT, DIRECT, INTERACTION) for a in ("random@2", "retrieval@2 \u2212 random@2")
    }
    assert report["settings"]["family_size"] == len(family) == 6
    said = next(line for line in markdown.splitlines() if line.startswith(f"- {INTERACTION}:"))
    assert "retrieval@2 \u2212 random@2" in said and "points" not in said
    assert "masking its retrieval heads raises nll_token (lower is better)" in said, said
    findings = [s for s in report["models"][0]["statements"] if s.startswith(f"{INTERACTION} \u00b7 ")]
    assert len(findings) == 3 and not any("points" in s for s in findings)


def test_a_loss_under_one_is_shown_in_nats_with_an_unclipped_interval(tmp_path):
    """NLLs that all lie in [0, 1] look like a score in [0, 1]; they must still be shown as they are, tested
    without the pseudo-counts of bounded scores, and their interval may pass 1."""
    effect = [0.88, -0.08, 0.88, -0.08]  # per question; the answer's own tokens rise at most 0.3

    def cot(condition, question, position, token_class):
        base = 0.1
        if condition == "retrieval":
            answer = position >= len(QUESTIONS[question][1]) - 3
            return base + (min(effect[question], 0.3) if answer else effect[question])
        return base + (0.01 * (1 + int(condition[-1])) if condition.startswith("random") else 0.0)

    files = write_report(nll_runs(tmp_path / "runs", cot), tmp_path / "out", **FAST)
    report, markdown = written(files), files.markdown.read_text()
    rows = [json.loads(line) for p in (tmp_path / "runs").rglob(f"samples_{COT}_*.jsonl") for line in p.open()]
    values = np.array([row[m] for row in rows for m in METRICS])
    assert np.all((values >= 0) & (values <= 1))
    change = np.array(
        [np.mean(token_nlls(cot, "retrieval", q)) - np.mean(token_nlls(cot, "none", q)) for q in range(4)]
    )
    half = sps.t.ppf(0.975, 3) * change.std(ddof=1) / 2  # t interval over 4 independent questions
    found = comparisons(report, COT)["retrieval@2"]
    assert found["delta"] == pytest.approx(change.mean())
    assert (found["ci_low"], found["ci_high"]) == pytest.approx((change.mean() - half, change.mean() + half))
    assert found["ci_high"] > 1
    shown = [format_value(found[k], False, signed=True) for k in ("delta", "ci_low", "ci_high")]
    assert f"| {shown[0]} | {shown[1]} | {shown[2]} |" in markdown
    assert format_value(change.mean(), True, signed=True) not in markdown  # no x100 points
    tasks = {t["task"]: t for t in report["models"][0]["tasks"]}
    assert not tasks[COT]["bounded"]


def test_a_retrieval_set_that_raises_the_loss_most_outranks_every_random_set(reported):
    """Damage raises a loss: the retrieval set, which raises the NLL more than each random set, beats them all."""
    _, _, report, _ = reported
    for task in (COT, f"{COT}[{Q}]"):
        rank = comparisons(report, task)["retrieval@2 \u2212 random@2"]["rank"]
        assert rank == {"beaten": 3, "sets": 3, "p_value": pytest.approx(1 / 4)}


def tamper(folders: list[Path], condition: str, change: Callable[[dict], None]) -> Path:
    """Apply ``change`` to the CoT record of one condition's CoT results file; that file's path."""
    (path,) = (folder for folder in folders if folder.name == condition)
    (results,) = path.rglob("results_2026-01-01T10-00-00.000001.json")
    data = json.loads(results.read_text())
    change(data["config"]["token_logprobs"][COT])
    results.write_text(json.dumps(data))
    return results


def _shift_logprob(record):
    record["1"][0]["logprobs"][3] -= 0.5


def _other_context(record):
    record["2"][1]["context_sha256"] = sha("Question: something else\nAnswer:")


def _misspelt(record):
    record["0"][0]["text"] = record["0"][0]["text"].replace("7", "8")


def _missing_document(record):
    del record["3"]


@pytest.mark.parametrize(
    "change, message",
    [
        (_shift_logprob, "does not match doc_id 1, request 0 .log-probabilities sum to"),
        (_other_context, "does not match doc_id 2, request 1 .context or continuation hash"),
        (_misspelt, "does not match doc_id 0, request 0 .decoded tokens spell"),
        (_missing_document, r"covers documents \{0, 1, 2\} but the samples ask for \{0, 1, 2, 3\}"),
    ],
    ids=["tampered log-probability", "context hash", "decoded text", "missing document"],
)
def test_a_record_that_does_not_belong_to_its_samples_is_refused(tmp_path, change, message):
    folders = nll_runs(tmp_path / "runs")
    results = tamper(folders, "retrieval", change)
    out = tmp_path / "out"
    with pytest.raises(ReportInputError, match=message) as refused:
        write_report(folders, out, **FAST)
    assert str(results) in str(refused.value) and COT in str(refused.value)
    assert no_report_written(out)


def test_a_plain_baseline_without_token_record_leaves_out_only_the_classes(tmp_path, caplog):
    """An ``hf`` baseline scores the tasks but records no tokens: the class rows go, the rest of the report (and
    the chain-of-thought section's whole-task rows) stays."""
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        files = write_report(nll_runs(tmp_path / "runs", plain_baseline=True), out, **FAST)
    report, markdown = written(files), files.markdown.read_text()
    assert any(f"{COT} has no token record under none" in r.getMessage() for r in caplog.records)
    section = markdown.split("### Chain of thought: where masking hurts", 1)[1].split("\n### ", 1)[0]
    assert "| whole solution |" in section and "| chain of thought − direct |" in section
    assert not any(f"| {title} |" in section for title in TITLES.values())
    tasks = {t["task"] for t in report["models"][0]["tasks"]}
    assert tasks == {COT, DIRECT, INTERACTION}
    for task in (COT, DIRECT, INTERACTION):
        assert any(line.startswith(f"- {task}:") for line in markdown.splitlines())
    baseline = comparisons(report, INTERACTION)["retrieval@2"]["baseline"]
    assert baseline == pytest.approx(np.mean(per_question("none")))


def test_design_check_counts_the_interaction_and_speaks_of_losses_without_points():
    """The plan builds both tasks, adds their interaction as a headline task of its own (as the report does),
    and sizes loss tasks without an effect in points."""
    from rh_tasks.suite import parse_suite
    from rh_tasks.suite.plan import TaskDesign, check_design, describe, task_designs

    config = parse_suite(
        {
            "tasks": [{"task": COT, "limit": 4}, {"task": DIRECT, "limit": 4}],
            "conditions": {"retrieval": [2], "random": {"k": [2], "seeds": [0, 1, 2]}},
            "apply_chat_template": False,
        }
    )
    designs = task_designs(config)
    assert [(d.task, d.items, d.clusters, d.loss) for d in designs] == [
        (COT, 4, 4, True),
        (DIRECT, 4, 4, True),
        (INTERACTION, 4, 4, True),
    ]
    plan = check_design(config, designs)
    # per task: pooled random@2 against none and the contrast; the report's family is the same
    assert plan.family_size == 6 and [c.tests for c in plan.checks] == [2, 2, 2]
    lines = dict(text.split(": ", 1) for _, text in describe(plan))
    for task in (COT, DIRECT, INTERACTION):
        assert "its 2 questions are tested with t" in lines[task] and "continuous loss (NLL)" in lines[task]
        assert "An effect of 20 points" not in lines[task]
    # a score beside them is still sized in points
    mixed = dict(
        text.split(": ", 1) for _, text in describe(check_design(config, [*designs, TaskDesign("niah", 18, 6, 1)]))
    )
    assert "An effect of 20 points needs about" in mixed["niah"]
    assert "An effect of 20 points" not in mixed[INTERACTION]


def test_models_without_long_context_tasks_are_ranked_by_chain_of_thought_against_direct_answers(tmp_path):
    """Across models, the interaction's contrast (nats per token, damage positive) ranks models that ran no
    long-context task; a model whose retrieval heads do not touch its chains of thought ranks second."""

    def untouched(condition: str, question: int, position: int, token_class: str) -> float:
        return cot_nll("none" if condition == "retrieval" else condition, question, position, token_class)

    folders = nll_runs(tmp_path / "a") + nll_runs(tmp_path / "b", cot=untouched, model="models/untouched")
    files = write_report(folders, tmp_path / "out", **FAST)
    report = written(files)
    rows = {row["model"]: row for row in report["cross_model"]}
    assert [row["model"] for row in sorted(report["cross_model"], key=lambda r: r["rank"])] == [
        MODEL,
        "models/untouched",
    ]
    for row in rows.values():
        assert row["dependence_basis"] == "chain of thought against direct answers"
        assert row["dependence"] == pytest.approx(row["tasks"][INTERACTION]["contrast"]["delta"])
    assert rows[MODEL]["dependence"] > 0 > rows["models/untouched"]["dependence"]
    assert "nats (chain of thought − direct)" in files.markdown.read_text()


def test_the_terminal_table_names_every_task_whole(reported):
    """Cut to fit, the interaction and chain-of-thought rows would both read 'gsm8k_cot_n…'."""
    from rh_tasks.suite.summary import table

    _, files, _, _ = reported
    model = files.report.models[0]
    for width in (100, 80):
        lines = table(model, width)
        assert all(len(line) <= width for line in lines), width
        for row in model.forest:
            assert any(line == row.task or line.startswith(row.task + " ") for line in lines), (width, row.task)
    alone = lines.index(INTERACTION)  # at 80 columns the interaction's name no longer fits beside its values
    assert lines[alone + 1].startswith("\u00b7 nll_token") and len(lines[alone + 1].split()) > 3
