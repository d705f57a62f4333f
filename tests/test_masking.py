"""mask_heads on tiny random-weight models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import kv_cache_in, tiny_model
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

from model_wrappers import HeadGeometry, MaskingError, UnsupportedArchitectureError, head_output_means, mask_heads
from model_wrappers.masking.architectures import attention_sites, cache_keyword

HEADS = [(0, 1), (1, 0), (1, 3)]
REFERENCE = "rh_test_uniform_reference"
_reference_heads: dict[int, list[int]] = {}


def _reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Eager attention written out by hand, with the listed heads' probabilities set to a uniform distribution
    over exactly the positions the mask allows (causal prefix or sliding window)."""
    # query [B, H, Tq, D]; key, value [B, KV, Tk, D]
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = (query @ key.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    layer_heads = _reference_heads.get(module.layer_idx, [])
    if layer_heads:
        allowed = torch.isfinite(scores) & (scores > torch.finfo(scores.dtype).min / 2)
        uniform = allowed.float() / allowed.float().sum(-1, keepdim=True)
        probs[:, layer_heads] = uniform[:, layer_heads].to(probs.dtype)
    return (probs @ value).transpose(1, 2).contiguous(), probs


AttentionInterface.register(REFERENCE, _reference_attention)
AttentionMaskInterface.register(REFERENCE, eager_mask)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_uniform_matches_explicit_reference(model_type, input_ids):
    model = tiny_model(model_type, "sdpa")
    reference = tiny_model(model_type, REFERENCE)
    _reference_heads.clear()
    torch.testing.assert_close(_logits(reference, input_ids), _logits(model, input_ids), atol=1e-5, rtol=1e-5)

    for layer, head in HEADS:
        _reference_heads.setdefault(layer, []).append(head)
    try:
        expected = _logits(reference, input_ids)
    finally:
        _reference_heads.clear()
    with mask_heads(model, HEADS, mode="uniform"):
        masked = _logits(model, input_ids)
    assert (masked - _logits(model, input_ids)).abs().max() > 1e-3, "masking these heads should change the logits"
    torch.testing.assert_close(masked, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_eager_and_sdpa_agree_under_masking(model_type, input_ids, mode):
    results = []
    for implementation in ("eager", "sdpa"):
        model = tiny_model(model_type, implementation)
        means = head_output_means(model, input_ids[:1]) if mode == "mean" else None
        with mask_heads(model, HEADS, mode=mode, means=means):
            results.append(_logits(model, input_ids))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)


def test_zero_mode_zeroes_the_head_output(input_ids):
    model = tiny_model("llama")
    seen = {}
    site = attention_sites(model)[1]
    handle = site.out_proj.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    try:
        with mask_heads(model, [(1, 2)], mode="zero"):
            _logits(model, input_ids)
    finally:
        handle.remove()
    d = HeadGeometry.from_config(model.config).head_dim
    # Forward hooks see the input as the masking pre-hook left it.
    assert seen["x"][..., 2 * d : 3 * d].abs().max() == 0
    assert seen["x"][..., : 2 * d].abs().max() > 0


def test_mean_mode_substitutes_reference_means(input_ids):
    model = tiny_model("qwen2")
    means = head_output_means(model, input_ids)
    seen = {}
    handle = attention_sites(model)[0].out_proj.register_forward_hook(
        lambda m, args, out: seen.setdefault("x", args[0])
    )
    try:
        with mask_heads(model, [(0, 1)], mode="mean", means=means):
            _logits(model, input_ids[:1])
    finally:
        handle.remove()
    d = HeadGeometry.from_config(model.config).head_dim
    expected = means[0][1].expand_as(seen["x"][..., d : 2 * d])
    torch.testing.assert_close(seen["x"][..., d : 2 * d], expected)


def test_no_heads_installs_no_hooks(input_ids):
    model = tiny_model("llama")
    before = _logits(model, input_ids)
    with mask_heads(model, []):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        assert torch.equal(_logits(model, input_ids), before)


def test_hooks_removed_on_exit_and_after_exceptions(input_ids):
    model = tiny_model("gpt2")
    before = _logits(model, input_ids)

    def hook_count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    with mask_heads(model, HEADS, phase="decode"):
        assert hook_count() == 4  # two layers with masked heads + the pass boundaries around the decoder
    assert hook_count() == 0
    with pytest.raises(RuntimeError, match="boom"):
        with mask_heads(model, HEADS):
            assert hook_count() == 4
            raise RuntimeError("boom")
    assert hook_count() == 0
    assert torch.equal(_logits(model, input_ids), before)


def _reference_decode(model, prompt, heads, steps, mode="uniform", means=None):
    """The paper's NIAH loop (Retrieval_Head ``needle_in_haystack_with_mask.py``, ``evaluate_and_log``): prefill
    ``prompt[:, :-1]`` unmasked, then feed the last prompt token and each greedy token through masked steps."""
    with torch.no_grad():
        cache = kv_cache_in(model(prompt[:, :-1], use_cache=True).values())
        token, logits = prompt[:, -1:], []
        with mask_heads(model, heads, mode=mode, phase="all", means=means):
            for _ in range(steps):
                out = model(token, use_cache=True, **{cache_keyword(model): cache})
                logits.append(out.logits[:, -1])
                token = out.logits[:, -1:].argmax(-1)
    return logits


def _reference_continuation(model, context, continuation, heads, mode="uniform", means=None):
    """The same loop for a loglikelihood request: the context up to its last token is read unmasked; the steps
    that feed its last token and the continuation (all but the last token) are masked."""
    with torch.no_grad():
        cache = kv_cache_in(model(context[:, :-1], use_cache=True).values())
        fed = torch.cat([context[:, -1:], continuation[:, :-1]], dim=1)
        logits = []
        with mask_heads(model, heads, mode=mode, phase="all", means=means):
            for i in range(fed.shape[1]):
                out = model(fed[:, i : i + 1], use_cache=True, **{cache_keyword(model): cache})
                logits.append(out.logits[:, -1])
    return torch.stack(logits, dim=1)


def _generate_logits(model, ids, steps, **masking):
    with mask_heads(model, HEADS, phase="decode", **masking), torch.no_grad():
        mask = (ids != 0).long()
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
            pad_token_id=0, output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    return out.logits


def _left_padded(prompts):
    width = max(len(p) for p in prompts)
    return torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), p]) for p in prompts])


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_decode_phase_generation_equals_the_reference_loop(model_type, input_ids, implementation, mode):
    model = tiny_model(model_type, implementation)
    means = head_output_means(model, input_ids[:1]) if mode == "mean" else None
    prompts = [input_ids[0, :20], input_ids[1, :14]]  # one left-padded batch; each row alone in the reference
    steps = 4
    generated = _generate_logits(model, _left_padded(prompts), steps, mode=mode, means=means)
    for row, prompt in enumerate(prompts):
        expected = _reference_decode(model, prompt[None], HEADS, steps, mode=mode, means=means)
        with torch.no_grad():
            plain_first = model(prompt[None]).logits[:, -1]
        assert (expected[0] - plain_first).abs().max() > 1e-4, "the first answer token must come from a masked pass"
        for step in range(steps):
            torch.testing.assert_close(generated[step][row], expected[step][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_decode_phase_continuation_equals_the_reference_loop(model_type, input_ids, implementation, mode):
    model = tiny_model(model_type, implementation)
    means = head_output_means(model, input_ids[:1]) if mode == "mean" else None
    context, continuation = input_ids[:1, :15], input_ids[:1, 15:19]
    expected = _reference_continuation(model, context, continuation, HEADS, mode=mode, means=means)
    scored = torch.cat([context, continuation[:, :-1]], dim=1)  # what lm-eval feeds for one request
    with mask_heads(model, HEADS, mode=mode, phase="decode", means=means, tail=4), torch.no_grad():
        logits = model(scored).logits[:, -4:]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        plain = model(scored).logits
    assert (plain[:, -4] - expected[:, 0]).abs().max() > 1e-4, "the first continuation token is scored masked"
    with mask_heads(model, HEADS, mode=mode, phase="decode", means=means, tail=4) as audit, torch.no_grad():
        full = model(scored).logits
    assert torch.equal(full[:, :-4], plain[:, :-4]), "the context is read unmasked, bit for bit"
    assert audit.layers[1].masked_positions == 4 and audit.layers[1].unmasked_positions == scored.shape[1] - 4


def test_decode_phase_refuses_passes_it_cannot_place(input_ids):
    model = tiny_model("llama")
    with pytest.raises(MaskingError, match="one mask_heads context per generate call"):
        with mask_heads(model, HEADS, phase="decode"), torch.no_grad():
            model(input_ids)
            model(input_ids)  # a second prompt in the same context: its positions cannot be placed


def test_a_forward_pass_that_skips_a_masked_layer_is_an_error(input_ids):
    model = tiny_model("qwen2")
    with mask_heads(model, HEADS):
        attn = model.model.layers[1].self_attn
        replacement = torch.nn.Linear(attn.q_proj.in_features, attn.q_proj.out_features, bias=True)
        replacement.load_state_dict(attn.q_proj.state_dict())
        attn.q_proj = replacement  # the model now calls a projection the hooks never saw
        with pytest.raises(MaskingError, match=r"reached the masked layers \[0\] of \[0, 1\]"):
            _logits(model, input_ids)


def test_audit_counts_every_pass_and_position(input_ids):
    model = tiny_model("gpt2")
    with mask_heads(model, HEADS, phase="decode") as audit, torch.no_grad():
        model.generate(input_ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    rows, length = input_ids.shape
    assert audit.forward_passes == 3
    for layer in (0, 1):
        counts = audit.layers[layer]
        assert counts.forward_passes == 3
        assert counts.masked_positions == rows * 3  # the last prompt token, then two generated tokens
        assert counts.unmasked_positions == rows * (length - 1)
    audit.canary_logit_change = 0.5
    assert audit.describe({0, 1})["clean"]


def test_masking_a_whole_kv_group_differs_from_one_query_head(input_ids):
    model = tiny_model("llama")  # 4 query heads, 2 KV heads
    with mask_heads(model, [(1, 0)]):
        one = _logits(model, input_ids)
    with mask_heads(model, [(1, 0), (1, 1)]):
        group = _logits(model, input_ids)
    assert (one - group).abs().max() > 1e-4


@pytest.mark.parametrize(
    "heads, message",
    [
        ([(2, 0)], "out of range"),
        ([(0, 4)], "out of range"),
        ([(-1, 0)], "out of range"),
        ([(0,)], "pair of integers"),
        ([("0", 1)], "pair of integers"),
    ],
)
def test_bad_heads_are_rejected_before_any_hook(heads, message, input_ids):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        with mask_heads(model, heads):
            pass
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "noise"}, "mode=.noise. is unknown"),
        ({"phase": "prefill"}, "phase=.prefill. is unknown"),
        ({"mode": "mean"}, "means="),
    ],
)
def test_bad_mode_and_phase(kwargs, message):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        with mask_heads(model, HEADS, **kwargs):
            pass


def test_unsupported_architecture_names_the_supported_ones():
    config = transformers.GPTNeoXConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError, match="gpt_neox.*Supported model types: .*llama"):
        with mask_heads(model, [(0, 0)]):
            pass


def test_a_forward_without_a_cache_argument_is_refused_naming_the_transformers_release():
    class NoCache(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    with pytest.raises(UnsupportedArchitectureError, match=rf"transformers {transformers.__version__}: NoCache"):
        cache_keyword(NoCache())
    assert cache_keyword(tiny_model("llama")) in ("cache", "past_key_values")
