"""Scaling out: data parallelism through accelerate, models spread by accelerate's hooks, long contexts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import cpu_offload, disk_offload, dispatch_model
from conftest import REPO_ROOT, tiny_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from model_wrappers import head_output_means, mask_heads
from model_wrappers.lm.rh_masked import RHMaskedLM
from model_wrappers.masking.architectures import decoder

HEADS = [(0, 1), (1, 0), (1, 3)]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_accelerate_launch_runs_rh_masked(tiny_checkpoint, tmp_path):
    """`accelerate launch -m rh_tasks run` is how users get data parallelism; one CPU process exercises it."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "accelerate"), "launch", "--cpu", "--num_processes", "1",
            "-m", "rh_tasks", "run", "--model", "rh-masked",
            "--model_args", f"pretrained={tiny_checkpoint},heads=[[0,1],[1,2]]",
            "--tasks", "niah", "--limit", "2", "--device", "cpu",
            "--metadata", '{"lengths": [128], "depths": [50]}', "--output_path", str(tmp_path),
        ],
        check=False, capture_output=True, text=True, env=ENV, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert results["n-samples"]["niah"]["effective"] == 2
    assert results["config"]["rh_masking"]["heads"] == [[0, 1], [1, 2]]


def _split_across_cpu_and_disk(model, folder):
    """An explicit device_map: even decoder layers stay in memory, odd ones are loaded from disk per call."""
    body = decoder(model)
    body_name = next(name for name, module in model.named_modules() if module is body)
    device_map = {name: "cpu" for name, _ in model.named_children() if name != body_name.split(".")[0]}
    for name, child in body.named_children():
        if isinstance(child, torch.nn.ModuleList):
            device_map |= {f"{body_name}.{name}.{i}": ("cpu", "disk")[i % 2] for i in range(len(child))}
        else:
            device_map[f"{body_name}.{name}"] = "cpu"
    return dispatch_model(model, device_map=device_map, offload_dir=str(folder))


PLACEMENTS = {
    "cpu_offload": lambda model, folder: cpu_offload(model, execution_device="cpu"),
    "disk_offload": lambda model, folder: disk_offload(model, str(folder), execution_device="cpu"),
    "device_map": _split_across_cpu_and_disk,
}


def _generate(model, ids):
    """Logits of the prefill's last row and of 3 decode steps: ``[4, B, vocab]``."""
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    return torch.stack(out.logits)


def _torch_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_masking_is_unchanged_when_accelerate_places_the_weights(model_type, placement, input_ids, tmp_path):
    """Our hooks run outside accelerate's (weights still on "meta" before, inputs not yet moved) and use only
    the activations they receive, so masking a model whose weights accelerate moves in per module is exact."""
    plain = tiny_model(model_type)
    placed = PLACEMENTS[placement](tiny_model(model_type), tmp_path / "offload")
    assert any(p.device.type == "meta" for p in placed.parameters()), "some weights should live off the model"
    unmasked = _generate(plain, input_ids)
    means = head_output_means(plain, input_ids[:1])
    placed_means = head_output_means(placed, input_ids[:1])
    for layer, mean in means.items():
        torch.testing.assert_close(placed_means[layer], mean, atol=1e-6, rtol=0)
    hooks = _torch_hooks(placed)

    for mode in ("uniform", "zero", "mean"):
        for phase in ("all", "decode"):
            with mask_heads(plain, HEADS, mode=mode, phase=phase, means=means):
                expected = _generate(plain, input_ids)
            with mask_heads(placed, HEADS, mode=mode, phase=phase, means=placed_means):
                got = _generate(placed, input_ids)
            assert (expected - unmasked).abs().max() > 1e-4, f"{mode}/{phase} should change the logits"
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0, msg=f"{mode}/{phase}")
            assert _torch_hooks(placed) == hooks
    torch.testing.assert_close(_generate(placed, input_ids), unmasked, atol=1e-6, rtol=0)


@pytest.mark.parametrize("split", ["auto", "explicit"])
def test_rh_masked_with_parallelize(tiny_checkpoint, tmp_path, split):
    """``parallelize=True`` without GPUs: lm-eval's device_map puts the weights on disk, so every layer is loaded
    by accelerate's hooks; results must equal the model held in memory, for every mask mode."""
    ids = torch.randint(0, 49152, (1, 40), generator=torch.Generator().manual_seed(0))
    device_map = {
        "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
        "model.norm": "cpu", "lm_head": "cpu",
    }  # fmt: skip
    extra = {"device_map": device_map} if split == "explicit" else {}
    for mode in ("uniform", "zero", "mean"):
        common = {"pretrained": tiny_checkpoint, "heads": [[0, 1], [1, 2]], "mode": mode, "dtype": "float32"}
        expected = RHMaskedLM(device="cpu", batch_size=1, **common)
        spread = RHMaskedLM(parallelize=True, batch_size=1, offload_folder=str(tmp_path / mode), **common, **extra)
        assert "disk" in spread.model.hf_device_map.values()
        torch.testing.assert_close(spread._model_call(ids), expected._model_call(ids), atol=1e-6, rtol=0)
        generate = {"max_length": 44, "stop": [], "min_new_tokens": 4}
        assert torch.equal(spread._model_generate(ids, **generate), expected._model_generate(ids, **generate))


