"""``rh-eval plan FILE.yaml``: check a suite's design before running it."""

from __future__ import annotations

import argparse
import logging

from rh_tasks.plugin.errors import CommandError, command

HELP = "check before running whether a suite's tasks can show an effect after Holm correction"
DESCRIPTION = (
    "Build every task's documents as the suite would (no model weights are loaded, only the "
    "tokenizer), count the items and the contexts they share, and say for each task the smallest p-value "
    "its exact tests could give, before and after Holm correction over the questions the suite declares "
    "(per task: each contrast of retrieval against random heads, and each control against the unmasked run), "
    "and how many contexts (and items) an effect of the given size needs. Also checks the number of random "
    "seeds. Exits 1 when some task, or the random control, cannot reach significance."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite_file", metavar="FILE.yaml", help="the suite config (see task_configs/suites/)")
    parser.add_argument(
        "--effect",
        type=float,
        default=20.0,
        metavar="POINTS",
        help="effect to size the design for, in points of a [0, 1] score (default: 20); planned at 80%% power "
        "with the worst-case spread of such scores",
    )


@command(ValueError, OSError)  # SuiteConfigError is a ValueError
def main(args: argparse.Namespace) -> int:
    from rh_tasks.plugin.registration import register

    from .config import load_suite
    from .plan import check_design, describe, task_designs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.effect <= 100:
        raise CommandError(f"--effect {args.effect} must be between 0 and 100 points.")
    register()
    config = load_suite(args.suite_file)
    lm_eval_logger = logging.getLogger("lm_eval")
    level = lm_eval_logger.level
    lm_eval_logger.setLevel(logging.ERROR)  # its notes on task metadata are noise here
    try:
        plan = check_design(config, task_designs(config), effect=args.effect / 100)
    finally:
        lm_eval_logger.setLevel(level)
    print(
        f"{args.suite_file}: {plan.family_size} questions corrected together (Holm): per task, each contrast and "
        "each control against the unmasked run; "
        f"{plan.seeds} random seed{'s' if plan.seeds != 1 else ''}, alpha = 0.05."
    )
    lines = describe(plan)
    for problem, sentence in lines:
        print(("PROBLEM " if problem else "ok      ") + sentence)
    return 1 if any(problem for problem, _ in lines) else 0
