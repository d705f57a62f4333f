"""Suite files: strict validation, one folder per condition, resumable runs, refusal to mix experiments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SUITE_BASE as BASE

from rh_tasks.plugin.command import main
from rh_tasks.plugin.registration import task_configs_dir
from rh_tasks.suite import (
    SuiteConfigError,
    SuiteStateError,
    differences,
    load_suite,
    parse_suite,
    run_suite,
    runner,
)
from rh_tasks.suite.identity import compare_samples


def test_shipped_suites_are_valid():
    files = sorted((task_configs_dir() / "suites").glob("*.yaml"))
    assert files, "task_configs/suites/ should ship example suites"
    for path in files:
        config = load_suite(path)
        assert config.conditions[0].name == "none"


def test_conditions_expand_from_k_and_seeds(suite):
    assert [c.name for c in suite.conditions] == ["none", "retrieval-k1", "random-k1-seed0", "random-k1-seed1"]


WINDOWS = {"window": [16, 32], "keep": ["none", "retrieval", "random"], "k": [1], "seeds": [0, 1]}


def test_windows_expand_into_windowed_conditions():
    config = parse_suite({**BASE, "conditions": {"windows": WINDOWS}, "masking": {"unit": "kv_group"}})
    assert [c.name for c in config.conditions] == [
        "none",
        *(
            f"window{w}-{kind}"
            for w in (16, 32)
            for kind in ("none", "retrieval-k1", "random-k1-seed0", "random-k1-seed1")
        ),
    ]
    assert {c.unit for c in config.conditions if c.k} == {"kv_group"} and config.conditions[1].sink == 4
    other = parse_suite({**BASE, "conditions": {"windows": {**WINDOWS, "sink": 0}}, "masking": {"unit": "kv_group"}})
    assert other.digest() != config.digest()


@pytest.mark.parametrize(
    "windows, message",
    [
        ({"keep": ["none"]}, r"windows.window must be a positive integer"),
        ({"window": [0]}, r"windows.window must be a positive integer"),
        ({"window": 8, "sink": -1}, r"windows.sink must be one integer >= 0"),
        ({"window": 8, "keep": ["strongest"]}, r"windows.keep must list some of none, retrieval, random"),
        ({"window": 8, "keep": ["retrieval"]}, r"windows.k must be a positive integer"),
        ({"window": 8, "k": [2]}, r"k is meaningless with keep: \[none\]"),
        ({"window": 8, "keep": ["retrieval"], "k": 2, "seeds": [0]}, "seeds and match apply only to keep: random"),
        ({"window": 8, "windw": 8}, r"Unknown key\(s\) \['windw'\]"),
    ],
)
def test_bad_windows_name_the_problem(windows, message):
    with pytest.raises(SuiteConfigError, match=message):
        parse_suite({**BASE, "conditions": {"windows": windows}})


def test_windows_and_masks_are_separate_suites():
    with pytest.raises(SuiteConfigError, match="Write two suites"):
        parse_suite({**BASE, "conditions": {"retrieval": [1], "windows": {"window": 8}}})
    with pytest.raises(SuiteConfigError, match="mode=zero is meaningless for windows"):
        parse_suite({**BASE, "conditions": {"windows": {"window": 8}}, "masking": {"mode": "zero"}})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"modle": {}}, r"Unknown key\(s\) \['modle'\]"),
        ({"tasks": []}, "non-empty list"),
        ({"tasks": [{"task": "niah", "limt": 3}]}, r"Unknown key\(s\) \['limt'\] in suite: tasks\[0\]"),
        ({"conditions": {"retrieval": [0]}}, "positive integer"),
        ({"conditions": {"random": {"k": [2], "seeds": "abc"}}}, "list of integers"),
        ({"conditions": {"random": {"k": [2], "match": "depth"}}}, "match='depth' is unknown"),
        ({"masking": {"mode": "noise"}}, "mode='noise' is unknown"),
        ({"masking": {"phase": "prefill"}}, "phase='prefill' is unknown"),
        ({"model": {"args": {"heads": "retrieval"}}}, "may not set"),
    ],
)
def test_bad_suite_files_name_the_problem(change, message):
    with pytest.raises(SuiteConfigError, match=message):
        parse_suite({**BASE, **change})


def test_run_resume_and_refusal(suite, monkeypatch):
    out = run_suite(suite, write_report=False)
    folders = sorted(p.name for p in (out / "conditions").iterdir())
    assert folders == ["none", "random-k1-seed0", "random-k1-seed1", "retrieval-k1"]
    retrieval = json.loads((out / "conditions" / "retrieval-k1" / "condition.json").read_text())
    assert retrieval["rh_masking"]["heads"] == [[1, 2]]
    random_heads = json.loads((out / "conditions" / "random-k1-seed0" / "condition.json").read_text())
    assert random_heads["rh_masking"]["heads"] != [[1, 2]]
    assert list((out / "conditions" / "none").rglob("samples_niah_*.jsonl"))

    # An interrupted condition (no condition.json) and a stray partial folder are redone; the rest is skipped.
    (out / "conditions" / "random-k1-seed1" / "condition.json").unlink()
    (out / "conditions" / ".partial-none").mkdir()
    ran = []
    original = runner._run_condition
    monkeypatch.setattr(
        runner, "_run_condition", lambda lm, c, cond, *rest: ran.append(cond.name) or original(lm, c, cond, *rest)
    )
    run_suite(suite, write_report=False)
    assert ran == ["random-k1-seed1"]

    changed = parse_suite({**BASE, "model": {"pretrained": suite.pretrained, "head_scores": suite.head_scores},
                           "output_dir": suite.output_dir, "masking": {"mode": "zero"}})  # fmt: skip
    with pytest.raises(SuiteStateError, match="different suite config"):
        run_suite(changed, write_report=False)
    assert json.loads((out / "suite.json").read_text())["config_hash"] == suite.digest()


def test_suite_command_writes_the_report(suite, tmp_path, caplog):
    path = tmp_path / "suite.yaml"
    data = {
        **BASE,
        "model": {"pretrained": suite.pretrained, "head_scores": suite.head_scores},
        "output_dir": suite.output_dir,
    }
    path.write_text(yaml.safe_dump(data))
    assert main(["suite", str(path)]) == 0
    assert "Design check: niah: 2 independent items" in caplog.text  # said before any condition ran
    report = json.loads((Path(suite.output_dir) / "report" / "report.json").read_text())
    assert report["models"], "the report should describe the suite's model"
    from rh_tasks.suite.plan import check_design, task_designs

    # the plan counts the family the report corrects over: the contrast and the random control against none
    assert report["settings"]["family_size"] == check_design(suite, task_designs(suite)).family_size == 2
    assert main(["suite", str(tmp_path / "missing.yaml")]) == 2
    assert "Cannot read suite file" in caplog.text


def test_a_windowed_suite_runs_and_reports_its_memory_axis(suite, tmp_path):
    path = tmp_path / "windows.yaml"
    data = {
        **BASE,
        "model": {"pretrained": suite.pretrained, "head_scores": suite.head_scores},
        "masking": {"phase": "decode", "unit": "kv_group"},
        "conditions": {"windows": {"window": [8, 16], "keep": ["none", "retrieval", "random"], "k": 1, "seeds": [0]}},
        "output_dir": str(tmp_path / "out"),
    }
    path.write_text(yaml.safe_dump(data))
    assert main(["suite", str(path), "--no-report"]) == 0
    conditions = tmp_path / "out" / "conditions"
    records = {p.parent.name: json.loads(p.read_text())["rh_masking"] for p in conditions.rglob("condition.json")}
    assert sorted(records) == sorted(
        ["none"] + [f"window{w}-{c}" for w in (8, 16) for c in ("none", "retrieval-k1", "random-k1-seed0")]
    )
    kept = records["window8-retrieval-k1"]
    assert kept["heads"] == [[1, 2], [1, 3]] and kept["kept_kv_groups"] == 1 and kept["kv_groups"] == 4
    assert all(r["audit"]["clean"] for name, r in records.items() if name != "none")
    assert main(["report", str(conditions), "-o", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    memory = report["models"][0]["memory"]
    assert {p["keep"] for p in memory} == {"none", "retrieval", "random", "contrast"}
    # per window: the contrast, the random control and keeping no head, against none; as the plan counts them
    family = [c for c in report["models"][0]["comparisons"] if c["in_family"]]
    assert (
        sorted(c["condition"].split(" [")[0] for c in family)
        == ["keep none", "keep none"] + ["keep random@1"] * 2 + ["keep retrieval@1"] * 2
    )
    assert all(c["kind"] in ("contrast", "random", "explicit") for c in family)
    from rh_tasks.suite.plan import check_design, task_designs

    config = load_suite(path)
    assert check_design(config, task_designs(config)).family_size == report["settings"]["family_size"] == 6
    assert all(p["equal_memory"] for p in memory if p["keep"] == "contrast")


def _without_paths(value):
    """report.json minus file paths, which name timestamped lm-eval files."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in ("path", "runs")}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def _samples(out: Path) -> dict:
    """Per condition: every item's doc and prompt hash and the model's answer, in doc order."""
    found = {}
    for path in sorted(out.rglob("samples_*.jsonl")):
        condition = path.relative_to(out / "conditions").parts[0]
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        found[condition] = sorted((r["doc_id"], r["doc_hash"], r["prompt_hash"], r["filtered_resps"]) for r in rows)
    return found


