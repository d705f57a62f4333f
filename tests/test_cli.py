"""What a user sees: the stock ``lm_eval`` console script, the start-up hook and ``rh-eval``, in subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(*args, env=None, timeout=900):
    return subprocess.run(args, capture_output=True, text=True, env=env or ENV, timeout=timeout, cwd=REPO_ROOT)


def _python(code: str, **env):
    return _run(sys.executable, "-c", code, env={**ENV, **env})


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (REPO_ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv && ")]
    assert len(commands) == 2, "the README gives exactly two commands for a fresh machine"
    test_command = next(c for c in commands if c.endswith("pytest"))
    assert test_command in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert all("-c constraints.txt" in c for c in commands), "both commands install the tested versions"


def test_start_up_hook_imports_nothing_heavy():
    result = _python("import sys; print(sorted(m for m in ('torch', 'lm_eval', 'transformers') if m in sys.modules))")
    assert result.stdout.strip() == "[]", result.stderr


def test_stock_registry_knows_rh_masked_and_keeps_the_built_ins():
    code = "import lm_eval.api.registry as r; print('rh-masked' in r.model_registry, 'hf' in r.model_registry)"
    assert _python(code).stdout.split() == ["True", "True"]
    assert _python(code, RH_EVAL_AUTOLOAD="0").stdout.split()[0] == "False"


def test_task_folder_is_added_and_user_paths_still_win(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: my_own_task\ndataset_path: json\noutput_type: generate_until\n")
    code = (
        "from lm_eval.tasks import TaskManager;"
        f"tm = TaskManager(include_path={str(tmp_path)!r});"
        "print('niah' in tm.all_tasks, 'my_own_task' in tm.all_tasks, 'gsm8k' in tm.all_tasks)"
    )
    assert _python(code).stdout.split() == ["True", "True", "True"]


def test_stock_lm_eval_rejects_out_of_range_heads():
    result = _run(
        str(BIN / "lm_eval"),
        "--model",
        "rh-masked",
        "--model_args",
        "heads=[[99,0]]",
        "--tasks",
        "niah",
        "--device",
        "cpu",
    )
    assert result.returncode != 0
    assert "Head (99, 0) is out of range: the model has 30 layers" in result.stderr


@pytest.mark.slow
def test_stock_lm_eval_runs_niah_on_the_embedded_model(tmp_path):
    result = _run(
        str(BIN / "lm_eval"),
        "--model", "rh-masked",
        "--model_args", "heads=[[17,3],[18,7]],phase=decode",
        "--tasks", "niah",
        "--limit", "2",
        "--device", "cpu",
        "--apply_chat_template",
        "--log_samples",
        "--output_path", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "contains@1024" in result.stdout or "contains@2048" in result.stdout
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    masking = results["config"]["rh_masking"]
    assert masking["heads"] == [[17, 3], [18, 7]] and masking["phase"] == "decode"
    assert masking["model"] == "SmolLM2-135M-Instruct" and len(masking["model_sha256"]) == 64
    audit = masking["audit"]
    assert audit["clean"] and audit["canary_logit_change"] > 0 and set(audit["layers"]) == {"17", "18"}
    for counts in audit["layers"].values():  # the prompts were read intact up to their last token
        assert counts["forward_passes"] == audit["forward_passes"] > 2
        assert counts["unmasked_positions"] > 1000 and 2 <= counts["masked_positions"] < audit["forward_passes"] + 2
    samples = [json.loads(line) for line in next(tmp_path.rglob("samples_niah_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 2 and {"length", "depth", "needle_id"} <= samples[0]["doc"].keys()


@pytest.mark.slow
def test_rh_eval_run_takes_lm_eval_flags(tmp_path):
    result = _run(
        str(BIN / "rh-eval"), "run", "--model", "rh-masked", "--model_args", "heads=none,seed=0,match=none",
        "--tasks", "niah", "--limit", "1", "--device", "cpu",
        "--metadata", '{"lengths": [512], "depths": [50]}', "--output_path", str(tmp_path),
        env={**ENV, "RH_EVAL_AUTOLOAD": "0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(next(tmp_path.rglob("results_*.json")).read_text())["results"]["niah"]["sample_len"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["detect", "--output", "{existing}"], "exists; pass --force"),
        (["heads"], "Give one head-score file"),
        (["suite", "{missing}"], "Cannot read suite file"),
        (["plan", "{missing}"], "Cannot read suite file"),
        (["report", "{missing}"], "is not a folder"),
    ],
)
def test_every_command_fails_the_same_way(argv, message, tmp_path):
    """One line that names the problem, exit code 2, no traceback: the console script as a user runs it."""
    existing = tmp_path / "scores.json"
    existing.write_text("{}")
    argv = [a.format(existing=existing, missing=tmp_path / "missing") for a in argv]
    done = _run(str(BIN / "rh-eval"), *argv, timeout=300)
    lines = [line for line in done.stderr.splitlines() if "ERROR" in line or message in line]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_suite_command_shows_a_bar_and_warnings_once_then_prints_the_findings(tiny_checkpoint, tmp_path):
    """The console script on a tiny model: one bar, lm-eval's repeated warning once, and on stdout the report's
    leaderboard rows, one answer per task and the path of report.html."""
    import yaml

    from rh_tasks.report import write_report
    from rh_tasks.report.narrative import answers

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({f"{l}-{h}": [0.6 if (l, h) == (1, 2) else 0.01] for l in range(2) for h in range(4)}))
    suite = tmp_path / "suite.yaml"
    niah = {"lengths": [128], "depths": [50], "needles": ["sf_sandwich", "owl_stamp"]}
    suite.write_text(
        yaml.safe_dump(
            {
                "model": {"pretrained": tiny_checkpoint, "head_scores": str(scores)},
                "tasks": [
                    {"task": "niah", "limit": 2, "metadata": niah},
                    {"task": "mmlu_abstract_algebra", "limit": 2},
                ],
                "conditions": {"retrieval": [1], "random": {"k": [1], "seeds": [0, 1]}},
                "apply_chat_template": False,
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    done = _run(str(BIN / "rh-eval"), "suite", str(suite), env={**ENV, "COLUMNS": "160"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Custom kwargs can be passed") == 1  # niah's; mmlu_abstract_algebra's is held back
    assert "16/16" in done.stderr and "Running loglikelihood requests" not in done.stderr
    assert "INFO lm_eval" not in done.stderr and "Design check: niah" in done.stderr

    out = done.stdout
    markdown = (tmp_path / "out" / "report" / "report.md").read_text().split("### Leaderboard")[1]
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")][1:3]
    assert [row[0].strip() for row in rows] == ["mmlu_abstract_algebra · acc", "niah · contains"]
    lines = out.splitlines()
    assert sum(line.startswith("task \u00b7 metric") for line in lines) == 1  # one table
    for label, *cells in rows:  # unmasked, Δ retrieval, Δ random, contrast: values, then intervals below
        task, metric = label.strip().split(" \u00b7 ")
        (number,) = [i for i, line in enumerate(lines) if line.startswith(task + "  ")]
        assert lines[number + 1].split()[:2] == ["\u00b7", metric]
        shown = [re.match(r"(\S+) (\[.*\])?(\**)( \u2020)?$", cell.strip()) for cell in cells[1:4]]
        values = [cells[0].strip()] + [m[1] + m[3] + (m[4] or "").strip() if m else "\u2014" for m in shown]
        assert re.split(r"\s{2,}", lines[number][len(task) :].strip()) == values
        assert all(m[2] in lines[number + 1] for m in shown if m)
    report = write_report([tmp_path / "out" / "conditions"], tmp_path / "again").report
    sentences = answers(report.models[0])
    assert len(sentences) == 2 and all(" ".join(s.split()) in " ".join(out.split()) for s in sentences)
    assert f"Report: {tmp_path / 'out' / 'report' / 'report.html'}" in out
