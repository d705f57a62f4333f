"""What the token record costs: teacher-forced GSM8K requests under rh-masked against lm-eval's plain ``hf``.

``gsm8k_cot_nll`` documents ask rh-masked for every token's log-probability, which it computes with its own
scorer (one condition in the engine: under ``phase=decode`` an unmasked pass over the prompt and one masked pass
over the continuation). This times the same requests (the first N questions' two requests each, 8-shot prompt)
through ``loglikelihood`` for ``hf``, ``rh-masked heads=none`` and ``rh-masked`` with K masked heads in both
phases, all on one loaded model in interleaved rounds, and checks that every variant's sums agree with ``hf``'s
where nothing is masked.

    python benchmarks/bench_teacher_forced.py [--questions 8] [--rounds 3] [--k 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from masking_variants import random_heads, wrappers
from transformers import AutoModelForCausalLM, AutoTokenizer

from model_wrappers.lm.rh_masked import RHMaskedLM
from model_wrappers.sources.gguf_cache import embedded_model_dir


def requests(questions: int) -> list[Instance]:
    """The task's own requests for the first ``questions`` documents, as lm-eval builds them."""
    task = TaskManager().load_task_or_group(["gsm8k_cot_nll"])["gsm8k_cot_nll"]
    task.build_all_requests(limit=questions, rank=0, world_size=1)
    return [instance for instance in task.instances]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8, help="GSM8K questions (two requests each)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--k", type=int, default=5, help="heads masked in the masked variants")
    args = parser.parse_args()

    source = str(embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    variants = wrappers(model, tokenizer, random_heads(model, args.k))
    variants[f"K={args.k} decode"] = RHMaskedLM(
        pretrained=model, tokenizer=tokenizer, batch_size=1, heads=random_heads(model, args.k), phase="decode"
    )
    instances = requests(args.questions)
    tokens = sum(len(tokenizer(i.args[1], add_special_tokens=False)["input_ids"]) for i in instances)
    print(
        f"model {source}; {len(instances)} requests, about {tokens} continuation tokens; "
        f"torch threads {torch.get_num_threads()}"
    )

    sums, times = {}, {name: [] for name in variants}
    for name, lm in variants.items():  # warm-up, and the sums to compare
        sums[name] = [ll for ll, _ in lm.loglikelihood(instances, disable_tqdm=True)]
    for _ in range(args.rounds):
        for name, lm in variants.items():
            start = time.perf_counter()
            lm.loglikelihood(instances, disable_tqdm=True)
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["hf"])
    print(f"\nloglikelihood of {len(instances)} requests, {args.rounds} interleaved rounds (median seconds):")
    for name, values in times.items():
        recorded = "token record" if isinstance(variants[name], RHMaskedLM) else "sums only"
        print(
            f"  {name:<14} {statistics.median(values):8.2f} s   {statistics.median(values) / base:5.2f}x hf   "
            f"({recorded})"
        )
    gap = max(abs(a - b) for a, b in zip(sums["hf"], sums["heads=none"]))
    print(f"\nmax |log-likelihood difference|, rh-masked heads=none vs hf: {gap:.2e} nats")


if __name__ == "__main__":
    main()
