"""Memory and time at long contexts: masked vs unmasked generation and detection, on a SmolLM2-135M-shaped model.

The model has SmolLM2-135M's widths (576 hidden, 9 query heads, 3 KV heads of 64, 1536 MLP, 49152 vocabulary)
with random weights and ``max_position_embeddings`` raised to the longest length, so no download is needed.
Attention cost grows with the square of the length and CPUs are slow, so by default it keeps only
``--layers 2`` of the 30 layers; memory per token per layer and the ratios between conditions do not depend on
depth (``--layers 30`` gives the full model, about 10 minutes per 32K prefill on two cores).

One run prints, for every length:

1. time and peak extra memory of prefill + ``--new_tokens`` greedy steps for lm-eval's ``hf`` model,
   ``rh-masked heads=none``, ``rh-masked`` with K uniform-masked heads, and one detection pass (the attention
   probe over the same prefill and steps), with each condition's ratio to ``hf`` and its memory per token;
2. the KV cache's share of that memory (2 x layers x kv_heads x head_dim x 4 bytes per token in fp32);
3. the largest intermediate each condition created (from a dispatch-mode trace of the prefill at the shortest
   length), to show that none holds a length x length attention or mask;
4. peak memory of a prefill with one left-padding token, where transformers builds an explicit [T, T] mask and
   CPU SDPA turns it into a float [T, T] bias, against the unpadded prefill (SDPA ``is_causal``, no mask).

Peak memory is the process's peak resident set size (``VmHWM``) minus the resident size just before the call,
reset through ``/proc/self/clear_refs`` (Linux), as in ``bench_detection.py``; it counts torch's own
allocations, which tracemalloc cannot see. The script re-executes itself with glibc's ``MALLOC_MMAP_THRESHOLD_``
fixed so that freed tensors go back to the OS and one call's memory cannot hide the next one's peak.

    .venv/bin/python benchmarks/bench_long_context.py [--lengths 8192,16384,32768] [--layers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch
from masking_variants import random_heads, wrappers
from peak_memory import measure
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig

from model_wrappers import HeadGeometry
from model_wrappers.sources.gguf_cache import embedded_model_dir
from rh_tasks.detection.attention_probe import attention_probe

MIB = 2**20


class LargestTensor(TorchDispatchMode):
    """Remembers the largest storage any op creates; views and the model's own weights are not new storage."""

    def __init__(self, model):
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        self.nbytes, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.untyped_storage().data_ptr() in self.known:
                continue
            if tensor.untyped_storage().nbytes() > self.nbytes:
                self.nbytes, self.op = tensor.untyped_storage().nbytes(), str(func)
        return out


def smollm2_shaped(layers: int, max_positions: int):
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=max_positions,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # random weights: always generate every requested token
    return model


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # large blocks via mmap, returned to the OS when freed
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="8192,16384,32768", help="prompt lengths in tokens (comma-separated)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers kept of SmolLM2-135M's 30 (default 2)")
    parser.add_argument("--new_tokens", type=int, default=4, help="greedy decode steps after the prefill (default 4)")
    parser.add_argument("--k", type=int, default=5, help="heads masked (uniform) in the masked condition (default 5)")
    parser.add_argument(
        "--padded_lengths", default="2048,4096,8192", help="lengths of the explicit-mask contrast (section 4)"
    )
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on a model passed as an object
    lengths = sorted(int(n) for n in args.lengths.split(","))
    padded_lengths = sorted(int(n) for n in args.padded_lengths.split(",") if n)

    model = smollm2_shaped(args.layers, max(lengths + padded_lengths) + args.new_tokens)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    geometry = HeadGeometry.from_config(model.config)
    heads = random_heads(model, args.k)
    lms = wrappers(model, tokenizer, heads)
    n = args.new_tokens

    def generate(lm, ids):
        return lm._model_generate(ids, max_length=ids.shape[1] + n, stop=[], min_new_tokens=n)

    def detect(ids):
        config = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        with attention_probe(model) as probe, torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            return probe.positions()  # [steps, layers, 1, heads]

    jobs = {name: (lambda ids, lm=lm: generate(lm, ids)) for name, lm in lms.items()}
    jobs["detection"] = detect
    kv_bytes = 2 * geometry.num_layers * geometry.num_kv_heads * geometry.head_dim * 4  # fp32, per token
    print(
        f"SmolLM2-135M-shaped, random weights, {geometry.num_layers} of 30 layers, fp32, SDPA, "
        f"{torch.get_num_threads()} torch threads; prefill + {n} greedy steps; masked heads {heads}"
    )
    print(f"KV cache: {kv_bytes} bytes/token here, {kv_bytes * 30 // geometry.num_layers} bytes/token at 30 layers\n")

    def ratio(value, reference):  # peak extra memory can measure 0 at short lengths
        return f"{value / reference:5.2f}" if reference else f"{'-':>5}"

    def ids_of(length):
        return torch.randint(100, 49152, (1, length), generator=torch.Generator().manual_seed(length))

    for job in jobs.values():  # warm-up
        job(ids_of(256))

    print("1-2. prefill + decode, per condition (ratios to hf of time and of peak extra memory)")
    print(
        f"{'length':>6}  {'condition':<12}  {'time s':>7}  {'x hf':>5}  {'peak MiB':>8}  {'x hf':>5}  "
        f"{'KiB/token':>9}  {'KV cache MiB':>12}"
    )
    for length in lengths:
        ids = ids_of(length)
        base, outputs = None, {}
        for name, job in jobs.items():
            result, seconds, mib = measure(lambda job=job, ids=ids: job(ids))
            outputs[name] = result
            if name == "detection":
                assert result.shape == (n, geometry.num_layers, 1, geometry.num_heads), result.shape
            base = base or (seconds, mib)
            print(
                f"{length:>6}  {name:<12}  {seconds:7.1f}  {ratio(seconds, base[0])}  {mib:8.0f}  "
                f"{ratio(mib, base[1])}  {1024 * mib / length:9.1f}  {kv_bytes * (length + n) / MIB:12.0f}"
            )
        same = torch.equal(outputs["heads=none"], outputs["hf"])
        print(f"{length:>6}  heads=none generates exactly hf's tokens: {same}")

    print(f"\n3. largest new tensor of one prefill at {lengths[0]} tokens (a [T, T] fp32 tensor is ", end="")
    print(f"{4 * lengths[0] ** 2 / MIB:.0f} MiB)")
    ids = ids_of(lengths[0])
    for name, job in jobs.items():
        with LargestTensor(model) as largest:
            job(ids)
        print(f"{name:<12}  {largest.nbytes / MIB:7.1f} MiB  {largest.op}")

    if padded_lengths:
        print("\n4. prefill peak extra memory without and with one left-padding token (explicit [T, T] mask)")
        print(f"{'length':>6}  {'is_causal MiB':>13}  {'padded MiB':>10}  {'[T, T] fp32 MiB':>15}")
        for length in padded_lengths:
            ids = ids_of(length)
            mask = torch.ones_like(ids)
            padded = mask.clone()
            padded[0, 0] = 0
            with torch.inference_mode():
                _, _, plain = measure(lambda ids=ids, mask=mask: model(ids, attention_mask=mask, logits_to_keep=1))
                _, _, explicit = measure(lambda ids=ids, mask=padded: model(ids, attention_mask=mask, logits_to_keep=1))
            print(f"{length:>6}  {plain:13.0f}  {explicit:10.0f}  {4 * length**2 / MIB:15.0f}")


if __name__ == "__main__":
    main()
