"""``rh-eval run``: lm-eval's own ``run`` command with rh-eval registered, whatever the start-up hook did."""

from __future__ import annotations

import sys

HELP = "run lm-eval (same flags as `lm_eval run`) with rh-masked and the rh-eval tasks available"


def main(argv: list[str]) -> int:
    from .registration import register

    register()
    from lm_eval.__main__ import cli_evaluate

    from model_wrappers.heads.scores import HeadScoreFileError

    saved = sys.argv
    sys.argv = ["rh-eval run", "run", *argv]
    try:
        cli_evaluate()
    except HeadScoreFileError as err:  # the user's file, not a bug: the message says what to fix
        print(f"rh-eval run: {err}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0
