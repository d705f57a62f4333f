"""window_heads and window_rows on tiny random-weight models of every supported architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_CONFIGS, kv_cache_in, tiny_model
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

from model_wrappers import MaskingAudit, MaskingError, UnsupportedAttentionError, window_heads, window_rows
from model_wrappers.masking.architectures import cache_keyword
from model_wrappers.masking.canary import check_window_changes_logits

KEPT = [(0, 1), (1, 0), (1, 1)]  # layer 1 keeps the whole first KV group of the GQA models
WINDOW, SINK = 5, 2
TOL = dict(atol=1e-5, rtol=1e-5)
REFERENCE = "rh_test_window_reference"
_spec: dict = {}  # kept {layer: heads}, window, sink, start: the first windowed query position


@pytest.fixture(autouse=True, params=["per-head mask", "bands"])
def sdpa_path(request, monkeypatch):
    """Every test under both SDPA paths: short passes (decode steps) with one per-head mask, or bands."""
    from model_wrappers.masking import window

    if request.param == "bands":
        monkeypatch.setattr(window, "DENSE_QUERIES", 0)
    return request.param


def _reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Eager attention written out by hand, run without a KV cache, where every head not kept may only read the
    first ``sink`` keys and the ``window`` most recent ones, from query position ``start`` on."""
    # query [B, H, T, D]; key, value [B, KV, T, D]; attention_mask [B, 1, T, T]: 0 where the model allows a key
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = (query @ key.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    allowed = (attention_mask == 0).expand_as(scores).clone()
    if _spec:
        length = query.shape[2]
        assert key.shape[2] == length, "the reference runs without a KV cache"
        q, k = torch.arange(length)[:, None], torch.arange(length)[None, :]
        readable = (k < _spec["sink"]) | (q - k < _spec["window"]) | (q < _spec["start"])
        for head in range(query.shape[1]):
            if head not in _spec["kept"].get(module.layer_idx, ()):
                allowed[:, head] &= readable
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")).float(), dim=-1).to(query.dtype)
    return (probs @ value).transpose(1, 2).contiguous(), probs


AttentionInterface.register(REFERENCE, _reference_attention)
AttentionMaskInterface.register(REFERENCE, eager_mask)


@torch.no_grad()
def _reference_logits(reference, ids, kept, start, window=WINDOW, sink=SINK):
    _spec.update(kept={}, window=window, sink=sink, start=start)
    for layer, head in kept:
        _spec["kept"].setdefault(layer, set()).add(head)
    try:
        return reference(ids, use_cache=False).logits
    finally:
        _spec.clear()


@torch.no_grad()
def _reference_steps(reference, sequence, prompt_length, kept, start):
    """The logits of each generated token of ``sequence`` ``[1, T]``, every step recomputing the whole sequence so
    far without a cache, with queries from ``start`` on windowed."""
    return [
        _reference_logits(reference, sequence[:, :end], kept, start)[:, -1]
        for end in range(prompt_length, sequence.shape[1] + 1)
    ]


def _left_padded(prompts):
    width = max(len(p) for p in prompts)
    return torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), p]) for p in prompts])


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("phase", ["all", "decode"])
def test_window_matches_explicit_reference(model_type, input_ids, implementation, phase):
    model = tiny_model(model_type, implementation)
    reference = tiny_model(model_type, REFERENCE)
    tail = 4
    start = 0 if phase == "all" else input_ids.shape[1] - tail
    with torch.no_grad():
        plain = model(input_ids).logits
        torch.testing.assert_close(reference(input_ids, use_cache=False).logits, plain, atol=1e-5, rtol=1e-5)
        with window_heads(model, KEPT, window=WINDOW, sink=SINK, phase=phase, tail=tail):
            windowed = model(input_ids).logits
    expected = _reference_logits(reference, input_ids, KEPT, start)
    torch.testing.assert_close(windowed, expected, atol=1e-5, rtol=1e-5)
    assert (windowed[:, -1] - plain[:, -1]).abs().max() > 1e-3, "windowing these heads should change the logits"


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("phase", ["all", "decode"])
def test_generation_of_left_padded_rows_equals_the_reference_per_row(model_type, input_ids, implementation, phase):
    """A cached, left-padded generate: each row as the reference computes it alone, sinks on its real tokens."""
    model = tiny_model(model_type, implementation)
    reference = tiny_model(model_type, REFERENCE)
    prompts = [input_ids[0, :20], input_ids[1, :14]]
    steps = 4
    ids = _left_padded(prompts)
    with window_heads(model, KEPT, window=WINDOW, sink=SINK, phase=phase), torch.no_grad():
        out = model.generate(
            ids, attention_mask=(ids != 0).long(), max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
            pad_token_id=0, output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    for row, prompt in enumerate(prompts):
        sequence = torch.cat([prompt, out.sequences[row, ids.shape[1] : -1]])[None]  # the row alone, its tokens
        start = 0 if phase == "all" else len(prompt) - 1
        expected = _reference_steps(reference, sequence, len(prompt), KEPT, start)
        for step in range(steps):
            torch.testing.assert_close(out.logits[step][row], expected[step][0], atol=1e-5, rtol=1e-5)


ROWS_KEPT = [
    [(layer, head) for layer in range(2) for head in range(4)],  # every head kept: the full model
    KEPT,
    [(0, 0)],
    [],  # every head windowed
]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_rows_over_a_shared_prefix_equal_window_heads_one_row_at_a_time(model_type, implementation):
    model = tiny_model(model_type, implementation)
    reference = tiny_model(model_type, REFERENCE)
    ids = torch.randint(3, 96, (1, 20), generator=torch.Generator().manual_seed(2))
    keyword, prefix_length = cache_keyword(model), 16
    audits = [MaskingAudit() for _ in ROWS_KEPT]
    with torch.no_grad():
        prefix = kv_cache_in(model(ids[:, :prefix_length], use_cache=True).values())
        rows = copy.deepcopy(prefix)
        rows.batch_repeat_interleave(len(ROWS_KEPT))
        fed = [ids[:, prefix_length:-1].repeat(len(ROWS_KEPT), 1), ids[:, -1:].repeat(len(ROWS_KEPT), 1)]
        with window_rows(model, ROWS_KEPT, window=WINDOW, sink=SINK, fresh=3, audits=audits):
            together = torch.cat([model(tokens, use_cache=True, **{keyword: rows}).logits for tokens in fed], dim=1)
        for row, kept in enumerate(ROWS_KEPT):
            cache = copy.deepcopy(prefix)
            with window_heads(model, kept, window=WINDOW, sink=SINK):
                alone = torch.cat([model(tokens[:1], use_cache=True, **{keyword: cache}).logits for tokens in fed], 1)
            torch.testing.assert_close(together[row], alone[0], atol=1e-5, rtol=1e-5)
            expected = _reference_logits(reference, ids, kept, start=prefix_length)[0, prefix_length:]
            torch.testing.assert_close(together[row], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(together[0], model(ids).logits[0, prefix_length:], atol=1e-5, rtol=1e-5)
    assert all((together[row] - together[0]).abs().max() > 1e-4 for row in range(1, len(ROWS_KEPT)))
    assert audits[0].forward_passes == 0 and all(a.forward_passes == 2 for a in audits[1:])
    assert audits[3].layers[0].masked_positions == 4 and audits[2].layers[1].masked_positions == 4


def test_keeping_every_head_installs_no_hooks_and_changes_nothing(input_ids):
    model = tiny_model("llama")
    with torch.no_grad():
        before = model(input_ids).logits
        with window_heads(model, ROWS_KEPT[0], window=1, sink=0) as audit:
            assert _hook_count(model) == 0
            assert torch.equal(model(input_ids).logits, before)
        with window_rows(model, [ROWS_KEPT[0]] * 2, window=1, fresh=input_ids.shape[1], audits=[audit, audit]):
            assert _hook_count(model) == 0
    assert audit.forward_passes == 0


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_a_window_covering_the_probe_changes_nothing_and_the_canary_stops_it(input_ids, implementation):
    model = tiny_model("qwen2", implementation)
    probe = input_ids[:1]
    with torch.no_grad():
        plain = model(probe).logits
        with window_heads(model, KEPT, window=probe.shape[1] - SINK, sink=SINK):
            assert torch.equal(model(probe).logits, plain), "sinks and window together cover every key"
    with pytest.raises(MaskingError, match="windowing had no effect.*window covers the probe"):
        check_window_changes_logits(model, KEPT, probe, window=probe.shape[1], sink=SINK)
    audit = MaskingAudit()
    change = check_window_changes_logits(model, KEPT, probe, window=WINDOW, sink=SINK, phase="decode", audit=audit)
    assert change > 0 and audit.canary_logit_change == change and audit.forward_passes == 0
    assert check_window_changes_logits(model, ROWS_KEPT[0], probe, window=1) == 0.0


def test_audit_counts_every_pass_and_windowed_position(input_ids):
    model = tiny_model("gpt2")
    rows, length = input_ids.shape
    with window_heads(model, [(0, 0), (0, 1), (0, 2), (0, 3)], window=4, phase="decode") as audit, torch.no_grad():
        model.generate(input_ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    assert audit.forward_passes == 3 and set(audit.layers) == {1}, "layer 0 keeps every head: it is not hooked"
    counts = audit.layers[1]
    assert counts.forward_passes == 3
    assert counts.masked_positions == rows * 3  # the last prompt token, then two generated tokens
    assert counts.unmasked_positions == rows * (length - 1)
    audit.canary_logit_change = 0.5
    assert audit.describe({1})["clean"]
    with window_heads(model, [], window=4, audit=audit), torch.no_grad():
        model(input_ids)
    assert audit.layers[0].masked_positions == rows * length and audit.forward_passes == 4


def test_hooks_removed_on_exit_and_after_exceptions(input_ids):
    model = tiny_model("gpt2")
    before = model(input_ids).logits
    with window_heads(model, KEPT, window=WINDOW, phase="decode"):
        assert _hook_count(model) == 5  # one per attention module, and three around the decoder
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with window_rows(model, [KEPT, []], window=WINDOW, fresh=3, audits=[MaskingAudit(), MaskingAudit()]):
            assert _hook_count(model) == 5
            raise RuntimeError("boom")
    assert _hook_count(model) == 0
    assert torch.equal(model(input_ids).logits, before)


def test_an_attention_module_the_model_no_longer_calls_is_an_error(input_ids):
    model = tiny_model("qwen2")
    with window_heads(model, KEPT, window=WINDOW):
        attn = model.model.layers[1].self_attn
        replacement = type(attn)(attn.config, layer_idx=1)
        replacement.load_state_dict(attn.state_dict())
        model.model.layers[1].self_attn = replacement  # the model now calls a module the hooks never saw
        with pytest.raises(MaskingError, match=r"reached the masked layers \[0\] of \[0, 1\]"):
            model(input_ids)


def test_an_attention_mask_under_another_keyword_is_an_error(input_ids):
    model = tiny_model("llama")

    def rename(module, args, kwargs):  # as a release that renamed the keyword would call the module
        kwargs["mask"] = kwargs.pop("attention_mask")
        return args, kwargs

    with window_heads(model, KEPT, window=WINDOW):
        handle = model.model.layers[0].self_attn.register_forward_pre_hook(rename, with_kwargs=True, prepend=True)
        try:
            with pytest.raises(MaskingError, match="called without the hidden_states and attention_mask"):
                model(input_ids)
        finally:
            handle.remove()


def test_a_prepared_mask_is_refused(input_ids):
    model = tiny_model("llama")
    mask = torch.ones(input_ids.shape[0], 1, input_ids.shape[1], input_ids.shape[1], dtype=torch.bool).tril()
    with pytest.raises(MaskingError, match="need the 2D padding mask .* prepared 4D mask"):
        with window_heads(model, KEPT, window=WINDOW):
            model(input_ids, attention_mask=mask)


def test_decode_phase_refuses_a_second_prompt(input_ids):
    model = tiny_model("llama")
    with pytest.raises(MaskingError, match="one window_heads context per generate call"):
        with window_heads(model, KEPT, window=WINDOW, phase="decode"), torch.no_grad():
            model(input_ids)
            model(input_ids)


@pytest.mark.parametrize("implementation", ["flex_attention", "flash_attention_2"])
def test_kernels_without_per_head_masks_are_refused(implementation):
    model = tiny_model("llama", "sdpa")
    model.config._attn_implementation = implementation
    with pytest.raises(UnsupportedAttentionError, match=f"attn_implementation='{implementation}'.*'sdpa'"):
        with window_heads(model, KEPT, window=WINDOW):
            pass
    with window_heads(model, ROWS_KEPT[0], window=WINDOW):  # keeping every head needs no mask
        pass


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 0}, r"window=0 must be a positive integer"),
        ({"window": -3}, r"window=-3 must be a positive integer"),
        ({"window": 2.5}, r"window=2.5 must be a positive integer"),
        ({"window": True}, r"window=True must be a positive integer"),
        ({"window": 4, "sink": -1}, r"sink=-1 must be an integer >= 0"),
        ({"window": 4, "sink": 1.0}, r"sink=1.0 must be an integer >= 0"),
        ({"window": 4, "phase": "prefill"}, "is unknown"),
        ({"window": 4, "tail": 0}, "tail=0 must be a positive integer"),
    ],
)
def test_bad_window_arguments_are_rejected_before_any_hook(kwargs, message):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        with window_heads(model, KEPT, **kwargs):
            pass
    assert _hook_count(model) == 0


