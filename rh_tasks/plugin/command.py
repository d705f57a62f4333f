"""The ``rh-eval`` command: one sub-command per job, each defined in the module that does the job."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command -> the module that does its job. Each exposes HELP (one line for the list of commands),
# DESCRIPTION (its --help), add_arguments(parser) and main(args) -> exit code; optionally EPILOG, a pre-formatted
# text after the options, in which case DESCRIPTION is printed as written too.
_COMMANDS = {
    "report": "rh_tasks.report.cli",
    "detect": "rh_tasks.detection.cli",
    "heads": "rh_tasks.detection.heads_cli",
    "suite": "rh_tasks.suite.cli",
    "plan": "rh_tasks.suite.plan_cli",
    "export": "rh_tasks.export.cli",
    "engine-env": "rh_tasks.engines.cli",
}
_RUN = "rh_tasks.plugin.lm_eval_run"  # `rh-eval run` takes exactly lm_eval's flags, forwarded verbatim


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rh-eval",
        description="Which abilities of a causal LM depend on its retrieval heads? "
        "Mask them inside lm-evaluation-harness and measure.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = importlib.import_module(_RUN)
    subparsers.add_parser("run", help=run.HELP, add_help=False).set_defaults(func=lambda args: run.main([]))
    for name, module_name in _COMMANDS.items():
        module = importlib.import_module(module_name)
        epilog = getattr(module, "EPILOG", None)
        command = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(func=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return importlib.import_module(_RUN).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
