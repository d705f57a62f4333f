"""Greedy-decode every detection sample under the attention probe and score its heads, resumably.

Every definition asked for comes from the same greedy decode: the copy scores and HeadKV's score from the
decode steps' attention rows, the query-focused score from the prefill's question rows plus one prefill of the
null question (a forward pass, not a generation).

Samples run in batches of similar prompt length (left-padded, as ``generate`` expects). Each finished sample
is appended to a JSONL checkpoint at once, so an interrupted run continues where it stopped; the checkpoint's
first line records the run's settings, and a rerun with other settings is refused rather than mixed in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from model_wrappers.masking.architectures import cache_keyword
from rh_tasks.shared.scoring import rouge1_recall

from .attention_mass import query_focus
from .attention_probe import AttentionProbe, RowTargets, attention_probe
from .copy_events import DEFINITIONS as COPY_DEFINITIONS
from .copy_events import copy_scores
from .definitions import DEFINITIONS
from .prompts import DetectionSample

logger = logging.getLogger(__name__)

ACCEPT_ROUGE = 0.5  # Retrieval_Head keeps samples whose ROUGE-1 recall (x100) exceeds 50


@dataclass(frozen=True)
class SampleResult:
    sample_id: str
    needle_id: str
    length: int
    depth: float
    prompt_tokens: int
    response: str
    rouge1_recall: float
    accepted: bool
    scores: dict[str, list[list[float]]]  # definition -> [num_layers][num_heads]

    @classmethod
    def score(cls, sample: DetectionSample, response: str, scores: dict[str, torch.Tensor]) -> SampleResult:
        """The result of one decoded sample; ``accepted`` if the answer was recalled (ROUGE-1 > 0.5)."""
        recall = rouge1_recall(response, sample.answer)
        return cls(
            sample_id=sample.sample_id,
            needle_id=sample.needle_id,
            length=sample.length,
            depth=sample.depth,
            prompt_tokens=len(sample.prompt_ids),
            response=response,
            rouge1_recall=recall,
            accepted=recall > ACCEPT_ROUGE,
            scores={name: value.tolist() for name, value in scores.items()},
        )


def stop_token_ids(tokenizer, model) -> list[int]:
    """End of turn and newline: the reference stops decoding at the first newline."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for text in ("\n", "\n\n"):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    return sorted(ids)


def _left_pad(samples: list[DetectionSample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s.prompt_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(samples), width), dtype=torch.long)  # [B, T]
    for row, sample in enumerate(samples):
        input_ids[row, width - len(sample.prompt_ids) :] = torch.tensor(sample.prompt_ids)
        mask[row, width - len(sample.prompt_ids) :] = 1
    return input_ids, mask


def _reuses_cache(model) -> bool:
    """Whether the prompt's KV cache can be cut back to the question: not when a layer keeps a sliding window."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return "sliding_attention" not in layer_types
    return not getattr(config, "sliding_window", None)


def _null_attention(model, probe: AttentionProbe, sample: DetectionSample, cache) -> torch.Tensor:
    """``[L, H, n]``: the null question's rows' attention to the span, from a prefill without logits.

    With the decode's ``cache`` (one unpadded sequence), cut back to where the question starts, only the null
    question's tokens are computed, as QRHead does; otherwise the prompt up to the null question is prefilled.
    """
    ids = sample.null_prompt_ids
    target = RowTargets(span=sample.span, question=(sample.question[0], len(ids)))
    with probe.null_question(target), torch.inference_mode():
        if cache is not None:
            cache.crop(sample.question[0] - cache.get_seq_length())
            if cache.get_seq_length() != sample.question[0]:
                raise RuntimeError(f"Cutting the KV cache back to the question left {cache.get_seq_length()} tokens.")
            new = torch.tensor([ids[sample.question[0] :]], device=model.device)
            model(input_ids=new, **{cache_keyword(model): cache}, use_cache=True, logits_to_keep=1)
        else:
            model(input_ids=torch.tensor([ids], device=model.device), use_cache=False, logits_to_keep=1)
    return probe.null_attention().cpu()


def score_batch(
    model, tokenizer, samples, probe: AttentionProbe, *, definitions=COPY_DEFINITIONS, max_new_tokens: int, stop_ids
) -> list[SampleResult]:
    """Generate greedily for one batch and score every sample's heads under ``definitions`` from the probe."""
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    input_ids, mask = _left_pad(samples, pad_id)
    device = model.device
    focus = "query_focus" in definitions
    keep_cache = focus and len(samples) == 1 and _reuses_cache(model)
    paddings = [input_ids.shape[1] - len(s.prompt_ids) for s in samples]
    probe.reset(
        [
            RowTargets(
                span=(s.span[0] + pad, s.span[1] + pad),
                question=(s.question[0] + pad, s.question[1] + pad) if focus else None,
            )
            for s, pad in zip(samples, paddings)
        ],
        top_k_mass="retrieval_reasoning" in definitions,
    )
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
        return_dict_in_generate=keep_cache,
    )
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=config
        )
    cache = None
    if keep_cache:  # transformers 5.24 renamed the output's past_key_values to cache
        cache = output["cache"] if "cache" in output.keys() else output["past_key_values"]
        output = output.sequences
    new = output[:, input_ids.shape[1] :].cpu()  # [B, steps]
    positions = probe.positions().cpu()  # [steps, L, B, H]
    if positions.shape[0] != new.shape[1]:
        raise RuntimeError(f"The probe saw {positions.shape[0]} forward passes for {new.shape[1]} generated tokens.")

    mass = probe.top_k_mass().cpu() if "retrieval_reasoning" in definitions else None  # [steps, L, B, H]
    question = [q.cpu() for q in probe.question_attention()] if focus else None  # per row [L, H, n]

    results = []
    stops = torch.tensor(stop_ids)
    for row, sample in enumerate(samples):
        tokens = new[row]
        stopped = torch.isin(tokens, stops).nonzero()
        steps = int(stopped[0]) + 1 if len(stopped) else len(tokens)  # the stop token's step counts, never copies
        copies = copy_scores(
            positions[:steps, :, row, :] - paddings[row],
            tokens[:steps],
            torch.tensor(sample.prompt_ids),
            sample.span,
        )
        scores = {}
        for name in definitions:
            if name in COPY_DEFINITIONS:
                scores[name] = copies.get(name)
            elif name == "retrieval_reasoning":  # HeadKV stops decoding after as many steps as the answer has tokens
                scores[name] = mass[: min(steps, sample.span[1] - sample.span[0]), :, row, :].sum(0)
            else:
                scores[name] = query_focus(question[row], _null_attention(model, probe, sample, cache))
        response = tokenizer.decode(tokens[: steps - 1 if len(stopped) else steps], skip_special_tokens=True)
        results.append(SampleResult.score(sample, response, scores))
    return results