def test_bad_rows_are_rejected():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="out of range"):
        with window_rows(model, [[(2, 0)]], window=4, fresh=1, audits=[MaskingAudit()]):
            pass
    with pytest.raises(ValueError, match="2 rows need 2 audits, got 1"):
        with window_rows(model, [KEPT, []], window=4, fresh=1, audits=[MaskingAudit()]):
            pass
    with pytest.raises(ValueError, match="sink=-2"):
        with window_rows(model, [KEPT], window=4, sink=-2, fresh=1, audits=[MaskingAudit()]):
            pass


def test_a_shared_probe_gives_each_condition_the_change_a_fresh_probe_gives():
    """Under phase=decode a Probe reads its prefix once; the change it finds is the change of a full pass."""
    from model_wrappers.masking.canary import Probe

    model = tiny_model("llama")
    probe = torch.randint(3, 96, (1, 24), generator=torch.Generator().manual_seed(5))
    shared = Probe(model, probe)
    for kept in ([], [(0, 1)], [(1, h) for h in range(4)]):
        for phase in ("all", "decode"):
            fresh = check_window_changes_logits(model, kept, probe, window=4, sink=1, phase=phase)
            again = check_window_changes_logits(model, kept, shared, window=4, sink=1, phase=phase)
            assert again == pytest.approx(fresh, rel=1e-3, abs=1e-5) and again > 0
    nothing = [(layer, head) for layer in range(2) for head in range(4)]
    assert check_window_changes_logits(model, nothing, shared, window=4, sink=1, phase="decode") == 0.0


