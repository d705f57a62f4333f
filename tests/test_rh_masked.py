"""The rh-masked lm-eval model: identical to hf when unmasked, validated before loading, reproducible."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from model_wrappers.condition import Condition
from model_wrappers.lm.rh_masked import PromptTooLongError, RHMaskedLM


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
        (dict(head="retrieval", k=5), "rh-masked has no argument 'head'; did you mean 'heads'\\?"),
        (dict(heads="random", sead=3), "rh-masked has no argument 'sead'; did you mean 'seed'\\?"),
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


def _reference_logprob(model, context: list[int], continuation: list[int], heads) -> float:
    """The paper's decode loop for one request: context[:-1] unmasked, then masked single-token steps."""
    from conftest import kv_cache_in

    from model_wrappers import mask_heads
    from model_wrappers.masking.architectures import cache_keyword

    with torch.no_grad():
        cache = kv_cache_in(model(torch.tensor([context[:-1]]), use_cache=True).values())
        fed = [context[-1], *continuation[:-1]]
        total = 0.0
        with mask_heads(model, heads, phase="all"):
            for token, target in zip(fed, continuation):
                logits = model(torch.tensor([[token]]), use_cache=True, **{cache_keyword(model): cache}).logits
                total += torch.log_softmax(logits[0, -1].double(), -1)[target].item()
    return total


def test_decode_phase_loglikelihood_equals_the_reference_loop(tiny_dir):
    heads = [[0, 1], [1, 2]]
    gen = torch.Generator().manual_seed(3)
    requests = []
    for context_length, continuation_length in [(12, 1), (12, 1), (9, 3), (15, 2), (9, 3), (20, 1)]:
        # Tokens of the tiny model's own vocabulary: the embeddings resized for the real tokenizer are all alike.
        ids = torch.randint(5, 96, (context_length + continuation_length,), generator=gen).tolist()
        requests.append((("", ""), ids[:context_length], ids[context_length:]))
    lm = _lm(RHMaskedLM, tiny_dir, heads=heads, phase="decode")
    lm.batch_size_per_gpu = 3  # rows of different lengths share batches
    got = [logprob for logprob, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)]
    expected = [_reference_logprob(lm.model, ctx, cont, heads) for _, ctx, cont in requests]
    plain = [logprob for logprob, _ in _lm(HFLM, tiny_dir)._loglikelihood_tokens(requests, disable_tqdm=True)]
    # Within float32 log-softmax error over 49K tokens, and far below what a wrong placement would change.
    assert got == pytest.approx(expected, abs=2e-4)
    assert min(abs(a - b) for a, b in zip(got, plain)) > 1e-3, "masking should change every score"
    everywhere = _lm(RHMaskedLM, tiny_dir, heads=heads, phase="all")._loglikelihood_tokens(requests, disable_tqdm=True)
    assert min(abs(a - b) for (a, _), b in zip(everywhere, expected)) > 1e-3, "masking the context is another thing"
    audit = lm.get_model_info()["rh_masking"]["audit"]
    assert audit["clean"] and audit["canary_logit_change"] > 0
    # The contexts are read unmasked; one position per continuation token is masked.
    masked = sum(len(cont) for _, _, cont in requests)
    assert audit["layers"]["1"]["masked_positions"] <= masked and audit["layers"]["1"]["masked_positions"] > 0


def test_generation_is_audited_per_condition(tiny_dir):
    lm = _lm(RHMaskedLM, tiny_dir, heads=[[1, 2]], phase="decode")
    ids = torch.randint(5, 49152, (1, 30), generator=torch.Generator().manual_seed(0))
    lm._model_generate(ids, max_length=34, stop=[], min_new_tokens=4)
    audit = lm.get_model_info()["rh_masking"]["audit"]
    assert audit["clean"] and audit["forward_passes"] == 4
    assert audit["layers"]["1"] == {"forward_passes": 4, "masked_positions": 4, "unmasked_positions": 29}
    lm.remask(Condition.parse(heads=[[0, 0]], phase="all"))  # a new condition starts a new audit
    audit = lm.get_model_info()["rh_masking"]["audit"]
    assert audit["forward_passes"] == 0 and not audit["clean"] and audit["layers"] == {}


def test_arguments_as_lm_eval_parses_them(tiny_dir, tmp_path):
    """lm-eval's parser turns none into None, digits into numbers; simple_evaluate builds models this way."""
    from lm_eval.api.registry import get_model

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({f"{l}-{h}": [0.5 if (l, h) == (1, 3) else 0.01] for l in range(2) for h in range(4)}))
    cls = get_model("rh-masked")
    common = f"pretrained={tiny_dir},dtype=float32,device=cpu"
    assert cls.create_from_arg_string(f"{common},heads=none").condition.kind == "none"
    lm = cls.create_from_arg_string(
        f"{common},heads=random,k=2,seed=7,match=none,mode=none,phase=decode,unit=head,head_scores={scores}"
    )
    info = lm.get_model_info()["rh_masking"]
    assert (info["heads_kind"], info["k"], info["seed"], info["mode"], info["phase"]) == (
        "random",
        2,
        7,
        "uniform",
        "decode",
    )
    from_dict = cls.create_from_arg_obj(
        {"pretrained": tiny_dir, "device": "cpu", "heads": "retrieval", "k": "1", "head_scores": str(scores)}
    )
    assert from_dict.get_model_info()["rh_masking"]["heads"] == [[1, 3]]
    as_cli_hands_them = {"heads": "none", "k": "none", "seed": "0", "match": "none", "head_scores": "none"}
    assert cls.create_from_arg_obj({"pretrained": tiny_dir, "device": "cpu", **as_cli_hands_them}).condition.heads == ()
    unmasked = cls.create_from_arg_obj({"pretrained": tiny_dir, "device": "cpu", "heads": None, "k": None, "seed": 3.0})
    assert unmasked.condition.heads == ()
    with pytest.raises(ValueError, match="k=True must be a positive integer"):
        cls.create_from_arg_string(f"{common},heads=retrieval,k=true,head_scores={scores}")
    with pytest.raises(ValueError, match="k=2.5 must be a positive integer"):
        cls.create_from_arg_string(f"{common},heads=retrieval,k=2.5,head_scores={scores}")