def test_same_config_and_seeds_give_the_same_report(suite, tmp_path):
    """Heads, prompts, doc hashes, answers and every number of the report, run twice; only paths and dates differ."""
    import dataclasses

    runs = []
    for name in ("first", "second"):
        out = run_suite(dataclasses.replace(suite, output_dir=str(tmp_path / name)))
        heads = {p.parent.name: json.loads(p.read_text())["rh_masking"]["heads"] for p in out.rglob("condition.json")}
        report = _without_paths(json.loads((out / "report" / "report.json").read_text()))
        runs.append({"heads": heads, "samples": _samples(out), "report": report})
    assert runs[0]["samples"] and len(runs[0]["heads"]) == 4
    assert runs[0] == runs[1]


def test_plan_counts_items_and_contexts_and_says_what_is_needed(suite, tmp_path, capsys):
    from rh_tasks.suite.plan import TaskDesign, check_design, task_designs

    # 2 needles at one length and depth: 2 items, each in its own context
    assert task_designs(suite) == [TaskDesign("niah", 2, 2, 1)]
    sweep = parse_suite(
        {**BASE, "conditions": {"retrieval": [2, 5, 8], "random": {"k": [2, 5, 8], "seeds": [0, 1, 2, 3, 4]}}}
    )
    plan = check_design(sweep, [TaskDesign("niah", 18, 6, 1)])
    (check,) = plan.checks
    # the questions the suite declares: 3 contrasts and 3 random controls against none, all t tests (no floor);
    # retrieval against none is exploratory where its contrast answers
    assert (plan.family_size, check.tests, check.exact_tests, check.min_p) == (6, 6, 0, 0.0)
    assert check.reachable and check.clusters_for_floor == 8  # 2 / 2^8 <= 0.05 / 6 < 2 / 2^7
    assert plan.seeds_ok and plan.seeds_for_rank == 19  # 5 seeds: the rank p is at least 1/6
    # no random control: each retrieval K is the question, tested exactly at 6 contexts (p >= 1/32)
    fixed = check_design(parse_suite({**BASE, "conditions": {"retrieval": [2, 5, 8]}}), [TaskDesign("niah", 18, 6, 1)])
    assert (fixed.family_size, fixed.checks[0].min_p) == (3, 1 / 32)
    assert fixed.checks[0].min_p_holm == pytest.approx(3 / 32) and not fixed.checks[0].reachable
    wide = check_design(sweep, [TaskDesign("niah", 600, 200, 1)])
    assert wide.checks[0].reachable and wide.checks[0].min_p_holm == 0.0
    few = check_design(parse_suite({**BASE, "conditions": {"random": {"k": [2], "seeds": [0, 1]}}}), plan.checks[0:0])
    assert not few.seeds_ok

    path = tmp_path / "suite.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "model": {"pretrained": suite.pretrained, "head_scores": suite.head_scores}})
    )
    assert main(["plan", str(path), "--effect", "30"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM niah: 2 independent items; no test can give p below 0.5" in out
    assert "random: 2 seeds; the spread between head sets cannot be estimated" in out
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2


def test_the_shipped_sweeps_correct_over_the_questions_they_declare():
    from scipy import stats as sps

    from rh_tasks.report import stats
    from rh_tasks.suite.plan import TaskDesign, check_design, describe

    suites = task_configs_dir() / "suites"
    # windows 64 and 256 x K = 2, 6, 18: 6 contrasts, 6 random controls and 2 windows keeping no head, per task
    windows = check_design(
        load_suite(suites / "windows.yaml"), [TaskDesign("niah", 26, 26, 1), TaskDesign("extractive_qa", 8, 7, 1)]
    )
    assert windows.family_size == 28 and [c.tests for c in windows.checks] == [14, 14]
    # 5 seeds leave the pooled tests 4 degrees of freedom however many needles: the plan says what that costs
    (random,) = [line for _, line in describe(windows) if line.startswith("random: ")]
    assert "the most contexts (26), an estimate must lie 7.39 standard errors from 0" in random
    assert "4.37 with 10 seeds; 3.63 with 20 seeds (3.12 at the limit)" in random
    assert sps.t.sf(stats.critical_t(28, 4), 4) * 2 * 28 == pytest.approx(0.05)
    # K = 2, 5, 8 with 5 seeds: 3 contrasts and 3 random controls
    assert check_design(load_suite(suites / "niah_k_sweep.yaml"), [TaskDesign("niah", 18, 6, 1)]).family_size == 6


def test_documents_are_built_once_and_reused_unchanged(suite, tmp_path, monkeypatch):
    """The design check and every condition get the documents of one build, and the same samples as if each had
    built its own."""
    import dataclasses

    from rh_tasks.niah import task as niah

    calls = []
    build = niah.build
    monkeypatch.setattr(niah, "build", lambda **metadata: calls.append(metadata) or build(**metadata))
    reused = _samples(run_suite(dataclasses.replace(suite, output_dir=str(tmp_path / "reused")), write_report=False))
    assert len(calls) == 1 and len(reused) == 4
    hashes = {name: [row[:3] for row in rows] for name, rows in reused.items()}
    assert all(rows == hashes["none"] for rows in hashes.values())

    class FreshEveryTime(runner.TaskCache):
        def load(self, *args):
            self._built.clear()
            return super().load(*args)

    monkeypatch.setattr(runner, "TaskCache", FreshEveryTime)
    fresh = _samples(run_suite(dataclasses.replace(suite, output_dir=str(tmp_path / "fresh")), write_report=False))
    assert len(calls) == 1 + 5 and fresh == reused  # the design check's build, then one per condition


def test_task_cache_keys_on_task_and_metadata():
    cache = runner.TaskCache()
    first = cache.load("niah", {"lengths": [128], "depths": [50], "needles": ["sf_sandwich"]})
    assert cache.load("niah", {"needles": ["sf_sandwich"], "depths": [50], "lengths": [128]}) is first
    other = cache.load("niah", {"lengths": [128], "depths": [0], "needles": ["sf_sandwich"]})
    assert other is not first and other[1][0].eval_docs[0]["depth"] == 0
    assert cache.load("niah", {"lengths": [128], "depths": [50], "needles": ["sf_sandwich"]}, 2) is not first


@pytest.mark.parametrize("phase", ["decode", "all"])
def test_conditions_run_together_give_the_report_of_one_by_one(suite, tmp_path, phase):
    """The shared-prefill engine changes how conditions are computed, never what a suite reports."""
    import dataclasses

    runs = []
    for one_by_one in (False, True):
        config = dataclasses.replace(suite, phase=phase, output_dir=str(tmp_path / f"{phase}-{one_by_one}"))
        out = run_suite(config, one_by_one=one_by_one)
        audits = [json.loads(p.read_text())["rh_masking"]["audit"] for p in out.rglob("condition.json")]
        assert len(audits) == 4 and all(a["clean"] or a["layers"] == {} for a in audits)
        report = _without_paths(json.loads((out / "report" / "report.json").read_text()))
        runs.append({"samples": _samples(out), "report": report})
    assert runs[0]["samples"] and runs[0] == runs[1]


def test_the_environment_is_read_once_per_suite_run(suite, tmp_path, monkeypatch):
    """lm-eval's environment record (a ``pip list`` per results file) is shared by the conditions of one run."""
    import dataclasses

    from lm_eval import evaluator

    calls = []
    record = evaluator.add_env_info
    counting = lambda storage: calls.append(1) or record(storage)  # noqa: E731
    monkeypatch.setattr(evaluator, "add_env_info", counting)
    out = run_suite(dataclasses.replace(suite, output_dir=str(tmp_path / "out")), write_report=False)
    results = [json.loads(p.read_text()) for p in sorted(out.rglob("results_*.json"))]
    assert len(calls) == 1 and len(results) == 4
    assert all(r["pretty_env_info"] == results[0]["pretty_env_info"] != "" for r in results)
    assert evaluator.add_env_info is counting  # the suite's own wrapper is gone again


def test_differences_name_every_change_between_two_runs(suite, tmp_path):
    out = run_suite(suite, write_report=False)
    copy = shutil.copytree(out, tmp_path / "copy")
    assert differences(out, copy) == []

    samples = next((copy / "conditions" / "retrieval-k1").rglob("samples_niah_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[0]["resps"] = [[rows[0]["resps"][0][0] + "!"]]
    rows[1]["contains"] = 1.0 - rows[1]["contains"]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    record = copy / "conditions" / "random-k1-seed0" / "condition.json"
    content = json.loads(record.read_text())
    content["rh_masking"]["heads"] = [[0, 0]]
    record.write_text(json.dumps(content))
    shutil.rmtree(copy / "conditions" / "none")

    lines = differences(out, copy)
    assert len(lines) == 4, lines
    assert lines[0] == "condition none: only in the first"
    assert lines[1].startswith("random-k1-seed0: masking {")
    assert lines[2].startswith(f"retrieval-k1/niah doc {rows[0]['doc_id']} (") and " resps " in lines[2]
    assert lines[3].startswith(f"retrieval-k1/niah doc {rows[1]['doc_id']} (") and ": contains " in lines[3]


@pytest.mark.parametrize(
    "output_type, change, differs",
    [
        ("multiple_choice", ["-1.25001", "False"], False),  # float32 rounding of the same sum
        ("multiple_choice", ["-1.2505", "False"], True),
        ("multiple_choice", ["-1.25", "True"], True),  # greedy or not is exact
        ("generate_until", "-1.25001", True),  # generated text is compared as text
    ],
)
def test_log_likelihoods_agree_within_float32_rounding(output_type, change, differs):
    first = {"doc_hash": "d", "prompt_hash": "p", "target_hash": "t", "metrics": ["acc"], "acc": 1.0}
    first |= {"output_type": output_type, "resps": [[["-1.25", "False"]]], "filtered_resps": [["-1.25", "False"]]}
    if output_type == "generate_until":
        first |= {"resps": [["-1.25"]], "filtered_resps": ["-1.25"]}
    second = {**first, "resps": [[change]], "filtered_resps": [change]}
    lines = compare_samples({("mmlu_anatomy", 0, "none"): first}, {("mmlu_anatomy", 0, "none"): second})
    assert len(lines) == (2 if differs else 0), lines


@pytest.fixture
def lm_eval_logs():
    """lm-eval's records reach caplog whatever ran before (lm-eval's own logging setup may stop propagation)."""
    import logging

    log = logging.getLogger("lm_eval")
    level, propagate = log.level, log.propagate
    log.setLevel(logging.NOTSET)
    log.propagate = True
    yield
    log.setLevel(level)
    log.propagate = propagate


TWO_KINDS = [  # generation (one request per item) and multiple choice (four per item)
    BASE["tasks"][0],
    {"task": "mmlu_abstract_algebra", "limit": 2},
]


class _RecordingBar(runner.tqdm):
    """The suite's bar, remembering its count whenever the runner names the condition and task it is on."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.at: dict[str, float] = {}
        self.made.append(self)

    def set_postfix_str(self, s="", refresh=True):
        self.at.setdefault(s, self.n)
        return super().set_postfix_str(s, refresh)


@pytest.mark.parametrize("one_by_one", [False, True])
def test_progress_bar_counts_condition_items_as_they_are_computed(
    suite, tmp_path, monkeypatch, caplog, lm_eval_logs, one_by_one
):
    """Total and final count are conditions x items; together, the first condition computes them all. lm-eval's
    repeated warning shows once, or every time with verbose."""
    import dataclasses
    import logging

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(runner, "tqdm", _RecordingBar)
    _RecordingBar.made = []
    config = dataclasses.replace(suite, tasks=parse_suite({**BASE, "tasks": TWO_KINDS}).tasks, output_dir=str(tmp_path))
    run_suite(config, write_report=False, one_by_one=one_by_one, verbose=one_by_one)
    (bar,) = _RecordingBar.made
    items = 2 + 2
    assert bar.total == bar.n == 4 * items
    assert bar.at["retrieval-k1: niah"] == (items if one_by_one else 4 * items)
    repeats = caplog.text.count("Custom kwargs can be passed")  # niah's and mmlu_abstract_algebra's
    assert repeats == (2 if one_by_one else 1)
    assert "lm_eval.evaluator" in caplog.text if one_by_one else "lm_eval.evaluator" not in caplog.text


def test_item_progress_adds_up_to_whole_items():
    from types import SimpleNamespace

    from model_wrappers.lm.progress import ItemProgress

    counted = []
    progress = ItemProgress(counted.append)
    requests = [SimpleNamespace(task_name="t", doc_id=d) for d in (0, 0, 0, 1, 1, 1)]  # 3 choices per item
    progress.answered(5)  # outside a call: not an item of anything
    with progress.call(requests):
        for rows in (1, 1, 2, 4, 4):  # 12 rows: two conditions' answers
            progress.answered(rows)
    assert counted == [1, 1, 2] and sum(counted) == 4


def test_lm_eval_warnings_show_once_and_chatter_is_held_back(caplog, lm_eval_logs):
    import logging

    from rh_tasks.suite.terminal import suite_output

    def log_all():
        for task in ("niah", "mmlu_anatomy", "mmlu_virology"):
            logging.getLogger("lm_eval.api.task").warning("%s: Custom kwargs", task)
            logging.getLogger("lm_eval.evaluator").info("Running %s requests", task)
        logging.getLogger("rh_tasks.suite.runner").warning("Design check: one")
        logging.getLogger("rh_tasks.suite.runner").warning("Design check: two")

    caplog.set_level(logging.INFO)
    with suite_output():
        log_all()
    assert [r.getMessage() for r in caplog.records] == [
        "niah: Custom kwargs",
        "Design check: one",
        "Design check: two",
        "2 repeated lm-eval warnings were not shown (--verbose shows every log line)",
    ]
    caplog.clear()
    log_all()  # the filter is gone
    assert len(caplog.records) == 8
    caplog.clear()
    with suite_output(verbose=True):
        log_all()
    assert len(caplog.records) == 8
