"""Bad input, one row each: a clear message naming the problem and the fix, a non-zero exit, and nothing on disk
written half-way or overwritten.

Every case runs the way a user meets it: the ``rh-eval`` and ``lm_eval`` commands, or the Python API. Each
gets a workspace holding its inputs and an earlier result that must survive; the workspace is compared
byte for byte before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from report_runs import NONE, RETRIEVAL, niah_rows, write_run

from model_wrappers.lm.rh_masked import RHMaskedLM
from rh_tasks.niah import task as niah
from rh_tasks.plugin.command import main
from rh_tasks.suite import runner

BIN = Path(sys.executable).parent
TINY_GRID = [(layer, head) for layer in range(2) for head in range(4)]  # the tiny checkpoint's 2 layers x 4 heads


@dataclass
class Workspace:
    root: Path
    tiny: str  # a tiny random Llama checkpoint (2 layers x 4 heads, 256 positions)
    capsys: pytest.CaptureFixture
    caplog: pytest.LogCaptureFixture

    def file(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def scores(self, name: str = "scores.json", grid=TINY_GRID, value=lambda l, h: 0.6 if (l, h) == (1, 2) else 0.0):
        return self.file(name, json.dumps({f"{l}-{h}": [value(l, h)] for l, h in grid}))

    def unwritable(self) -> Path:
        """A folder nobody may write to: a read-only one, or sysfs's root for root, whom permissions do not stop."""
        if os.geteuid() == 0:
            return Path("/sys/rh-eval-output")
        locked = self.root / "locked"
        locked.mkdir(mode=0o555)
        return locked / "out"


@dataclass
class Outcome:
    code: int
    text: str


def cli(ws: Workspace, *argv) -> Outcome:
    """``rh-eval ARGV`` as the console script runs it: an exit code, and what it printed."""
    ws.caplog.clear()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    captured = ws.capsys.readouterr()
    return Outcome(code, captured.out + captured.err + ws.caplog.text)


def lm_eval(ws: Workspace, *argv) -> Outcome:
    """The stock ``lm_eval`` console script in a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [BIN / "lm_eval", *map(str, argv)], capture_output=True, text=True, env=env, cwd=ws.root, timeout=600
    )
    return Outcome(done.returncode, done.stdout + done.stderr)


def api(call: Callable[[], object]) -> Outcome:
    try:
        call()
    except Exception as err:  # the API raises; a caller sees the exception's message
        return Outcome(1, f"{type(err).__name__}: {err}")
    return Outcome(0, "")


def rh_masked(ws: Workspace, **kwargs) -> Outcome:
    return api(lambda: RHMaskedLM(pretrained=kwargs.pop("pretrained", ws.tiny), device="cpu", batch_size=1, **kwargs))


# ---- inputs that need more than a line to build ---------------------------------------------------------------


def unsupported_checkpoint(ws: Workspace) -> str:
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4)
    path = ws.root / "opt"
    OPTForCausalLM(config).save_pretrained(path)
    return str(path)


def remote_code_checkpoint(ws: Workspace) -> str:
    """A checkpoint whose config class lives in the repository's own Python file, which must not run unasked."""
    path = ws.root / "custom"
    ws.file(
        "custom/config.json",
        json.dumps(
            {
                "model_type": "rh_custom",
                "architectures": ["CustomForCausalLM"],
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
                },
            }
        ),
    )
    ws.file(
        "custom/configuration_custom.py",
        "import pathlib\n"
        "pathlib.Path(__file__).with_name('EXECUTED').write_text('remote code ran')\n"
        "from transformers import PretrainedConfig\n"
        "class CustomConfig(PretrainedConfig):\n"
        "    model_type = 'rh_custom'\n",
    )
    return str(path)


def report_runs(ws: Workspace, **changes) -> list[Path]:
    base = write_run(ws.root / "runs" / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})
    masked = write_run(
        ws.root / "runs" / "masked",
        {"niah": changes.pop("rows", niah_rows(RETRIEVAL[2]))},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
        **changes,
    )
    return [base, masked]


def suite_file(ws: Workspace, **changes) -> Path:
    data = {
        "model": {"pretrained": ws.tiny, "head_scores": str(ws.scores())},
        "tasks": [{"task": "niah", "limit": 2, "metadata": {"lengths": [128], "depths": [50]}}],
        "conditions": {"retrieval": [1], "random": {"k": [1], "seeds": [0]}},
        "apply_chat_template": False,
        "output_dir": str(ws.root / "suite"),
    }
    return ws.file("suite.yaml", yaml.safe_dump({**data, **changes}))


