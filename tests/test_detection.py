"""Detection on a tiny random Llama: fast path == eager reference, a planted copy head is found, runs resume."""

import json

import numpy as np
import pytest
import torch
from detection_models import PLANTED, embedded_tokenizer, needle_samples, planted_copy_head, tiny_llama

from rh_tasks.detection.aggregate import NoAcceptedSamplesError, per_sample_scores
from rh_tasks.detection.attention_probe import attention_probe
from rh_tasks.detection.detect import detect, read_checkpoint, stop_token_ids
from rh_tasks.detection.reference import reference_detect, reference_positions


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def samples(tokenizer):
    return needle_samples(tokenizer)


def test_probe_positions_equal_eager_attention_rows_with_padding(tiny, samples):
    ids = [list(s.prompt_ids) for s in samples[:2]]
    width = max(map(len, ids))
    assert len(ids[0]) != len(ids[1])  # rows of different lengths exercise the left padding
    batch = torch.tensor([[0] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    with attention_probe(tiny) as probe, torch.inference_mode():
        out = tiny.generate(
            input_ids=batch, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0
        )
        positions = probe.positions()  # [steps, L, B, H]
    assert tiny.config._attn_implementation == "sdpa"  # restored
    for row, prompt in enumerate(ids):
        generated = out[row, width:].tolist()
        expected = reference_positions(tiny, prompt, generated)  # [steps, L, H]
        torch.testing.assert_close(positions[:, :, row, :] - (width - len(prompt)), expected, rtol=0, atol=0)


def test_planted_copy_head_ranks_first_with_score_one(tiny, tokenizer, samples):
    results = []
    for sample in samples:
        answer = list(sample.prompt_ids[sample.span[0] : sample.span[1]]) + [tokenizer.eos_token_id]
        with planted_copy_head(tiny, sample, answer):
            results += detect(tiny, tokenizer, [sample], settings={}, max_new_tokens=20, progress=False)
    assert all(r.accepted for r in results)
    for definition in ("set", "multiset"):
        means = per_sample_scores(results, definition).mean(0)  # [L, H]
        assert np.unravel_index(means.argmax(), means.shape) == PLANTED
        assert means[PLANTED] == pytest.approx(1.0)
        others = np.delete(means.ravel(), PLANTED[0] * means.shape[1] + PLANTED[1])
        assert others.max() < 0.2


def test_fast_detection_equals_reference_score_for_score(tiny, tokenizer, samples):
    stop = stop_token_ids(tokenizer, tiny)
    for sample in samples:
        answer = list(sample.prompt_ids[sample.span[0] : sample.span[1]]) + [tokenizer.eos_token_id]
        with planted_copy_head(tiny, sample, answer):
            (fast,) = detect(tiny, tokenizer, [sample], settings={}, max_new_tokens=20, progress=False)
            slow = reference_detect(tiny, tokenizer, sample, max_new_tokens=20, stop_ids=stop)
        assert fast == slow
    plain = detect(tiny, tokenizer, samples, settings={}, max_new_tokens=5, progress=False)  # random weights
    for fast, sample in zip(plain, samples):
        assert fast == reference_detect(tiny, tokenizer, sample, max_new_tokens=5, stop_ids=stop)


def test_an_interrupted_run_resumes_and_other_settings_are_refused(tiny, tokenizer, samples, tmp_path):
    checkpoint = tmp_path / "scores.json.checkpoint.jsonl"
    settings = {"grid": "test"}
    full = detect(
        tiny, tokenizer, samples[:2], settings=settings, checkpoint=checkpoint, max_new_tokens=3, progress=False
    )
    header, first, _ = checkpoint.read_text().splitlines()
    record = json.loads(first) | {"response": "SENTINEL"}  # proves the sample is read back, not recomputed
    checkpoint.write_text("\n".join([header, json.dumps(record), '{"cut sh']) + "\n")

    resumed = detect(
        tiny, tokenizer, samples[:2], settings=settings, checkpoint=checkpoint, max_new_tokens=3, progress=False
    )
    assert [r.sample_id for r in resumed] == [r.sample_id for r in full]
    assert resumed[0].response == "SENTINEL" and resumed[1] == full[1]
    assert len(read_checkpoint(checkpoint, settings)) == 2
    with pytest.raises(ValueError, match="other settings"):
        detect(tiny, tokenizer, samples[:2], settings={"grid": "other"}, checkpoint=checkpoint, progress=False)


def test_no_accepted_sample_is_a_clear_error(tiny, tokenizer, samples):
    results = detect(tiny, tokenizer, samples[:1], settings={}, max_new_tokens=3, progress=False)
    assert not results[0].accepted  # random weights do not answer
    with pytest.raises(NoAcceptedSamplesError, match="shorter --lengths"):
        per_sample_scores(results, "set")


def test_probe_matches_eager_on_every_supported_architecture(model_type, input_ids):
    """GQA, q/k norms, Gemma-3's sliding-window cache and GPT-2's layout all give the eager arg-max."""
    from conftest import tiny_model

    model = tiny_model(model_type)
    with attention_probe(model) as probe, torch.inference_mode():
        out = model.generate(
            input_ids=input_ids[:1], max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0
        )
        positions = probe.positions()[:, :, 0, :]  # [steps, L, H]
    assert model.config._attn_implementation == "sdpa"
    expected = reference_positions(model, input_ids[0].tolist(), out[0, input_ids.shape[1] :].tolist())
    torch.testing.assert_close(positions, expected, rtol=0, atol=0)
