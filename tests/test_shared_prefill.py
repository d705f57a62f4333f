"""Conditions evaluated together from one prefill give what each gives alone, and prove their masking."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_CONFIGS, kv_cache_in, tiny_model

from model_wrappers import ConditionBatch, MaskingAudit, MaskingError, mask_heads, mask_rows
from model_wrappers.condition import Condition
from model_wrappers.lm.engine import FIRST_STAGE
from model_wrappers.lm.rh_masked import RHMaskedLM
from model_wrappers.masking.architectures import cache_keyword
from model_wrappers.masking.modes import Uniform, as_mode, head_output_means

ROWS = [[], [(0, 1), (1, 2)], [(1, 0)], [(0, 3), (1, 1), (1, 3)]]  # one head set per condition; [] is unmasked


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_rows_over_a_shared_prefix_equal_the_reference_loop_per_condition(model_type, mode, attn):
    """Each row continues the shared prefix as the paper's loop does for its condition alone.

    The loop (Retrieval_Head's ``needle_in_haystack_with_mask.py``): the prompt up to its last token unmasked,
    then single-token steps with the condition's heads masked.
    """
    model = tiny_model(model_type, attn)
    ids = torch.randint(3, 96, (1, 20), generator=torch.Generator().manual_seed(2))
    means = head_output_means(model, ids) if mode == "mean" else None
    keyword = cache_keyword(model)
    with torch.no_grad():
        prefix = kv_cache_in(model(ids[:, :-3], use_cache=True).values())
        rows = copy.deepcopy(prefix)
        rows.batch_repeat_interleave(len(ROWS))
        audits = [MaskingAudit() for _ in ROWS]
        with mask_rows(model, ROWS, as_mode(mode, means), fresh=3, audits=audits):
            together = model(ids[:, -3:].repeat(len(ROWS), 1), use_cache=True, **{keyword: rows}).logits
        for row, heads in enumerate(ROWS):
            cache = copy.deepcopy(prefix)
            with mask_heads(model, heads, mode=mode, phase="all", means=means):
                steps = [model(ids[:, [i]], use_cache=True, **{keyword: cache}).logits for i in (-3, -2, -1)]
            assert torch.allclose(together[row], torch.cat(steps, dim=1)[0], atol=1e-5), f"row {row}"
    plain = together[0]
    assert all((together[row] - plain).abs().max() > 1e-4 for row in range(1, len(ROWS))), "every mask must act"
    assert audits[0].forward_passes == 0 and all(a.forward_passes == 1 for a in audits[1:])
    assert audits[3].layers[1].masked_positions == 3 and audits[3].problems({0, 1}) == [
        "the load-time canary did not show that masking changes the logits"
    ]


def test_a_pass_that_ignores_the_prefix_cache_is_refused():
    model = tiny_model("llama")
    ids = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    with pytest.raises(MaskingError, match="prefix's KV cache was not used"):
        with mask_rows(model, ROWS[1:3], Uniform(), fresh=1, audits=[MaskingAudit(), MaskingAudit()]):
            model(ids)  # the whole prompt, as if the cache had been dropped: its prefix would be read masked


def _lm(path, **kwargs):
    return RHMaskedLM(pretrained=path, device="cpu", dtype="float32", batch_size=1, **kwargs)


CONDITIONS = {
    "none": dict(heads="none"),
    "a": dict(heads=[[0, 1], [1, 2]]),
    "b": dict(heads=[[1, 0]]),
    "c": dict(heads=[[0, 3], [1, 1], [1, 3]]),
}


def _requests(seed: int = 3) -> list:
    gen = torch.Generator().manual_seed(seed)
    requests = []
    for context_length, continuation_length in [(12, 1), (12, 1), (9, 3), (15, 2), (9, 3), (20, 1)]:
        ids = torch.randint(5, 96, (context_length + continuation_length,), generator=gen).tolist()
        requests.append((("", ""), ids[:context_length], ids[context_length:]))
    requests.append((("", ""), requests[0][1], [7]))  # another answer to the same question shares its prefix
    return requests


def _one_by_one(lm, masking: dict, evaluate, conditions: dict = CONDITIONS) -> dict:
    results = {}
    for name, arguments in conditions.items():
        lm.remask(Condition.parse(**arguments, **masking))
        results[name] = (evaluate(lm), lm.get_model_info()["rh_masking"]["audit"])
    return results


def _together(lm, masking: dict, evaluate, memory_gb: float = 2.0, conditions: dict = CONDITIONS) -> dict:
    lm.plan_conditions(
        {name: Condition.parse(**arguments, **masking) for name, arguments in conditions.items()}, memory_gb
    )
    results = {}
    for name in conditions:
        lm.use_condition(name)
        results[name] = (evaluate(lm), lm.get_model_info()["rh_masking"]["audit"])
    return results


def _scores(lm):
    return lm._loglikelihood_tokens(_requests(), disable_tqdm=True)


def _generations(lm):
    ids = torch.randint(5, 96, (1, 30), generator=torch.Generator().manual_seed(0))
    return lm._model_generate(ids, max_length=36, stop=[], min_new_tokens=6).tolist()


@pytest.mark.parametrize("phase", ["decode", "all"])
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_planned_conditions_score_as_one_by_one(tiny_checkpoint, mode, phase):
    lm = _lm(tiny_checkpoint)
    masking = dict(mode=mode, phase=phase)
    alone = _one_by_one(lm, masking, _scores)
    together = _together(lm, masking, _scores)
    for name in CONDITIONS:
        (expected, _), (got, audit) = alone[name], together[name]
        assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]
        # float32 log-softmax over 49K tokens, computed in other batch shapes
        assert [p for p, _ in got] == pytest.approx([p for p, _ in expected], abs=2e-4)
        assert audit["clean"] or name == "none", audit["problems"]
    assert alone["a"][0] != alone["b"][0], "the conditions must differ for the comparison to mean something"


@pytest.mark.parametrize("phase", ["decode", "all"])
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_planned_conditions_generate_as_one_by_one(tiny_checkpoint, mode, phase):
    lm = _lm(tiny_checkpoint)
    masking = dict(mode=mode, phase=phase)
    alone = _one_by_one(lm, masking, _generations)
    together = _together(lm, masking, _generations)
    assert {name: together[name][0] for name in CONDITIONS} == {name: alone[name][0] for name in CONDITIONS}
    assert len({str(alone[name][0]) for name in CONDITIONS}) > 2, "masking should change some generations"
    for name in ("a", "b", "c"):
        audit = together[name][1]
        assert audit["clean"] and audit["forward_passes"] == 6  # the last prompt token, then 5 decoded tokens


WINDOWS = {  # windowed conditions with different windows and kept sets, beside the unmasked model
    "none": dict(),
    "a": dict(window=4, sink=2, keep=[[0, 1], [1, 2]]),
    "b": dict(window=6, sink=2),
    "c": dict(window=4, sink=2, keep=[[1, 0]]),
}


@pytest.mark.parametrize("phase", ["decode", "all"])
def test_planned_windows_score_and_generate_as_one_by_one(tiny_checkpoint, phase):
    lm = _lm(tiny_checkpoint)
    masking = dict(phase=phase)
    for evaluate in (_scores, _generations):
        alone = _one_by_one(lm, masking, evaluate, WINDOWS)
        together = _together(lm, masking, evaluate, conditions=WINDOWS)
        for name in WINDOWS:
            (expected, _), (got, audit) = alone[name], together[name]
            if evaluate is _scores:
                assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]
                assert [p for p, _ in got] == pytest.approx([p for p, _ in expected], abs=2e-4)
            else:
                assert got == expected
            assert audit["clean"] or name == "none", audit["problems"]
        assert len({str(alone[name][0]) for name in WINDOWS}) == len(WINDOWS), "every window must act"


def test_planning_refuses_masks_and_windows_together(tiny_checkpoint):
    lm = _lm(tiny_checkpoint)
    with pytest.raises(ValueError, match="all mask with one mode and phase, or all window"):
        lm.plan_conditions({"mask": Condition.parse(heads=[[0, 1]]), "window": Condition.parse(window=4, sink=2)})
    with pytest.raises(ValueError, match="all window with one sink"):
        lm.plan_conditions({"a": Condition.parse(window=4, sink=2), "b": Condition.parse(window=4, sink=1)})


@pytest.mark.parametrize("phase", ["decode", "all"])
def test_rows_with_a_complete_answer_leave_the_batch_without_changing_answers(tiny_checkpoint, phase):
    """A row that meets a stop sequence in its first stage leaves the batch; the other rows go on, each with its
    own cache."""
    lm = _lm(tiny_checkpoint)
    ids = torch.randint(5, 96, (1, 30), generator=torch.Generator().manual_seed(0))
    free = _one_by_one(lm, dict(phase=phase), lambda lm: lm._model_generate(ids, max_length=60, stop=[]).tolist())
    tails = {name: tokens[0][30:] for name, (tokens, _) in free.items()}
    # a stop sequence that "a" generates in its first stage and the other conditions rarely do
    token = min(tails["a"][:FIRST_STAGE], key=lambda token: sum(token in tail for tail in tails.values()))
    stop = lm.tok_decode([token], skip_special_tokens=False)

    def generate(lm):
        out = lm._model_generate(ids, max_length=60, stop=[stop], do_sample=False)[0, 30:].tolist()
        return lm.tok_decode(out).split(stop)[0]  # what lm-eval keeps of a generation

    alone = _one_by_one(lm, dict(phase=phase), generate)
    together = _together(lm, dict(phase=phase), generate)
    assert {name: together[name][0] for name in CONDITIONS} == {name: alone[name][0] for name in CONDITIONS}
    passes = {name: together[name][1]["forward_passes"] for name in ("a", "b", "c")}
    assert passes["a"] <= FIRST_STAGE < min(passes["b"], passes["c"]), passes  # "a" left after its first stage


def test_a_request_that_comes_twice_in_one_call_gets_its_answer_twice(tiny_checkpoint):
    lm = _lm(tiny_checkpoint)
    ids = torch.randint(5, 96, (1, 20), generator=torch.Generator().manual_seed(1))
    twice = (_requests()[0], _requests()[2], _requests()[0])

    def evaluate(lm):
        scores = lm._loglikelihood_tokens(list(twice), disable_tqdm=True)
        return scores, lm._model_generate(ids.repeat(2, 1), max_length=26, stop=[]).tolist()

    alone = _one_by_one(lm, dict(phase="decode"), evaluate)
    together = _together(lm, dict(phase="decode"), evaluate)
    for name in CONDITIONS:
        (scores, generated), (expected_scores, expected) = together[name][0], alone[name][0]
        assert scores[0] == scores[2] and generated[0] == generated[1] and generated == expected
        assert [p for p, _ in scores] == pytest.approx([p for p, _ in expected_scores], abs=2e-4)


def test_a_small_memory_budget_splits_rows_without_changing_results(tiny_checkpoint):
    lm = _lm(tiny_checkpoint)
    masking = dict(phase="decode")
    roomy = _together(lm, masking, _scores)
    tight = _together(lm, masking, _scores, memory_gb=1e-6)  # one row per batch
    for name in CONDITIONS:
        assert [p for p, _ in tight[name][0]] == pytest.approx([p for p, _ in roomy[name][0]], abs=1e-5)
    assert lm._batch.timing.rows == len(CONDITIONS) * len(_requests())


def test_rows_split_into_even_batches_within_the_budget():
    batch = ConditionBatch(tiny_model("llama"))
    rows = list(range(12))
    counts = []
    for memory_gb in torch.logspace(-6, 1, 60).tolist():
        batch.memory_gb = memory_gb
        chunks = batch._chunks(rows, 1024, 1)
        sizes = [len(c) for c in chunks]
        assert [r for c in chunks for r in c] == rows and max(sizes) - min(sizes) <= 1
        counts.append(len(chunks))
    assert counts == sorted(counts, reverse=True) and counts[0] == 12 and counts[-1] == 1
    assert {2, 3, 4, 6} <= set(counts)  # e.g. 12 rows that fit 11 at once run as 6 + 6, not 11 + 1


def test_each_prompt_is_prefilled_once_for_all_conditions(tiny_checkpoint):
    lm = _lm(tiny_checkpoint)
    _together(lm, dict(phase="decode"), _scores)
    # 7 requests, 2 of them share a context: 6 prefixes, each computed once for the 4 conditions
    assert lm._batch.timing.prompts == 6 and lm._batch.timing.rows == 4 * 7


def test_planning_refuses_mixed_phases_and_unknown_names(tiny_checkpoint):
    lm = _lm(tiny_checkpoint)
    with pytest.raises(ValueError, match="all mask with one mode and phase"):
        lm.plan_conditions(
            {"a": Condition.parse(heads=[[0, 1]], phase="decode"), "b": Condition.parse(heads=[[1, 1]], phase="all")}
        )
    lm.plan_conditions({"a": Condition.parse(heads=[[0, 1]])})
    with pytest.raises(KeyError, match="not a planned condition"):
        lm.use_condition("b")
    lm.remask(Condition())  # switching by hand leaves the shared mode
    assert lm._batch is None
