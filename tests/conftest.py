"""Shared fixtures: tiny random-weight models of every supported architecture, built in the test process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

VOCAB = 96
# model_type -> (config class, kwargs): 2 layers, 4 query heads; GQA wherever the architecture has it.
TINY_CONFIGS = {
    "llama": (transformers.LlamaConfig, dict(num_key_value_heads=2, head_dim=16)),
    "mistral": (transformers.MistralConfig, dict(num_key_value_heads=2, head_dim=16, sliding_window=None)),
    "qwen2": (transformers.Qwen2Config, dict(num_key_value_heads=2)),
    "mixtral": (transformers.MixtralConfig, dict(num_key_value_heads=2, head_dim=16, num_local_experts=2)),
    "gemma": (transformers.GemmaConfig, dict(num_key_value_heads=1, head_dim=16)),
    "qwen3": (transformers.Qwen3Config, dict(num_key_value_heads=2, head_dim=16)),
    "gemma3_text": (
        transformers.Gemma3TextConfig,
        dict(num_key_value_heads=1, head_dim=32, sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
    ),
    "phi3": (transformers.Phi3Config, dict(num_key_value_heads=2, pad_token_id=0)),
    "gpt2": (transformers.GPT2Config, {}),
}


def tiny_model(model_type: str, attn_implementation: str = "sdpa", seed: int = 0) -> transformers.PreTrainedModel:
    config_cls, extra = TINY_CONFIGS[model_type]
    if model_type == "gpt2":
        config = config_cls(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256)
    else:
        config = config_cls(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            **extra,
        )
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    # Random init leaves tiny attention logits; sharpen them so that masking a head visibly changes the output.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ("q_proj", "k_proj", "c_attn", "qkv_proj")) and param.dim() == 2:
                param.mul_(8.0)
    return model.eval()


def kv_cache_in(values) -> transformers.Cache | None:
    """The KV cache among a call's arguments or outputs, found by type: releases rename its keyword."""
    return next((v for v in values if isinstance(v, transformers.Cache)), None)


@pytest.fixture(params=sorted(TINY_CONFIGS))
def model_type(request) -> str:
    return request.param


@pytest.fixture
def input_ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A tiny random Llama saved like any local checkpoint, with the embedded model's tokenizer."""
    import shutil

    from model_wrappers.sources.gguf_cache import embedded_model_dir

    path = tmp_path_factory.mktemp("tiny-llama")
    source = embedded_model_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, path / name)
    model = tiny_model("llama")
    model.resize_token_embeddings(49152)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of the packaged task data that a test may damage."""
    import shutil

    from rh_tasks.shared.task_data import TASK_DATA

    copy = tmp_path / "data"
    shutil.copytree(TASK_DATA.folder, copy)
    monkeypatch.setattr(TASK_DATA, "folder", copy)
    monkeypatch.setattr(TASK_DATA, "manifest_path", copy / "SHA256SUMS")
    TASK_DATA.manifest.cache_clear()
    TASK_DATA.path.cache_clear()
    yield copy
    TASK_DATA.manifest.cache_clear()
    TASK_DATA.path.cache_clear()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The report of report_runs.suite, written once for the tests that only read it: (runs folder, files)."""
    from report_runs import FAST, suite

    from rh_tasks.report import write_report

    root = tmp_path_factory.mktemp("suite")
    folders = suite(root)
    files = write_report(folders, root / "report", **FAST)
    return root, files


SUITE_BASE = {
    "tasks": [
        {
            "task": "niah",
            "limit": 2,
            "metadata": {"lengths": [128], "depths": [50], "needles": ["sf_sandwich", "owl_stamp"]},
        }
    ],
    "conditions": {"retrieval": [1], "random": {"k": [1], "seeds": [0, 1]}},
    "apply_chat_template": False,
}


@pytest.fixture
def suite(tiny_checkpoint, tmp_path):
    """A tiny niah suite on the tiny checkpoint: none, retrieval@1 and random@1 with two seeds."""
    from rh_tasks.suite import parse_suite

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({f"{l}-{h}": [0.6 if (l, h) == (1, 2) else 0.01] for l in range(2) for h in range(4)}))
    data = {
        **SUITE_BASE,
        "model": {"pretrained": tiny_checkpoint, "head_scores": str(scores)},
        "output_dir": str(tmp_path / "out"),
    }
    return parse_suite(data)
