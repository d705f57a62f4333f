"""``rh-eval report RUN_DIR...``: compare masked runs with the unmasked run and write report.{md,json,html}."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rh_tasks.plugin.errors import CommandError, command

from . import stats
from .render import write_report
from .runs import ReportInputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="paired statistics, leaderboards and heatmaps from lm-eval output folders",
        description="Compare every masked condition with the unmasked run of the same model, item by item, and "
        "write report.md, report.json and a self-contained report.html. Works on any folders written by "
        "lm_eval --output_path DIR --log_samples (rh-masked or plain hf runs); a run without masking is the "
        "baseline. Runs of several models give a cross-model leaderboard.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="folders searched recursively for results_<date>.json with samples_<task>_<date>.jsonl beside them",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the report files (default: RUN_DIR when exactly one is given)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the bootstrap and Monte Carlo permutation draws; same seed, same numbers",
    )
    parser.add_argument(
        "--n-resamples",
        type=int,
        default=stats.N_RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples and Monte Carlo sign flips per comparison (default: {stats.N_RESAMPLES})",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=stats.CONFIDENCE,
        metavar="LEVEL",
        help=f"confidence level of the intervals (default: {stats.CONFIDENCE})",
    )
    parser.add_argument(
        "--headline-k",
        type=int,
        default=None,
        metavar="K",
        help="K whose results the findings and cross-model ranking describe (default: the K with "
        "the most random-head seeds, the smallest on ties)",
    )
    parser.set_defaults(func=main)


@command(ReportInputError, OSError)
def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = args.output_dir
    if output is None:
        if len(args.run_dirs) != 1:
            raise CommandError("Several RUN_DIRs were given; choose where the report goes with --output-dir DIR.")
        output = Path(args.run_dirs[0])
    files = write_report(
        args.run_dirs,
        output,
        seed=args.seed,
        n_resamples=args.n_resamples,
        confidence=args.confidence,
        headline_k=args.headline_k,
    )
    for paragraph in (p for model in files.report["models"] for p in model["statements"]):
        print(paragraph, end="\n\n")
    print(f"Wrote {files.markdown}, {files.json} and {files.html}")
    return 0
