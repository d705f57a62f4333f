"""``rh-eval run``: lm-eval's own ``run`` command with rh-eval registered, whatever the start-up hook did."""

from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run lm-eval (same flags as `lm_eval run`) with rh-masked and the rh-eval tasks available",
        add_help=False,
    )
    parser.set_defaults(func=lambda args: main([]))


def main(argv: list[str]) -> int:
    from .registration import register

    register()
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["rh-eval run", "run", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0
