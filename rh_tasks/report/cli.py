"""``rh-eval report RUN_DIR...``: compare masked runs with the unmasked run and write report.{md,json,html}
with the headline figure forest.svg beside them."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
from pathlib import Path

from rh_tasks.plugin.errors import command

from .render import write_report
from .runs import ReportInputError
from .schema import Settings

HELP = "paired statistics, leaderboards and heatmaps from lm-eval output folders"
DESCRIPTION = (
    "Compare every masked condition with the unmasked run of the same model, item by item, and "
    "write report.md (with its headline figure forest.svg), report.json and a self-contained report.html. "
    "Works on any folders written by lm_eval --output_path DIR --log_samples (rh-masked or plain hf runs); a "
    "run without masking is the baseline. Runs of several models give a cross-model leaderboard."
)

# How each field of Settings is given on the command line (--n-resamples, ...); defaults are the fields'.
_SETTING_FLAGS = {
    "seed": (int, "N", "seed of the Monte Carlo sign flips; same seed, same numbers"),
    "n_resamples": (
        int,
        "N",
        "Monte Carlo sign flips per comparison, where exact enumeration is too large (default: %(default)s)",
    ),
    "confidence": (float, "LEVEL", "confidence level of the intervals (default: %(default)s)"),
    "headline_k": (
        int,
        "K",
        "K whose results the findings, leaderboard and cross-model ranking describe (default: the K with the most "
        "random-head seeds, the smallest on ties); the answers and the forest plot always cover every K",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        help="where to write the report files (default: a new folder report/ in RUN_DIR, or in the folder holding "
        "all RUN_DIRs; report-2/, report-3/, ... when that one already holds a report, so none is overwritten)",
    )
    for setting in dataclasses.fields(Settings):
        kind, metavar, help_text = _SETTING_FLAGS[setting.name]
        flag = "--" + setting.name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=setting.default, metavar=metavar, help=help_text)


@command(ReportInputError, OSError)
def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = args.output_dir
    if output is None:
        output = default_output_dir(args.run_dirs)
    settings = {setting.name: getattr(args, setting.name) for setting in dataclasses.fields(Settings)}
    files = write_report(args.run_dirs, output, **settings)
    for paragraph in (p for model in files.report.models for p in model.statements):
        print(paragraph, end="\n\n")
    figure = f" (with {files.forest.name})" if files.forest else ""
    print(f"Wrote {files.markdown}{figure}, {files.json} and {files.html}")
    return 0


REPORT_FILES = ("report.md", "report.json", "report.html", "forest.svg")


def default_output_dir(run_dirs: list[str]) -> Path:
    """``report/`` in the one RUN_DIR or the folder holding them all, numbered on so no report is overwritten."""
    folders = [Path(d).absolute() for d in run_dirs]
    base = folders[0] if len(folders) == 1 else Path(os.path.commonpath(folders))
    if base == Path(base.anchor):  # nothing shared but the filesystem root
        base = Path.cwd()
    for number in itertools.count(1):
        candidate = base / ("report" if number == 1 else f"report-{number}")
        if not any((candidate / name).exists() for name in REPORT_FILES):
            return candidate