class CheckpointMismatchError(ValueError):
    """The checkpoint beside the output holds an interrupted run made otherwise; resuming would mix the two."""


def read_checkpoint(path: Path, settings: dict, definitions=COPY_DEFINITIONS) -> list[SampleResult]:
    """Finished samples of an interrupted run with the same settings and definitions; [] if there is none."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return []
    header = json.loads(lines[0]).get("settings")
    if header != settings:
        differ = sorted(key for key in {*(header or {}), *settings} if (header or {}).get(key) != settings.get(key))
        raise CheckpointMismatchError(
            f"{path} holds an interrupted run with other settings ({', '.join(differ)} differ); pass --force to "
            "start over, or choose another --output."
        )
    results = []
    for line in lines[1:]:
        try:
            results.append(SampleResult(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):  # a line cut short by the interruption
            logger.warning("Ignoring an incomplete line in %s", path)
    other = {name for r in results for name in r.scores} ^ set(definitions)
    if results and other:
        raise CheckpointMismatchError(
            f"{path} holds an interrupted run that scored other definitions than {', '.join(definitions)}; pass "
            "--force to start over, or choose another --output."
        )
    return results


def detect(
    model,
    tokenizer,
    samples: list[DetectionSample],
    *,
    settings: dict,
    definitions=COPY_DEFINITIONS,
    checkpoint: Path | None = None,
    batch_size: int = 1,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> list[SampleResult]:
    """Score every sample under ``definitions``, skipping those already in ``checkpoint`` and appending new ones."""
    from tqdm.auto import tqdm

    unknown = set(definitions) - set(DEFINITIONS)
    if unknown:
        raise ValueError(f"Unknown score definitions {sorted(unknown)}; choose from {', '.join(DEFINITIONS)}.")
    done = {r.sample_id: r for r in read_checkpoint(checkpoint, settings, definitions)} if checkpoint else {}
    if done:
        logger.info("Resuming: %d of %d samples already scored in %s", len(done), len(samples), checkpoint)
    todo = [s for s in samples if s.sample_id not in done]
    stop_ids = stop_token_ids(tokenizer, model)
    handle = None
    if checkpoint is not None:
        fresh = not done and not (checkpoint.is_file() and checkpoint.stat().st_size)
        handle = open(checkpoint, "w" if fresh else "a", encoding="utf-8")
        if fresh:
            handle.write(json.dumps({"settings": settings}) + "\n")
    try:
        with (
            attention_probe(model) as probe,
            tqdm(total=len(samples), initial=len(done), desc="detect", disable=not progress) as bar,
        ):
            for first in range(0, len(todo), batch_size):
                batch = todo[first : first + batch_size]
                for result in score_batch(
                    model,
                    tokenizer,
                    batch,
                    probe,
                    definitions=definitions,
                    max_new_tokens=max_new_tokens,
                    stop_ids=stop_ids,
                ):
                    done[result.sample_id] = result
                    if handle is not None:
                        handle.write(json.dumps(asdict(result)) + "\n")
                if handle is not None:
                    handle.flush()
                bar.update(len(batch))
    finally:
        if handle is not None:
            handle.close()
    return [done[s.sample_id] for s in samples]
