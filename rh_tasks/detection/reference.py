"""The straightforward way to score heads, kept as the oracle the fast path is tested and benchmarked against.

It generates with eager attention, then runs one teacher-forced eager pass over prompt + generated tokens with
``output_attentions=True`` and reads each step's attention row. That materialises ``[layers, heads, S, S]``
probabilities (quadratic memory), which is why detection does not work this way.
"""

from __future__ import annotations

import torch

from .copy_events import CopyScores, copy_scores
from .detect import SampleResult
from .prompts import DetectionSample


def reference_positions(model, prompt_ids: list[int], generated: list[int]) -> torch.Tensor:
    """``[steps, num_layers, num_heads]`` arg-max attention position of the row that predicted each token."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        ids = torch.tensor([list(prompt_ids) + list(generated[:-1])], device=model.device)  # [1, S]
        with torch.inference_mode():
            attentions = model(ids, output_attentions=True).attentions  # L x [1, H, S, S]
        first = len(prompt_ids) - 1  # the last prompt row predicts the first generated token
        rows = torch.stack([a[0, :, first:, :] for a in attentions])  # [L, H, steps, S]
        return rows.argmax(-1).permute(2, 0, 1).cpu()  # [steps, L, H]
    finally:
        model.set_attn_implementation(original)


def reference_scores(model, sample: DetectionSample, generated: list[int]) -> CopyScores:
    positions = reference_positions(model, sample.prompt_ids, generated)
    return copy_scores(positions, torch.tensor(generated), torch.tensor(sample.prompt_ids), sample.span)


def reference_detect(model, tokenizer, sample: DetectionSample, *, max_new_tokens: int, stop_ids) -> SampleResult:
    """One sample end to end: eager greedy decoding, then the teacher-forced attention pass."""
    from transformers import GenerationConfig

    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(stop_ids), pad_token_id=stop_ids[0]
        )
        with torch.inference_mode():
            output = model.generate(
                input_ids=torch.tensor([sample.prompt_ids], device=model.device), generation_config=config
            )
    finally:
        model.set_attn_implementation(original)
    generated = output[0, len(sample.prompt_ids) :].tolist()
    stopped = generated and generated[-1] in stop_ids
    scores = reference_scores(model, sample, generated)
    response = tokenizer.decode(generated[:-1] if stopped else generated, skip_special_tokens=True)
    return SampleResult.score(sample, response, {"set": scores.set, "multiset": scores.multiset})
