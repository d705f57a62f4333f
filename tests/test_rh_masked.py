"""The rh-masked lm-eval model: identical to hf when unmasked, validated before loading, reproducible."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from model_wrappers.rh_masked import PromptTooLongError, RHMaskedLM


@pytest.fixture
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint


def _lm(cls, path, **kwargs):
    return cls(pretrained=path, device="cpu", dtype="float32", batch_size=1, **kwargs)


def test_heads_none_is_bit_identical_to_hf(tiny_dir):
    ids = torch.randint(0, 49152, (2, 40), generator=torch.Generator().manual_seed(0))
    plain = _lm(HFLM, tiny_dir)._model_call(ids)
    ours = _lm(RHMaskedLM, tiny_dir, heads="none")._model_call(ids)
    assert torch.equal(plain, ours)


def test_masked_heads_change_logits_and_are_reported(tiny_dir):
    ids = torch.randint(0, 49152, (1, 40), generator=torch.Generator().manual_seed(0))
    lm = _lm(RHMaskedLM, tiny_dir, heads=[[1, 2], [0, 0]], mode="zero", phase="all")
    assert not torch.equal(lm._model_call(ids), _lm(HFLM, tiny_dir)._model_call(ids))
    assert all(not m._forward_pre_hooks for m in lm.model.modules()), "hooks live only during a call"
    info = lm.get_model_info()["rh_masking"]
    assert info["heads"] == [[0, 0], [1, 2]]
    assert info["heads_kind"] == "explicit" and info["mode"] == "zero" and info["phase"] == "all"
    json.dumps(info)  # must serialise into results_*.json


def test_retrieval_heads_from_a_score_file(tiny_dir, tmp_path):
    scores = {f"{l}-{h}": [0.5 if (l, h) == (1, 3) else 0.01] for l in range(2) for h in range(4)}
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(scores))
    lm = _lm(RHMaskedLM, tiny_dir, heads="retrieval", k=1, head_scores=str(path))
    info = lm.get_model_info()["rh_masking"]
    assert info["heads"] == [[1, 3]]
    assert info["head_scores"] == str(path) and len(info["head_scores_sha256"]) == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(heads=[[2, 0]]), "out of range"),
        (dict(heads=[[0, 9]]), "out of range"),
        (dict(heads="some"), "not understood"),
        (dict(heads="none", mode="noise"), "mode='noise' is unknown"),
        (dict(heads="none", phase="prefill"), "phase='prefill' is unknown"),
        (dict(heads="retrieval", k=3), "needs head scores"),
    ],
)
def test_bad_arguments_fail_before_weights_load(tiny_dir, kwargs, message, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the arguments were validated")

    monkeypatch.setattr(RHMaskedLM, "_create_model", no_weights)
    with pytest.raises(ValueError, match=message):
        _lm(RHMaskedLM, tiny_dir, **kwargs)


def test_mis_shaped_score_file_fails_before_weights_load(tiny_dir, tmp_path, monkeypatch):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({f"{l}-{h}": [0.2] for l in range(32) for h in range(32)}))
    monkeypatch.setattr(RHMaskedLM, "_create_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ValueError, match="32 layers x 32 heads, but the model has 2 layers x 4"):
        _lm(RHMaskedLM, tiny_dir, heads="retrieval", k=2, head_scores=str(path))


def test_prompt_that_would_be_truncated_is_an_error(tiny_dir):
    lm = _lm(RHMaskedLM, tiny_dir, max_length=64)
    with pytest.raises(PromptTooLongError, match="does not fit"):
        lm.tok_batch_encode(["word " * 100], left_truncate_len=32)


def test_duoattention_gates_select_whole_kv_groups(tiny_dir, tmp_path):
    path = tmp_path / "full_attention_heads.tsv"
    path.write_text("0.0\t0.02\n0.97\t0.0\n")  # [layers x kv_heads]; the tiny model has 2 query heads per KV head
    lm = _lm(RHMaskedLM, tiny_dir, heads="retrieval", unit="kv_group", k=1, head_scores=str(path))
    assert lm.get_model_info()["rh_masking"]["heads"] == [[1, 0], [1, 1]]