def interrupted_suite(ws: Workspace, monkeypatch) -> Outcome:
    """Ctrl-C during the second condition: the first is kept, the second stays unfinished, no report."""
    calls = []
    finish = runner._run_condition

    def run_condition(lm, config, condition, folder, *args):
        calls.append(condition.name)
        if len(calls) == 2:
            (folder.with_name(f".partial-{folder.name}")).mkdir(parents=True)
            raise KeyboardInterrupt
        finish(lm, config, condition, folder, *args)

    monkeypatch.setattr(runner, "_run_condition", run_condition)
    outcome = cli(ws, "suite", suite_file(ws))
    out = ws.root / "suite"
    finished = sorted(p.name for p in (out / "conditions").iterdir() if (p / "condition.json").is_file())
    assert finished == [calls[0]] and (out / "conditions" / f".partial-{calls[1]}").is_dir()
    assert not (out / "conditions" / calls[1]).exists() and not (out / "report").exists()
    return outcome


def damaged_data(data_copy: Path, ws: Workspace, damage: Callable[[Path], None]) -> Outcome:
    damage(data_copy)
    return api(lambda: niah.build(pretrained=ws.tiny, lengths=[128], depths=[50]))


# ---- the matrix ------------------------------------------------------------------------------------------------

CASES = {
    # head-score files
    "head file: malformed JSON": (
        lambda ws, _: cli(ws, "heads", ws.file("bad.json", '{"0-1": [0.5,')),
        r"is not valid JSON",
    ),
    "head file: empty": (
        lambda ws, _: rh_masked(ws, heads="retrieval", k=1, head_scores=str(ws.file("empty.json", ""))),
        r"empty\.json.*(empty|no heads)",
    ),
    "head file: NaN score": (
        lambda ws, _: rh_masked(
            ws, heads="retrieval", k=1, head_scores=str(ws.scores(value=lambda l, h: float("nan") if l else 0.1))
        ),
        r"(?i)not a finite number|NaN",
    ),
    "head file: shaped for another model": (
        lambda ws, _: rh_masked(
            ws, heads="retrieval", k=1, head_scores=str(ws.scores(grid=[(l, h) for l in range(30) for h in range(9)]))
        ),
        r"30 layers x 9 heads.*2 layers x 4",
    ),
    "head file: DuoAttention TSV with the wrong columns": (
        lambda ws, _: cli(
            ws, "heads", ws.file("gates.tsv", "1\t0\t1\n0\t1\t0\n"), "--model_args", f"pretrained={ws.tiny}"
        ),
        r"gates\.tsv.*(column|KV heads)",
    ),
    # head sets and masking arguments
    "heads: layer out of range (stock lm_eval)": (
        lambda ws, _: lm_eval(
            ws,
            "--model",
            "rh-masked",
            "--model_args",
            f"pretrained={ws.tiny},heads=[[2,0]]",
            "--tasks",
            "niah",
            "--output_path",
            ws.root / "out",
        ),  # fmt: skip
        r"Head \(2, 0\) is out of range: the model has 2 layers \(0\.\.1\)",
    ),
    "heads: query head out of range": (
        lambda ws, _: rh_masked(ws, heads="[[0,4]]"),
        r"Head \(0, 4\) is out of range.*4 query heads per layer \(0\.\.3\)",
    ),
    "heads: K above the number of heads": (
        lambda ws, _: rh_masked(ws, heads="retrieval", k=9, head_scores=str(ws.scores())),
        r"k=9.*8 heads",
    ),
    "heads: random K with too few non-retrieval heads": (
        lambda ws, _: rh_masked(ws, heads="random", k=6, head_scores=str(ws.scores())),
        r"k=6 exceeds the 2 non-retrieval units.*use a smaller k",
    ),
    "masking: misspelt argument (stock lm_eval)": (
        lambda ws, _: lm_eval(
            ws,
            "--model",
            "rh-masked",
            "--model_args",
            f"pretrained={ws.tiny},head=retrieval,k=5",
            "--tasks",
            "niah",
        ),  # fmt: skip
        r"rh-masked has no argument 'head'; did you mean 'heads'\?",
    ),
    "masking: unknown mode": (
        lambda ws, _: rh_masked(ws, heads="[[0,1]]", mode="noise"),
        r"mode='noise' is unknown; choose one of uniform, zero, mean",
    ),
    "masking: unknown phase (suite file)": (
        lambda ws, _: cli(ws, "suite", suite_file(ws, masking={"phase": "prefill"})),
        r"masking.phase: phase='prefill' is unknown; choose one of all, decode",
    ),
    "task: misspelt metadata option": (
        lambda ws, _: api(lambda: niah.build(pretrained=ws.tiny, lenghts=[128])),
        r"niah: unknown option 'lenghts'; did you mean 'lengths'\?",
    ),
    "task: NIAH longer than the model's context (stock lm_eval)": (
        lambda ws, _: lm_eval(
            ws,
            "--model",
            "rh-masked",
            "--model_args",
            f"pretrained={ws.tiny}",
            "--tasks",
            "niah",
            "--metadata",
            '{"lengths": [1024]}',
            "--output_path",
            ws.root / "out",
        ),  # fmt: skip
        r"exceeds the model's context of 256",
    ),
    # models
    "model: unsupported architecture": (
        lambda ws, _: rh_masked(ws, pretrained=unsupported_checkpoint(ws), heads="[[0,1]]"),
        r"does not support model_type 'opt'. Supported model types: .*llama",
    ),
    "model: remote code without trust_remote_code": (
        lambda ws, _: rh_masked(ws, pretrained=remote_code_checkpoint(ws)),
        r"trust_remote_code=True",
    ),
    "model: remote code without consent (detect)": (
        lambda ws, _: cli(
            ws,
            "detect",
            "--model_args",
            f"pretrained={remote_code_checkpoint(ws)}",
            "--output",
            ws.root / "scores" / "custom.json",
        ),  # fmt: skip
        r"trust_remote_code=True",
    ),
    # packaged data
    "data: packaged haystack modified": (
        lambda ws, request: damaged_data(
            request.getfixturevalue("data_copy"),
            ws,
            lambda d: (d / "haystack" / "time_machine_ch01-08.txt.gz").write_bytes(b"not the book"),
        ),
        r"was modified\. Reinstall rh-eval",
    ),
    "data: packaged needles missing": (
        lambda ws, request: damaged_data(
            request.getfixturevalue("data_copy"), ws, lambda d: (d / "needles" / "niah.jsonl").unlink()
        ),
        r"(?i)is missing.*reinstall",
    ),
    # suites
    "suite: unknown key": (
        lambda ws, _: cli(ws, "suite", suite_file(ws, condtions={"retrieval": [1]})),
        r"condtions",
    ),
    "suite: interrupted": (
        lambda ws, request: interrupted_suite(ws, request.getfixturevalue("monkeypatch")),
        r"Interrupted.*resumes",
    ),
    "suite: output folder not writable": (
        lambda ws, _: cli(ws, "suite", suite_file(ws, output_dir=str(ws.unwritable()))),
        r"Cannot write to the output folder",
    ),
    # reports
    "report: runs of different models": (
        lambda ws, _: cli(ws, "report", *report_runs(ws, model="models/other"), "-o", ws.root / "report"),
        r"no unmasked run of models/other",
    ),
    "report: runs with different prompts": (
        lambda ws, _: cli(
            ws, "report", *report_runs(ws, rows=niah_rows(RETRIEVAL[2], prompt_suffix=" ")), "-o", ws.root / "report"
        ),
        r"prompt_hash",
    ),
    "report: empty folder": (
        lambda ws, _: cli(ws, "report", ws.root / "out"),
        r"holds no lm-eval results file",
    ),
    "report: output folder not writable": (
        lambda ws, _: cli(ws, "report", *report_runs(ws), "-o", ws.unwritable()),
        r"Cannot write to the output folder",
    ),
    # detection output
    "detect: output folder not writable": (
        lambda ws, _: cli(
            ws, "detect", "--model_args", f"pretrained={ws.tiny}", "--output", ws.unwritable() / "s.json"
        ),
        r"Cannot write to the output folder",
    ),
    "detect: output exists": (
        lambda ws, _: cli(
            ws, "detect", "--model_args", f"pretrained={ws.tiny}", "--output", ws.root / "out" / "kept.json"
        ),
        r"kept\.json already exists; pass --force",
    ),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "suite" not in p.relative_to(root).parts[:1]
    }


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tiny_checkpoint, tmp_path, capsys, caplog, request):
    run, message = CASES[name]
    ws = Workspace(tmp_path, tiny_checkpoint, capsys, caplog)
    ws.file("out/kept.json", '{"an earlier result": true}\n')  # must survive every failure
    before = _snapshot(tmp_path)

    outcome = run(ws, request)

    assert outcome.code != 0, f"{name}: exit code 0\n{outcome.text}"
    assert re.search(message, outcome.text, re.S), f"{name}: message not found\n{outcome.text[-3000:]}"
    if outcome.text and not name.endswith("(stock lm_eval)"):
        assert "Traceback" not in outcome.text, f"{name}: a traceback instead of a message\n{outcome.text}"
    after = _snapshot(tmp_path)
    inputs = {path for path in after if path not in before}  # built by the case itself, before the failure
    assert {path: after[path] for path in before} == before, f"{name}: an existing file changed"
    written = [p for p in inputs if Path(p).parts[0] in ("out", "report", "scores") or p.endswith(".tmp")]
    assert not written, f"{name}: wrote {written}"
    assert not (tmp_path / "custom" / "EXECUTED").exists(), "remote code ran without consent"