def test_masking_without_effect_stops_the_run(tiny_dir):
    """A head whose values are all zero outputs zero whether masked or not: the canary must refuse the run."""
    from transformers import AutoModelForCausalLM

    from model_wrappers import MaskingError

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].self_attn.v_proj.weight.zero_()
    with pytest.raises(MaskingError, match="masking had no effect"):
        RHMaskedLM(pretrained=model, tokenizer=tiny_dir, heads=[[1, 0]], batch_size=1)
    assert RHMaskedLM(pretrained=model, tokenizer=tiny_dir, heads=[[0, 0]], batch_size=1).condition.heads


def test_a_window_named_in_model_args_gives_the_logits_of_window_heads(tiny_dir, tmp_path):
    from lm_eval.api.registry import get_model

    from model_wrappers.masking.window import window_heads

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({f"{l}-{h}": [0.5 if (l, h) == (1, 3) else 0.01] for l in range(2) for h in range(4)}))
    lm = get_model("rh-masked").create_from_arg_string(
        f"pretrained={tiny_dir},dtype=float32,device=cpu,window=8,sink=2,keep=retrieval,k=1,unit=kv_group,"
        f"head_scores={scores}"
    )
    info = lm.get_model_info()["rh_masking"]
    assert info["heads"] == [[1, 2], [1, 3]] and info["num_kept"] == 2  # the KV group of head (1, 3), kept whole
    assert (info["window"], info["sink"], info["heads_kind"]) == (8, 2, "retrieval")
    ids = torch.randint(5, 96, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), window_heads(lm.model, [(1, 2), (1, 3)], window=8, sink=2):
        expected = lm.model(ids).logits
    got = lm._model_call(ids)
    assert torch.equal(got, expected)
    assert not torch.allclose(got, _lm(HFLM, tiny_dir)._model_call(ids), atol=1e-4)
    audit = lm.get_model_info()["rh_masking"]["audit"]
    assert audit["clean"] and set(audit["layers"]) == {"0", "1"}  # layer 0 keeps no head: all of it is windowed


def test_decode_phase_window_scores_as_the_prompt_read_whole(tiny_dir):
    """Under phase=decode a window restricts only the positions that score the continuation."""
    from model_wrappers.masking.window import window_heads

    gen = torch.Generator().manual_seed(3)
    requests = []
    for context_length, continuation_length in [(12, 1), (20, 3), (15, 2), (20, 3)]:
        ids = torch.randint(5, 96, (context_length + continuation_length,), generator=gen).tolist()
        requests.append((("", ""), ids[:context_length], ids[context_length:]))
    lm = _lm(RHMaskedLM, tiny_dir, window=4, sink=1, keep=[[0, 1]], phase="decode")
    lm.batch_size_per_gpu = 3
    got = [logprob for logprob, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)]
    expected = []
    for _, context, continuation in requests:
        ids = torch.tensor([context + continuation[:-1]])
        with (
            torch.no_grad(),
            window_heads(lm.model, [(0, 1)], window=4, sink=1, phase="decode", tail=len(continuation)),
        ):
            logits = lm.model(ids).logits[0, -len(continuation) :]
        expected.append(float(torch.log_softmax(logits, -1)[range(len(continuation)), continuation].sum()))
    assert got == pytest.approx(expected, abs=2e-4)
    everywhere = _lm(RHMaskedLM, tiny_dir, window=4, sink=1, keep=[[0, 1]], phase="all")
    assert min(abs(a - b) for (a, _), b in zip(everywhere._loglikelihood_tokens(requests), expected)) > 1e-3
    assert lm.get_model_info()["rh_masking"]["audit"]["clean"]


def test_a_window_that_keeps_every_head_is_refused(tiny_dir):
    from model_wrappers.condition import ConditionError

    every = [[l, h] for l in range(2) for h in range(4)]
    with pytest.raises(ConditionError, match="keeps every head whole"):
        _lm(RHMaskedLM, tiny_dir, window=4, keep=every)


def test_windowing_without_effect_stops_the_run(tiny_dir):
    """Heads whose values are all zero output zero whatever they read: windowing them must be refused."""
    from transformers import AutoModelForCausalLM

    from model_wrappers import MaskingError

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].self_attn.v_proj.weight.zero_()
    kept = [[0, h] for h in range(4)]  # only layer 1 is windowed
    with pytest.raises(MaskingError, match="windowing had no effect"):
        RHMaskedLM(pretrained=model, tokenizer=tiny_dir, window=4, keep=kept, batch_size=1)