class LargestTensor(TorchDispatchMode):
    """Remembers the largest storage any op creates; views and the model's own weights are not new storage."""

    def __init__(self, model):
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in self.known:
                self.nbytes = max(self.nbytes, tensor.untyped_storage().nbytes())
        return out


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from model_wrappers.sources.gguf_cache import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def long_llama(tokenizer):
    """A tiny random Llama with the embedded model's vocabulary and positions for 32K tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=32768 + 64,
        tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()


def test_detection_at_16k_tokens_stays_linear(long_llama, tokenizer):
    """No detection intermediate is [T, T], under every score definition: the largest one grows with T, not T^2
    (a bool [T, T] mask alone would be T * T bytes)."""
    from rh_tasks.detection.attention_probe import attention_probe
    from rh_tasks.detection.definitions import DEFINITIONS
    from rh_tasks.detection.detect import score_batch, stop_token_ids
    from rh_tasks.detection.prompts import build_samples

    definitions = tuple(DEFINITIONS)

    stop_ids = stop_token_ids(tokenizer, long_llama)
    largest = {}
    for length in (8192, 16384):
        (sample,) = build_samples(tokenizer, lengths=[length], depths=[50], needles="ginger_tea")
        with attention_probe(long_llama) as probe, LargestTensor(long_llama) as trace:
            (result,) = score_batch(
                long_llama, tokenizer, [sample], probe, definitions=definitions, max_new_tokens=2, stop_ids=stop_ids
            )
        tokens = len(sample.prompt_ids)
        assert result.prompt_tokens == tokens and set(result.scores) == set(definitions)
        assert all(np.shape(scores) == (2, 4) for scores in result.scores.values())
        assert trace.nbytes < tokens * tokens
        largest[tokens] = trace.nbytes
    (short, short_bytes), (long, long_bytes) = sorted(largest.items())
    assert long_bytes / short_bytes < 1.2 * long / short


def test_masked_generation_at_32k_tokens_stays_linear(long_llama, tokenizer):
    """niah's model side: rh-masked's prefill + decode of a 32K-token prompt keeps SDPA's mask-free causal path."""
    tokens = 32768
    lm = RHMaskedLM(pretrained=long_llama, tokenizer=tokenizer, batch_size=1, heads=[[0, 1], [1, 2]])
    ids = torch.randint(100, len(tokenizer), (1, tokens), generator=torch.Generator().manual_seed(0))
    with LargestTensor(long_llama) as trace:
        out = lm._model_generate(ids, max_length=tokens + 2, stop=[], min_new_tokens=2)
    assert out.shape == (1, tokens + 2)
    assert trace.nbytes < tokens * tokens


@pytest.mark.parametrize("case", ["eager attention", "padded batch"])
def test_the_trace_sees_a_quadratic_tensor(long_llama, case):
    """The traces above can fail: eager attention weights, or the [T, T] mask transformers builds for a padded
    batch under SDPA, are caught at once."""
    tokens = 1024
    ids = torch.randint(100, 1000, (1, tokens), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if case == "padded batch":
        mask[0, 0] = 0
    else:
        long_llama.set_attn_implementation("eager")
    try:
        with torch.no_grad(), LargestTensor(long_llama) as trace:
            long_llama(ids, attention_mask=mask, logits_to_keep=1)
    finally:
        long_llama.set_attn_implementation("sdpa")
    assert trace.nbytes >= tokens * tokens


def test_niah_builds_32k_token_prompts(tokenizer):
    """The packaged haystack (about 22K tokens) is repeated at paragraph boundaries to fill longer contexts."""
    from rh_tasks.niah.task import build_grid, doc_to_text

    (doc,) = build_grid(
        tokenizer, lengths=[32768], depths=[50], needles=["sf_sandwich"], haystack="time_machine",
        shuffle_seed=0, limit=32768 + 32,
    )  # fmt: skip
    prompt_tokens = len(tokenizer(doc_to_text(doc), add_special_tokens=False)["input_ids"])
    assert abs(prompt_tokens - 32768) <= 16
    assert doc["context"].count(doc["needle"]) == 1
