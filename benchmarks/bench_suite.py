"""Wall time of a suite with its conditions evaluated together against one by one, measured in one run.

Each suite runs twice on the same machine, back to back: once with ``one_by_one`` (every condition computes its
own prompts) and once with the shared prefill (one prefill per prompt, the conditions as rows of one batch). It
prints the ratio, where the shared run spent its time, the cost model ``1 + c·(N−1)`` single conditions that the
shared run amounts to, and whether both runs report the same (``rh_tasks.suite.identity.differences``: equal
answers and metrics, log-likelihoods within float32 rounding). Goal on the K-sweep (19 conditions): at least 4x.

    python benchmarks/bench_suite.py [--suite task_configs/suites/niah_k_sweep.yaml ...] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

from rh_tasks.plugin.registration import register, task_configs_dir
from rh_tasks.suite import differences, load_suite, run_suite


def _timed(config, folder: Path, one_by_one: bool) -> tuple[float, dict, Path]:
    start = time.perf_counter()
    out = run_suite(dataclasses.replace(config, output_dir=str(folder)), write_report=False, one_by_one=one_by_one)
    return time.perf_counter() - start, json.loads((out / "timing.json").read_text()), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    suites = task_configs_dir() / "suites"
    parser.add_argument(
        "--suite",
        action="append",
        metavar="FILE",
        help="suite file to time (repeatable; default: the shipped niah_k_sweep.yaml and default.yaml)",
    )
    parser.add_argument("--limit", type=int, help="cap every task at this many items, for a quicker measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    register()

    rows = []
    for path in args.suite or [suites / "niah_k_sweep.yaml", suites / "default.yaml"]:
        config = load_suite(path)
        if args.limit:
            tasks = tuple(dataclasses.replace(t, limit=min(t.limit or args.limit, args.limit)) for t in config.tasks)
            config = dataclasses.replace(config, tasks=tasks)
        with tempfile.TemporaryDirectory() as scratch:
            alone, _, alone_out = _timed(config, Path(scratch) / "one_by_one", one_by_one=True)
            together, timing, together_out = _timed(config, Path(scratch) / "together", one_by_one=False)
            mismatches = differences(alone_out, together_out)
        for line in mismatches[:5]:
            logging.warning("%s: %s", Path(path).name, line)
        n = len(config.conditions)
        shared = timing["shared_prefill"]
        cost = together / (alone / n)  # the shared run in single conditions
        rows.append(
            {
                "suite": Path(path).name,
                "conditions": n,
                "phase": config.phase,
                "one_by_one_s": round(alone, 1),
                "together_s": round(together, 1),
                "speedup": round(alone / together, 2),
                "single_conditions": round(cost, 2),
                "c": round((cost - 1) / (n - 1), 3) if n > 1 else None,
                "prefill_s": round(shared["prefill"], 1),
                "rows_s": round(shared["continuation"], 1),
                "other_s": round(timing["seconds"] - shared["prefill"] - shared["continuation"], 1),
                "identical": not mismatches,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    print()
    columns = ["suite", "N", "phase", "one by one", "together", "speedup", "= single conditions", "c in 1+c(N-1)"]
    columns += ["prefill", "rows", "lm-eval etc.", "same answers"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print(
            f"| {r['suite']} | {r['conditions']} | {r['phase']} | {r['one_by_one_s']} s | {r['together_s']} s | "
            f"{r['speedup']}x | {r['single_conditions']} | {r['c']} | {r['prefill_s']} s | {r['rows_s']} s | "
            f"{r['other_s']} s | {'yes' if r['identical'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
