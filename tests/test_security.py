"""What rh-eval may never do on its own: run code from a data file, reach the network, or trust a repository's code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rh_tasks.plugin.command import main

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("model_wrappers", "rh_tasks") for p in (REPO / folder).rglob("*.py")] + [
    REPO / "rh_eval_autoload.py"
]


def test_suite_yaml_cannot_run_python(tmp_path, caplog):
    marker = tmp_path / "EXECUTED"
    suite = tmp_path / "suite.yaml"
    suite.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\ntasks: [{{task: niah}}]\n')
    assert main(["suite", str(suite)]) == 2
    assert "is not valid YAML" in caplog.text and "python/object/apply" in caplog.text
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_no_unsafe_yaml_loader_and_no_trust_remote_code_default():
    """Every YAML read goes through safe_load; nothing turns trust_remote_code on by itself."""
    for path in SOURCES:
        for call in _calls(ast.parse(path.read_text(), str(path))):
            name = ast.unparse(call.func)
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "load_all"), f"{path}: {name}"
            for keyword in call.keywords:
                if keyword.arg == "trust_remote_code":
                    assert not (isinstance(keyword.value, ast.Constant) and keyword.value.value), f"{path}: {name}"


NO_NETWORK = textwrap.dedent(
    """
    import socket, sys
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")
    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.create_connection = socket.getaddrinfo = refuse
    from lm_eval.__main__ import cli_evaluate
    sys.argv = ["lm_eval"] + sys.argv[1:]
    try:
        cli_evaluate()
    finally:
        print("NETWORK ATTEMPTS:", len(attempts), attempts[:3])
    """
)


def test_a_local_run_touches_no_network(tiny_checkpoint, tmp_path):
    """The hub's offline switch unset, as a user would have it: a local model and packaged data need no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty hub cache, so nothing can be found there either
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, "--model", "rh-masked", "--model_args",
         f"pretrained={tiny_checkpoint},heads=[[0,1]]", "--tasks", "niah", "--limit", "1",
         "--metadata", '{"lengths": [128], "depths": [50]}', "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NETWORK ATTEMPTS: 0 []" in done.stdout, done.stdout[-2000:]
    assert list((tmp_path / "out").rglob("results_*.json"))
