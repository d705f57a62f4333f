"""Detection cost on the embedded model: overhead over plain generation, speed-up over the eager reference, memory.

One run, on the same samples, prints:

1. time per sample of ``rh-eval detect``'s fast path / plain greedy generation of the same tokens (SDPA, same
   stop tokens, so greedy decoding yields identical tokens), the median of ``--rounds`` interleaved rounds, and
   the median per length (1K and 2K tokens) in one line, of wall time and of process CPU time (the steadier
   of the two on a shared machine);
2. time and peak memory of the fast path / the reference-style implementation (eager generation, then one
   teacher-forced eager pass with ``output_attentions=True``) at 1K and 2K tokens;
3. time per sample of all four score definitions from one pass / the default ``set`` alone (the extra cost of
   HeadKV's top-k mass and of the query-focused score's null-question prefill);
4. peak memory of the fast path at 2K, 4K and 8K tokens with a short decode, to show linear growth.

Peak memory is the process's peak resident set size (``VmHWM`` in ``/proc/self/status``), reset before each
measurement by writing ``5`` to ``/proc/self/clear_refs`` (Linux). It counts every CPU allocation, torch's
included (tracemalloc sees only Python objects), minus the resident size just before the measurement, so it is
the extra memory the measured call needed. The script re-executes itself with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed, so freed tensors go back to the OS and one phase's memory cannot hide the next
one's peak.
The machine may be shared: run with ``OMP_NUM_THREADS`` set to the cores you own, and read ratios (measured
back to back on the same sample) rather than absolute times.

    .venv/bin/python benchmarks/bench_detection.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from functools import partial

import torch
from peak_memory import measure, measure_cpu

from rh_tasks.detection.attention_probe import attention_probe
from rh_tasks.detection.definitions import DEFINITIONS
from rh_tasks.detection.detect import score_batch, stop_token_ids
from rh_tasks.detection.prompts import build_samples
from rh_tasks.detection.reference import reference_detect
from rh_tasks.detection.source import load_model


def fast(model, tokenizer, sample, max_new_tokens, stop_ids, definitions=("set", "multiset")):
    with attention_probe(model) as probe:
        return score_batch(
            model, tokenizer, [sample], probe, definitions=definitions, max_new_tokens=max_new_tokens, stop_ids=stop_ids
        )[0]


def plain(model, sample, max_new_tokens, stop_ids):
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids, pad_token_id=stop_ids[0]
    )
    with torch.inference_mode():
        return model.generate(input_ids=torch.tensor([sample.prompt_ids]), generation_config=config)


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # large blocks via mmap, returned to the OS when freed
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2, help="needles per length (default 2)")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="decode budget for sections 1-2 (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of section 1 (default 3)")
    parser.add_argument("--quick", action="store_true", help="skip the 4K and 8K memory points")
    args = parser.parse_args()

    model, tokenizer = load_model({}, "cpu", "float32")
    stop_ids = stop_token_ids(tokenizer, model)
    needles = "ginger_tea,rye_bread,lisbon_tram,sailboat_name"
    print(f"SmolLM2-135M-Instruct, fp32, {torch.get_num_threads()} torch threads\n")

    print(
        "length  sample                    tokens  fast s  plain s  fast/plain  ref s  ref/fast  "
        "fast MiB  ref MiB  ref/fast"
    )
    ratios: dict[int, list[float]] = {}
    cpu_ratios: dict[int, list[float]] = {}
    for length in (1024, 2048):
        samples = build_samples(tokenizer, lengths=[length], depths=[50], needles=needles)[: args.samples]
        for sample in samples:
            plain(model, sample, 2, stop_ids)  # warm-up at this length
            job = partial(fast, model, tokenizer, sample, args.max_new_tokens, stop_ids)
            plain_job = partial(plain, model, sample, args.max_new_tokens, stop_ids)
            ours, t_fast, c_fast, m_fast = measure_cpu(job)
            out, t_plain, c_plain, _ = measure_cpu(plain_job)
            rounds, cpu_rounds = [t_fast / t_plain], [c_fast / c_plain]
            for _ in range(args.rounds - 1):  # interleaved, so each ratio compares runs made moments apart
                _, again, c_again, _ = measure_cpu(job)
                _, plain_again, c_plain_again, _ = measure_cpu(plain_job)
                rounds.append(again / plain_again)
                cpu_rounds.append(c_again / c_plain_again)
            ratios.setdefault(length, []).extend(rounds)
            cpu_ratios.setdefault(length, []).extend(cpu_rounds)
            ref, t_ref, m_ref = measure(
                partial(
                    reference_detect, model, tokenizer, sample, max_new_tokens=args.max_new_tokens, stop_ids=stop_ids
                )
            )
            assert ref == ours, f"{sample.sample_id}: the fast path disagrees with the reference"
            tokens = out.shape[1] - len(sample.prompt_ids)
            print(
                f"{len(sample.prompt_ids):>6}  {sample.sample_id:<24}  {tokens:>6}  {t_fast:6.1f}  {t_plain:7.1f}  "
                f"{statistics.median(rounds):10.2f}  {t_ref:5.1f}  {t_ref / t_fast:8.1f}  {m_fast:8.0f}  "
                f"{m_ref:7.0f}  {m_ref / max(m_fast, 1):8.1f}"
            )
    summary = ", ".join(
        f"{length} tokens {statistics.median(r):.3f}x (CPU time {statistics.median(cpu_ratios[length]):.3f}x)"
        for length, r in ratios.items()
    )
    print(f"detection / plain generation, median over samples and rounds: {summary}")

    print("\nAll four definitions from one pass / set alone, same sample, back to back")
    print("length  sample                    set s  all four s  all/set")
    for length in (1024, 2048):
        for sample in build_samples(tokenizer, lengths=[length], depths=[50], needles=needles)[: args.samples]:
            _, t_set, _ = measure(partial(fast, model, tokenizer, sample, args.max_new_tokens, stop_ids, ("set",)))
            _, t_all, _ = measure(
                partial(fast, model, tokenizer, sample, args.max_new_tokens, stop_ids, tuple(DEFINITIONS))
            )
            print(
                f"{len(sample.prompt_ids):>6}  {sample.sample_id:<24}  {t_set:5.1f}  {t_all:10.1f}  "
                f"{t_all / t_set:7.2f}"
            )

    print("\nPeak extra memory of the fast path, 4 new tokens")
    print("length  prompt tokens  MiB  MiB per 1K tokens")
    for length in (2048,) if args.quick else (2048, 4096, 8000):
        (sample,) = build_samples(tokenizer, lengths=[length], depths=[50], needles="ginger_tea")
        _, seconds, mib = measure(partial(fast, model, tokenizer, sample, 4, stop_ids))
        print(f"{length:>6}  {len(sample.prompt_ids):>13}  {mib:4.0f}  {1024 * mib / len(sample.prompt_ids):17.1f}")


if __name__ == "__main__":
    main()
