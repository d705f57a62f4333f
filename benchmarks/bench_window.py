"""Wall-time overhead of windowed heads against the plain model, measured side by side in one run.

A random-weight Llama-shaped model (or ``--pretrained``) runs the same inputs plain and under
:func:`window_heads`, in interleaved rounds, so each ratio compares runs made moments apart under the same machine
load. Three jobs per length: one forward pass over the prompt (``phase=all``: every position windowed), a greedy
generation (``phase=decode``: the prompt read whole, its last position and every new token windowed), and
``--rows`` rows decoded from one cached prompt, each row windowing a different head set under
:func:`window_rows`, as ``rh-eval suite`` continues the conditions it evaluates together (plain decodes the same
rows unwindowed). Under SDPA kept heads run SDPA's causal kernel, windowed heads a banded one, and decode steps
one call with a per-head mask; under eager a per-head mask is built. Lengths above 2048 tokens run
``--long-rounds`` rounds, so that the 8K point stays short on a shared machine.
The ratio of process CPU times is printed beside the wall-time ratio: on a shared machine it is the steadier
one. With ``--memory`` each job's peak extra resident memory (see ``peak_memory.py``) is printed too; the
script then re-executes itself with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed, so that freed blocks go back to
the OS and one job's memory cannot hide the next one's peak, which makes every large allocation slower: read
times from a run without ``--memory``.

    python benchmarks/bench_window.py [--lengths 256 1024 2048 8192] [--rounds 5] [--long-rounds 2] [--memory]
        [--attn sdpa] [--pretrained PATH] [--rows 12]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from functools import partial

import torch
import transformers
from peak_memory import measure_cpu

from model_wrappers import HeadGeometry, MaskingAudit, window_heads, window_rows
from model_wrappers.lm.engine import _repeat
from model_wrappers.masking.architectures import cache_keyword


def _model(pretrained: str | None, attn: str) -> transformers.PreTrainedModel:
    if pretrained:
        return transformers.AutoModelForCausalLM.from_pretrained(pretrained, attn_implementation=attn).eval()
    config = transformers.LlamaConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=16384,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", help="model folder or hub id (default: a random 4-layer Llama)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048, 8192])
    parser.add_argument("--new-tokens", type=int, default=16, help="greedy tokens generated per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--memory", action="store_true", help="measure peak memory (slows every allocation)")
    parser.add_argument("--long-rounds", type=int, default=2, help="rounds for lengths above 2048 tokens")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--sink", type=int, default=4)
    parser.add_argument("--kept", type=float, default=0.1, help="fraction of heads kept whole")
    parser.add_argument("--rows", type=int, default=12, help="rows decoded together, one head set each")
    args = parser.parse_args()
    if args.memory and "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # large blocks via mmap, freed to the OS
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})

    model = _model(args.pretrained, args.attn)
    geometry = HeadGeometry.from_config(model.config)
    heads = [(layer, head) for layer in range(geometry.num_layers) for head in range(geometry.num_heads)]
    kept = random.Random(0).sample(heads, max(1, int(args.kept * len(heads))))
    rows_kept = [random.Random(row).sample(heads, max(1, int(args.kept * len(heads)))) for row in range(args.rows)]
    keyword = cache_keyword(model)
    print(
        f"{geometry.num_layers} layers x {geometry.num_heads} heads ({geometry.num_kv_heads} KV), {args.attn}; "
        f"{len(kept)} heads kept, window {args.window}, sink {args.sink}; torch threads {torch.get_num_threads()}"
    )

    for length in args.lengths:
        ids = torch.randint(3, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))

        def forward(windowed: bool, ids: torch.Tensor = ids) -> None:
            with window_heads(model, kept if windowed else heads, window=args.window, sink=args.sink):
                model(ids)

        def generate(windowed: bool, ids: torch.Tensor = ids) -> None:
            kept_heads = kept if windowed else heads
            with window_heads(model, kept_heads, window=args.window, sink=args.sink, phase="decode"):
                model.generate(
                    ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                    pad_token_id=0,
                )  # fmt: skip

        prefix = transformers.DynamicCache(config=model.config)
        with torch.no_grad():
            model(ids, **{keyword: prefix}, use_cache=True)

        def rows(windowed: bool, ids: torch.Tensor = ids, prefix=prefix) -> None:
            cache, token = _repeat(prefix, args.rows), ids[:, -1:].expand(args.rows, 1)
            audits = [MaskingAudit() for _ in range(args.rows)]
            kept_rows = rows_kept if windowed else [heads] * args.rows
            with window_rows(model, kept_rows, window=args.window, sink=args.sink, fresh=1, audits=audits):
                for _ in range(args.new_tokens):
                    token = model(token, **{keyword: cache}, use_cache=True).logits[:, -1:].argmax(-1)

        jobs = (("forward", forward), (f"generate {args.new_tokens}", generate), (f"{args.rows} rows decode", rows))
        for name, job in jobs if args.rows else jobs[:2]:
            times: dict[bool, list[float]] = {False: [], True: []}
            cpu: dict[bool, list[float]] = {False: [], True: []}
            peaks: dict[bool, float] = {False: 0.0, True: 0.0}
            with torch.no_grad():
                job(False), job(True)  # warm-up
                for _ in range(args.rounds if length <= 2048 else args.long_rounds):
                    for windowed in (False, True):
                        _, seconds, cpu_seconds, mib = measure_cpu(partial(job, windowed))
                        times[windowed].append(seconds)
                        cpu[windowed].append(cpu_seconds)
                        peaks[windowed] = max(peaks[windowed], mib)
            ratio = statistics.median(w / p for w, p in zip(times[True], times[False]))
            cpu_ratio = statistics.median(w / p for w, p in zip(cpu[True], cpu[False]))
            memory = f"   peak extra MiB plain {peaks[False]:5.0f}  windowed {peaks[True]:5.0f}" if args.memory else ""
            print(
                f"  {length:5d} tokens  {name:15s} plain {statistics.median(times[False]):7.3f} s   windowed "
                f"{statistics.median(times[True]):7.3f} s   median ratio {ratio:.3f}x (CPU time {cpu_ratio:.3f}x)"
                + memory
            )


if __name__ == "__main__":
    main()
