"""The ``rh-eval`` command: one sub-command per job, each defined in the module that does the job."""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module exposing ``add_parser(subparsers)``; the parser's ``func(args)`` returns an exit code.
_COMMANDS = {
    "run": "rh_tasks.plugin.lm_eval_run",
    "report": "rh_tasks.report.cli",
    "detect": "rh_tasks.detection.cli",
    "heads": "rh_tasks.detection.heads_cli",
    "suite": "rh_tasks.suite.cli",
    "plan": "rh_tasks.suite.plan_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rh-eval",
        description="Which abilities of a causal LM depend on its retrieval heads? "
        "Mask them inside lm-evaluation-harness and measure.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # forwarded verbatim: `rh-eval run` takes exactly lm_eval's flags
        return importlib.import_module(_COMMANDS["run"]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
