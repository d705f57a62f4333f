"""Wall-time overhead of rh-masked against lm-eval's plain ``hf`` model, measured side by side.

All three wrappers share one loaded model, run the same inputs, and are timed in interleaved rounds, so the
ratios are robust to a noisy machine. Goals: heads=none <= 1.02x and K=20 masked heads <= 1.05x of ``hf``. The
masked variants include the per-pass audit (counts and checks in every forward pass); the load-time canary is
outside the timed calls.

    python benchmarks/bench_masking.py [--tokens 1024] [--new-tokens 16] [--rounds 5] [--pretrained PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from masking_variants import random_heads, wrappers
from transformers import AutoModelForCausalLM, AutoTokenizer

from model_wrappers import HeadGeometry
from model_wrappers.sources.gguf_cache import embedded_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--tokens", type=int, default=1024, help="prompt length in tokens")
    parser.add_argument("--new-tokens", type=int, default=16, help="greedy tokens generated per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--k", type=int, default=20, help="heads masked in the masked variant")
    args = parser.parse_args()

    source = args.pretrained or str(embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    geometry = HeadGeometry.from_config(model.config)
    variants = wrappers(model, tokenizer, random_heads(model, args.k), decode=True)
    ids = torch.randint(100, model.config.vocab_size, (1, args.tokens), generator=torch.Generator().manual_seed(0))

    def forward(lm):
        lm._model_call(ids)

    def generate(lm):
        lm._model_generate(ids, max_length=args.tokens + args.new_tokens, stop=[], min_new_tokens=args.new_tokens)

    print(
        f"model {source}; {geometry.num_layers} layers x {geometry.num_heads} heads; "
        f"torch threads {torch.get_num_threads()}"
    )
    for job_name, job in (("prefill forward", forward), (f"generate {args.new_tokens} tokens", generate)):
        times = {name: [] for name in variants}
        for lm in variants.values():  # warm-up
            job(lm)
        for _ in range(args.rounds):
            for name, lm in variants.items():
                start = time.perf_counter()
                job(lm)
                times[name].append(time.perf_counter() - start)
        print(f"\n{job_name} ({args.tokens}-token prompt), {args.rounds} interleaved rounds:")
        for name, values in times.items():
            # Paired per round: each ratio compares runs made seconds apart, under the same machine load.
            ratio = statistics.median(v / b for v, b in zip(values, times["hf"]))
            print(f"  {name:24s} median {statistics.median(values):7.3f} s   median ratio to hf {ratio:.3f}x")


if __name__ == "__main__":
    main()
