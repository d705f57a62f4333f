"""HeadKV's and the query-focused score: the streaming probe equals the definitions applied to full eager attention.

The references here are written out literally from the projects' code (HeadKV ``retrieval_calculate``, QRHead
``score_docs_per_head_for_detection``) on the full ``[heads, S, S]`` softmax attention of an eager forward pass
with ``output_attentions``, independent of the probe and of ``attention_mass``.
"""

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIGS, VOCAB, tiny_model
from detection_models import PLANTED, embedded_tokenizer, needle_samples, planted_copy_head, tiny_llama

from rh_tasks.detection.aggregate import NoAcceptedSamplesError, per_sample_scores
from rh_tasks.detection.attention_mass import query_focus, top_k_span_mass
from rh_tasks.detection.attention_probe import attention_probe
from rh_tasks.detection.detect import detect, score_batch, stop_token_ids
from rh_tasks.detection.prompts import DetectionSample

ALL = ("set", "multiset", "retrieval_reasoning", "query_focus")


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def samples(tokenizer):
    return needle_samples(tokenizer)


def eager_attention(model, ids: list[int]) -> list[torch.Tensor]:
    """Per layer, ``[H, S, S]`` softmax attention of an eager forward pass over ``ids``."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            attentions = model(torch.tensor([ids]), output_attentions=True).attentions
    finally:
        model.set_attn_implementation(original)
    return [a[0].float() for a in attentions]


def literal_retrieval_reasoning(model, sample, generated: list[int], steps: int) -> np.ndarray:
    """HeadKV: per step, for the top-n keys of the head's row, add v / n if the key is in the needle span."""
    attention = eager_attention(model, list(sample.prompt_ids) + generated[:-1])
    start, end = sample.span
    n = end - start
    first = len(sample.prompt_ids) - 1  # the last prompt row predicts the first generated token
    scores = np.zeros((len(attention), attention[0].shape[0]))
    for step in range(min(steps, n)):  # HeadKV stops after len(answer tokens) steps
        for layer, a in enumerate(attention):
            for head in range(a.shape[0]):
                values, index = a[head, first + step].topk(n)
                for v, i in zip(values, index):
                    if start <= i < end:
                        scores[layer, head] += v.item() / n
    return scores


def literal_query_focus(model, sample) -> np.ndarray:
    """QRHead: mean over query rows of the attention to each doc token, minus the null query's; mean-2std cut."""
    real = eager_attention(model, list(sample.prompt_ids))
    null = eager_attention(model, list(sample.null_prompt_ids))
    q0, q1 = sample.question
    n0, n1 = sample.question[0], len(sample.null_prompt_ids)
    s0, s1 = sample.span
    scores = np.zeros((len(real), real[0].shape[0]))
    for layer in range(len(real)):
        for head in range(real[layer].shape[0]):
            calibrated = real[layer][head, q0:q1, s0:s1].mean(0) - null[layer][head, n0:n1, s0:s1].mean(0)
            threshold = calibrated.mean() - 2 * calibrated.std()
            scores[layer, head] = (calibrated * (calibrated > threshold)).sum().item()
    return scores


class Tokens:
    """Stands in for a tokenizer where the prompts are made of raw ids: padding id and a readable decode."""

    pad_token_id = 0
    eos_token_id = None

    @staticmethod
    def decode(ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids)


