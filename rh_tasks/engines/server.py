"""``vllm serve`` on one exported folder, from the vLLM environment, for as long as a ``with`` block runs.

The server listens on a free loopback port; its log goes to a file, whose last lines any failure quotes. It runs
in a process group of its own (vLLM starts engine and worker processes), and the whole group is stopped on the
way out, whatever happened inside the block. That includes SIGTERM, which a job scheduler sends at its time limit:
while the server runs it raises ``SystemExit`` in the main thread, so the group is stopped before the process
ends, instead of holding its cores (or GPUs) as an orphan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .environment import read_record

logger = logging.getLogger(__name__)

START_SECONDS = 900
# The CPU build otherwise reserves 92% of RAM for its KV cache (refused when the machine is shared), and compiles the
# model with inductor at every start (minutes on two cores, for every condition); eager starts in seconds.
CPU_DEFAULTS = {"kv_cache_memory_bytes": "2G", "enforce_eager": True}


class EngineStartError(RuntimeError):
    """The engine's server did not come up; the message quotes the end of its log."""


@dataclass(frozen=True)
class Served:
    """A running server: what a client needs to reach it."""

    url: str  # .../v1/completions
    model: str  # the name it serves the folder under
    max_model_len: int
    data_parallel_size: int


def serve_command(environment: Path, folder: Path, engine_args: dict, port: int) -> list[str]:
    """``vllm serve`` with the suite's engine arguments as flags (``data_parallel_size: 2`` -> ``--data-parallel-size
    2``; ``true`` -> the bare flag). The dtype defaults to the checkpoint's own, as hf and rh-masked load it: vLLM's
    ``auto`` would run a float32 checkpoint in 16 bits."""
    arguments = dict(CPU_DEFAULTS) if read_record(environment).get("device") == "cpu" else {}
    arguments = {"dtype": checkpoint_dtype(folder), **arguments, **engine_args}
    command = [str(environment / "bin" / "vllm"), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in arguments.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False and value is not None:
            command += [flag, str(value)]
    return command


def serve_environment(environment: Path, engine_args: dict, cores: list[int] | None = None) -> dict[str, str]:
    """Variables ``vllm serve`` needs beyond the caller's. The CPU build binds every data-parallel replica to the
    same cores; with ``data_parallel_size`` (times ``tensor_parallel_size``) ranks, each rank gets its own share of
    the cores this process may use (``VLLM_CPU_OMP_THREADS_BIND``: one list per rank, in vLLM's DP-then-TP order,
    separated by ``|``), unless the caller set the binding."""
    ranks = int(engine_args.get("data_parallel_size", 1)) * int(engine_args.get("tensor_parallel_size", 1))
    if read_record(environment).get("device") != "cpu" or ranks < 2 or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    if len(cores) < ranks:
        raise EngineStartError(f"{ranks} vLLM ranks need a CPU core each, and this process may use {len(cores)}.")
    share = len(cores) // ranks
    groups = [cores[rank * share : (rank + 1) * share] for rank in range(ranks)]
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(",".join(map(str, group)) for group in groups)}


def checkpoint_dtype(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "auto")


@contextlib.contextmanager
def serving(environment: Path, folder: Path, engine_args: dict, log: Path) -> Iterator[Served]:
    """Serve ``folder`` while the block runs; the server's output goes to ``log``."""
    port = _free_port()
    command = serve_command(environment, folder, engine_args, port)
    environment_variables = serve_environment(environment, engine_args)
    logger.info("Starting vLLM on %s: %s", folder.name, " ".join(command))
    log.parent.mkdir(parents=True, exist_ok=True)
    with _sigterm_exits():
        with open(log, "w") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **environment_variables},
            )
        try:
            base = f"http://127.0.0.1:{port}"
            models = _wait_until_ready(process, base, log)
            yield Served(
                url=f"{base}/v1/completions",
                model=str(folder),
                max_model_len=int(models["data"][0]["max_model_len"]),
                data_parallel_size=int(engine_args.get("data_parallel_size", 1)),
            )
        finally:
            _stop(process)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` while the block runs (main thread only; signals go nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen, base: str, log: Path) -> dict:
    """The server's model list once it answers; raises if the process ends or the time runs out first."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineStartError(f"vllm serve exited with code {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as answer:
                return json.loads(answer.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise EngineStartError(f"vllm serve did not answer within {START_SECONDS} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # workers that outlive the server process
        os.killpg(process.pid, signal.SIGKILL)


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"
