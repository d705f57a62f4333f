"""``rh-eval suite FILE.yaml``: run every condition of a suite, resumably, and write the report."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil

from model_wrappers.condition import MEMORY_GB
from rh_tasks.plugin.errors import CommandError, command

logger = logging.getLogger(__name__)


HELP = "run a whole none / retrieval / random experiment from one YAML file and write its report"
DESCRIPTION = (
    "Run every task of the suite under each masking condition (none, retrieval heads at each K, "
    "random heads at each K and seed) with lm-eval, then write report.md, report.json and report.html. "
    "A rerun resumes: complete conditions are skipped, interrupted ones are redone. "
    "Examples ship in rh-eval's task_configs/suites/."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "suite_file", metavar="FILE.yaml", help="the suite config (see task_configs/suites/default.yaml)"
    )
    parser.add_argument("--output-dir", metavar="DIR", help="override the suite's output_dir")
    parser.add_argument(
        "--force", action="store_true", help="discard results in the output folder that came from a different config"
    )
    parser.add_argument("--no-report", action="store_true", help="run the conditions but do not write the report")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every log line of rh-eval and lm-eval (by default lm-eval's INFO lines are held back and each of "
        "its warnings shows once)",
    )
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="compute every condition on its own instead of prefilling each prompt once for all of them (same "
        "results, slower; for comparison and debugging)",
    )
    parser.add_argument(
        "--memory-gb",
        type=float,
        default=MEMORY_GB,
        metavar="GB",
        help="memory the conditions evaluated together may take for their KV caches; more conditions than fit "
        f"run in several batches (default {MEMORY_GB:g})",
    )


@command(ValueError, OSError)  # SuiteConfigError is a ValueError, SuiteStateError a RuntimeError raised below
def main(args: argparse.Namespace) -> int:
    from rh_tasks.engines.environment import EngineEnvError
    from rh_tasks.engines.server import EngineStartError
    from rh_tasks.plugin.registration import register

    from .config import load_suite
    from .runner import SuiteStateError, run_suite, write_suite_report
    from .summary import runs_only, summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    register()
    try:
        config = load_suite(args.suite_file)
        if args.output_dir:
            config = dataclasses.replace(config, output_dir=args.output_dir)
        out = run_suite(
            config,
            force=args.force,
            write_report=False,
            one_by_one=args.one_by_one,
            memory_gb=args.memory_gb,
            verbose=args.verbose,
        )
    except (SuiteStateError, EngineEnvError, EngineStartError) as err:
        raise CommandError(str(err)) from None
    except KeyboardInterrupt:
        logger.error(
            "Interrupted. Finished conditions are kept; the unfinished one is discarded when the same command "
            "is run again, which resumes the suite."
        )
        return 130
    print(f"Suite complete: {out}")
    print(runs_only(out) if args.no_report else summary(write_suite_report(out), shutil.get_terminal_size().columns))
    return 0