def synthetic_sample(seed: int, length: int) -> DetectionSample:
    """Random ids; the needle span sits mid-prompt, the question near the end, a 2-token null question."""
    ids = torch.randint(3, VOCAB, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
    span = (length // 3, length // 3 + 5)
    question = (length - 8, length - 3)
    return DetectionSample(
        sample_id=f"s{seed}",
        needle_id="n",
        length=length,
        depth=50,
        prompt_ids=tuple(ids),
        span=span,
        answer=" ".join(map(str, ids[span[0] : span[1]])),
        question=question,
        null_question_ids=(7, 9),
    )


def test_top_k_span_mass_and_query_focus_by_hand():
    probs = torch.tensor([[0.05, 0.40, 0.30, 0.05, 0.20], [0.10, 0.10, 0.10, 0.60, 0.10]])
    # span = keys 1..2, k = 2: head 0's top 2 (0.40, 0.30) both inside; head 1's top 2 are key 3 and a tie at 0.10
    torch.testing.assert_close(top_k_span_mass(probs, (1, 3), 2)[0], torch.tensor(0.35))
    assert top_k_span_mass(probs, (1, 3), 2)[1] <= 0.05 + 1e-7
    assert top_k_span_mass(probs[:, :2], (0, 2), 4).tolist() == pytest.approx([0.45 / 4, 0.2 / 4])  # window < k

    question = torch.tensor([0.30, 0.20, 0.25, 0.25, 0.28, -5.0])
    null = torch.zeros(6)
    # mean - 2 std of (0.30, 0.20, 0.25, 0.25, 0.28, -5.0) is far below every token but the outlier -5.0
    assert query_focus(question, null).item() == pytest.approx(1.28)
    assert query_focus(torch.tensor([0.5]), torch.tensor([0.2])).item() == pytest.approx(0.3)  # one token: no cut


def test_streaming_scores_equal_the_literal_definitions_on_full_eager_attention(tokenizer, tiny, samples):
    """Real prompts (chat template, needle and question spans from the tokenizer), batched with left padding."""
    stop = stop_token_ids(tokenizer, tiny)
    with attention_probe(tiny) as probe:
        results = score_batch(tiny, tokenizer, samples, probe, definitions=ALL, max_new_tokens=6, stop_ids=stop)
    for sample, result in zip(samples, results):
        with torch.inference_mode():
            out = tiny.generate(
                input_ids=torch.tensor([sample.prompt_ids]), max_new_tokens=6, do_sample=False, eos_token_id=stop,
                pad_token_id=stop[0],
            )  # fmt: skip
        generated = out[0, len(sample.prompt_ids) :].tolist()
        stops = [i for i, t in enumerate(generated) if t in stop]
        steps = stops[0] + 1 if stops else len(generated)
        np.testing.assert_allclose(
            result.scores["retrieval_reasoning"], literal_retrieval_reasoning(tiny, sample, generated, steps),
            atol=1e-5, rtol=1e-4,
        )  # fmt: skip
        np.testing.assert_allclose(
            result.scores["query_focus"], literal_query_focus(tiny, sample), atol=1e-5, rtol=1e-4
        )
        assert np.abs(result.scores["query_focus"]).max() > 1e-4  # the calibration leaves something to compare
    one = detect(tiny, tokenizer, samples[:1], settings={}, definitions=ALL, max_new_tokens=6, progress=False)
    for name in ALL:  # a batch of one and a left-padded batch of two agree
        np.testing.assert_allclose(one[0].scores[name], results[0].scores[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_streaming_scores_equal_the_literal_definitions_on_every_architecture(model_type):
    """GQA, q/k norms, Gemma-3's sliding window (4 keys, shorter than the span; its null question is prefilled
    whole, as its cache cannot be cut back) and GPT-2's layer-wise scaling."""
    model = tiny_model(model_type)
    samples = [synthetic_sample(1, 40), synthetic_sample(2, 46)]
    with attention_probe(model) as probe:  # one at a time: the null question continues the decode's KV cache
        results = [
            score_batch(model, Tokens(), [s], probe, definitions=ALL[2:], max_new_tokens=5, stop_ids=[VOCAB + 1])[0]
            for s in samples
        ]
    assert model.config._attn_implementation == "sdpa"
    for sample, result in zip(samples, results):
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([sample.prompt_ids]), max_new_tokens=5, min_new_tokens=5, do_sample=False,
                pad_token_id=0,
            )  # fmt: skip
        generated = out[0, len(sample.prompt_ids) :].tolist()
        expected = literal_retrieval_reasoning(model, sample, generated, len(generated))
        assert expected.max() > 1e-3  # some head's top keys fall in the span: there is something to compare
        np.testing.assert_allclose(result.scores["retrieval_reasoning"], expected, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(
            result.scores["query_focus"], literal_query_focus(model, sample), atol=1e-5, rtol=1e-4
        )
        assert set(result.scores) == set(ALL[2:])


def test_planted_copy_head_ranks_first_under_retrieval_reasoning(tiny, tokenizer, samples):
    results = []
    for sample in samples:
        answer = list(sample.prompt_ids[sample.span[0] : sample.span[1]]) + [tokenizer.eos_token_id]
        with planted_copy_head(tiny, sample, answer):
            results += detect(
                tiny, tokenizer, [sample], settings={}, definitions=ALL[:3], max_new_tokens=20, progress=False
            )
    means = per_sample_scores(results, "retrieval_reasoning").mean(0)  # [L, H]
    assert np.unravel_index(means.argmax(), means.shape) == PLANTED
    assert 0 < means[PLANTED] <= 1


def test_query_focus_counts_every_sample_and_the_others_only_answered_ones(tiny, tokenizer, samples):
    results = detect(tiny, tokenizer, samples, settings={}, definitions=ALL, max_new_tokens=3, progress=False)
    assert not any(r.accepted for r in results)  # random weights do not answer
    assert per_sample_scores(results, "query_focus").shape == (len(samples), 2, 4)
    with pytest.raises(NoAcceptedSamplesError, match="No detection sample was answered"):
        per_sample_scores(results, "retrieval_reasoning")


def test_a_checkpoint_resumes_only_with_the_same_definitions(tiny, tokenizer, samples, tmp_path):
    checkpoint = tmp_path / "scores.json.checkpoint.jsonl"
    kwargs = dict(settings={"grid": "test"}, checkpoint=checkpoint, max_new_tokens=2, progress=False)
    first = detect(tiny, tokenizer, samples[:1], definitions=ALL, **kwargs)
    again = detect(tiny, tokenizer, samples[:1], definitions=ALL, **kwargs)  # read back, nothing recomputed
    assert again == first and set(first[0].scores) == set(ALL)
    with pytest.raises(ValueError, match="other definitions"):
        detect(tiny, tokenizer, samples[:1], definitions=("set",), **kwargs)
