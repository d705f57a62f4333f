"""Throughput of the default suite's ``phase: all`` conditions on three engines, side by side in one run.

The same suite (``task_configs/suites/default.yaml`` with ``masking.phase: all``; ``--seeds`` random seeds, 1 by
default, so none, retrieval@5 and random@5) runs three times, back to back:

- ``rh-masked``: the hooks, every condition from one shared prefill per prompt;
- ``hf``: each condition exported, then loaded by lm-eval's ``hf`` backend in this process;
- ``vllm``: each condition exported, served by ``vllm serve`` from the vLLM environment, evaluated over HTTP.

Per engine it prints the wall time per condition (exports and vLLM's start included), the evaluation time per
condition, and tokens per second: every token lm-eval asked the engine to read or write (each request's
context, continuation and generated text, counted with the model's tokenizer) over the evaluation time. It also
prints whether the three engines gave the same answers. The machine's load average is printed before and after:
on a shared machine, run it when the load is low. Threads are explicit: torch uses ``--threads`` in this
process; vLLM's CPU build binds its one worker to one core and keeps the other for its scheduler and server.

    python benchmarks/bench_engines.py [--seeds 1] [--threads 2] [--limit N] [--skip TASK] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from rh_tasks.plugin.registration import register, task_configs_dir
from rh_tasks.suite import parse_suite, run_suite
from rh_tasks.suite.identity import compare_samples, suite_conditions

ENGINES = (None, "hf", "vllm")  # None: rh-masked's hooks


def _config(seeds: int, limit: int | None, skip: list[str], output: Path, engine: str | None):
    data = yaml.safe_load((task_configs_dir() / "suites" / "default.yaml").read_text())
    data["tasks"] = [task for task in data["tasks"] if task["task"] not in skip]
    data["masking"]["phase"] = "all"
    data["conditions"]["random"]["seeds"] = list(range(seeds))
    data |= {"output_dir": str(output), "engine": engine}
    if limit:
        data["tasks"] = [{**task, "limit": min(task.get("limit") or limit, limit)} for task in data["tasks"]]
    return parse_suite(data)


def _tokens(out: Path, tokenizer) -> int:
    """Tokens of every request's context and continuation, and of every generated answer."""
    total = 0
    for path in out.rglob("samples_*.jsonl"):
        for row in map(json.loads, path.read_text().splitlines()):
            for argument in (row.get("arguments") or {}).values():
                texts = [argument.get("arg_0"), argument.get("arg_1")]
                total += sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts if isinstance(t, str))
            for response in row.get("resps") or []:
                if response and isinstance(response[0], str):
                    total += len(tokenizer(response[0], add_special_tokens=False).input_ids)
    return total


def _evaluation_seconds(out: Path) -> float:
    return sum(json.loads(p.read_text())["seconds"] for p in out.glob("conditions/*/condition.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="random seeds of the default suite to keep (1-10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in this process")
    parser.add_argument("--limit", type=int, help="cap every task at this many items, for a quicker measurement")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="TASK", help="leave a task out (mmlu: 57 items whatever --limit)"
    )
    parser.add_argument("--output", type=Path, help="keep the suites' folders here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    register()
    from transformers import AutoTokenizer

    from model_wrappers.sources.gguf_cache import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as scratch:
        root = args.output or Path(scratch)
        rows, outputs = [], {}
        for engine in ENGINES:
            name = engine or "rh-masked"
            config = _config(args.seeds, args.limit, args.skip, root / name, engine)
            start = time.perf_counter()
            out = run_suite(config, write_report=False)
            wall = time.perf_counter() - start
            outputs[name] = out
            n, evaluation, tokens = len(config.conditions), _evaluation_seconds(out), _tokens(out, tokenizer)
            if engine is None:  # one shared prefill for all conditions: the time is the run's, not per condition
                evaluation = json.loads((out / "timing.json").read_text())["seconds"]
            rows.append((name, n, wall / n, evaluation / n, tokens / evaluation, wall))
            print(f"  {name}: {wall:.0f} s for {n} conditions", flush=True)
        reference = suite_conditions(outputs["rh-masked"])
        agreement = {}
        for name in ("hf", "vllm"):
            other = suite_conditions(outputs[name])
            agreement[name] = sum(len(compare_samples(reference[c][1], other[c][1], tolerance=1e-3)) for c in reference)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"\n{'engine':<10} {'conditions':>10} {'s/condition':>12} {'eval s/cond':>12} {'tokens/s':>9} {'wall s':>7}")
    for name, n, per, evaluation, rate, wall in rows:
        print(f"{name:<10} {n:>10} {per:>12.1f} {evaluation:>12.1f} {rate:>9.0f} {wall:>7.0f}")
    base = rows[0][2]
    print("\nwall time per condition relative to rh-masked: " + ", ".join(f"{r[0]} {r[2] / base:.2f}x" for r in rows))
    print("differences from rh-masked's samples (log-likelihoods within 1e-3 nats): " + str(agreement))


if __name__ == "__main__":
    main()