@pytest.mark.parametrize("window, block", [(WINDOW, 4096), (70, 64)])
def test_sdpa_bands_long_rows_in_chunks_without_a_per_head_mask(monkeypatch, window, block):
    """Past one chunk of queries (and one block of chunks), SDPA windows by bands: each row as the reference
    computes it, kept heads on SDPA's causal path, and no ``[B, H, Q, K]`` mask built anywhere."""
    from model_wrappers.masking import banded

    monkeypatch.setattr(banded, "BLOCK_QUERIES", block)
    model, reference = tiny_model("llama", "sdpa"), tiny_model("llama", REFERENCE)
    prompts = [
        torch.randint(3, 96, (length,), generator=torch.Generator().manual_seed(length)) for length in (200, 150)
    ]
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, is_causal=False, **kwargs):
        calls.append((query.shape, None if attn_mask is None else attn_mask.shape, is_causal))
        return sdpa(query, key, value, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad(), window_heads(model, KEPT, window=window, sink=SINK):
        alone = model(prompts[0][None]).logits[0]
        ids = _left_padded(prompts)
        padded = model(ids, attention_mask=(ids != 0).long()).logits
    torch.testing.assert_close(alone, _reference_logits(reference, prompts[0][None], KEPT, 0, window)[0], **TOL)
    for row, prompt in enumerate(prompts):
        expected = _reference_logits(reference, prompt[None], KEPT, 0, window)[0]
        torch.testing.assert_close(padded[row, ids.shape[1] - len(prompt) :], expected, **TOL)
    assert all(mask is None or mask[1] == 1 for _, mask, _ in calls), "no mask per head"
    assert any(causal and query[1] == 2 for query, _, causal in calls), "layer 1's kept KV group, causally"


def test_sdpa_decodes_a_long_prompt_with_one_call_per_step_and_a_mask_linear_in_its_keys(monkeypatch, sdpa_path):
    """A decode step reads its window with one SDPA call and a per-head mask ``[B, H, 1, K]``: cheaper than bands
    for one query, and its memory grows with the keys only. The prompt's pass is banded; every step matches the
    reference, which recomputes the whole sequence without a cache. With bands forced, no such mask is built."""
    model, reference = tiny_model("llama", "sdpa"), tiny_model("llama", REFERENCE)
    prompt = torch.randint(3, 96, (1, 150), generator=torch.Generator().manual_seed(7))
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, is_causal=False, **kwargs):
        calls.append((query.shape, None if attn_mask is None else attn_mask.shape))
        return sdpa(query, key, value, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad(), window_heads(model, KEPT, window=WINDOW, sink=SINK, phase="decode", tail=1):
        out = model.generate(
            prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0, output_logits=True,
            return_dict_in_generate=True,
        )  # fmt: skip
    expected = _reference_steps(reference, out.sequences, prompt.shape[1], KEPT, start=prompt.shape[1] - 1)
    for got, want in zip(out.logits, expected):
        torch.testing.assert_close(got, want, **TOL)
    steps = [mask for _, mask in calls if mask is not None and mask[-1] > prompt.shape[1]]  # past the prompt
    per_step = [151, 151, 152, 152] if sdpa_path == "per-head mask" else []  # bands build no mask over all keys
    assert [mask[-1] for mask in steps] == per_step, "one call per windowed layer and decode step"
    assert all(mask.numel() == 4 * mask[-1] for mask in steps), "4 heads x 1 query x K keys"


def test_sdpa_is_routed_only_while_open_and_a_bypassed_route_is_an_error(input_ids):
    """Windowed heads replace transformers' SDPA entry while a context is open; a layer whose attention ran
    without it (as a release that dispatched otherwise would) stops the pass instead of running unwindowed."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    model = tiny_model("llama")
    assert AttentionInterface()["sdpa"] is sdpa_attention_forward
    with window_heads(model, KEPT, window=WINDOW):
        assert AttentionInterface()["sdpa"] is not sdpa_attention_forward
        AttentionInterface.register("sdpa", sdpa_attention_forward)  # the model's calls now bypass the route
        with pytest.raises(MaskingError, match="did not call the SDPA function of transformers' AttentionInterface"):
            model(input_ids)
    assert AttentionInterface()["sdpa"] is sdpa_attention_forward
    with pytest.raises(MaskingError, match="windowed already"):
        with window_heads(model, KEPT, window=WINDOW), window_heads(model, [], window=WINDOW):
            pass
    assert AttentionInterface()["sdpa"] is sdpa_attention_forward and _hook_count(model) == 0


def test_an_sdpa_call_without_its_logit_scale_is_an_error(input_ids):
    """Windowed heads take the logit scale from the call, as the model's SDPA does; without it they would
    silently use another one (Gemma-3's is not 1/sqrt(head_dim))."""
    from transformers import AttentionInterface

    model = tiny_model("gemma3_text")
    with window_heads(model, KEPT, window=WINDOW):
        route = AttentionInterface()["sdpa"]
        AttentionInterface.register("sdpa", lambda *args, scaling=None, **kwargs: route(*args, **kwargs))
        try:
            with pytest.raises(MaskingError, match="need the logit scale as 'scaling'"):
                model(input_ids)
        finally:
            AttentionInterface.register("sdpa", route)
