"""Detection prompts: disjoint from the niah task's data, built like niah's prompts, with exact needle spans."""

import pytest

from rh_tasks.detection.prompts import DETECT_HAYSTACK, build_samples, load_needles
from rh_tasks.niah import task as niah
from rh_tasks.niah.haystack import HAYSTACKS
from rh_tasks.shared import task_data


def _paragraphs(text: str) -> set[str]:
    return {p.strip() for p in text.split("\n\n") if len(p.strip()) > 40}


def test_detection_needles_and_haystack_are_disjoint_from_niah():
    detect_needles = load_needles(None)
    niah_needles = task_data.TASK_DATA.read_jsonl(niah.NEEDLES)
    for key in ("id", "needle", "answer", "question"):
        assert not {t[key] for t in detect_needles} & {t[key] for t in niah_needles}, key
    detect_text = task_data.TASK_DATA.read_text(DETECT_HAYSTACK)
    niah_text = task_data.TASK_DATA.read_text(HAYSTACKS["time_machine"])
    assert DETECT_HAYSTACK not in HAYSTACKS.values()
    assert not _paragraphs(detect_text) & _paragraphs(niah_text)
    for triple in niah_needles:
        assert triple["needle"] not in detect_text and triple["answer"] not in detect_text
    for triple in detect_needles:
        assert triple["needle"] not in niah_text


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from model_wrappers.sources.gguf_cache import ModelCacheError, embedded_model_dir

    try:
        return AutoTokenizer.from_pretrained(embedded_model_dir())
    except ModelCacheError as err:
        pytest.skip(f"embedded model unavailable: {err}")


@pytest.mark.parametrize("chat_template", [True, False])
def test_every_needle_span_decodes_to_its_answer(tokenizer, chat_template):
    samples = build_samples(tokenizer, lengths=[300], depths=[0, 50, 100], chat_template=chat_template)
    triples = {t["id"]: t for t in load_needles(None)}
    assert len(samples) == 3 * len(triples)
    for sample in samples:
        triple = triples[sample.needle_id]
        start, end = sample.span
        assert tokenizer.decode(sample.prompt_ids[start:end]).strip() == triple["answer"]
        text = tokenizer.decode(sample.prompt_ids)
        assert text.endswith(("\n" if chat_template else " ") + triple["answer_prefix"])
        assert ("<|im_start|>user" in text) is chat_template
        assert abs(len(sample.prompt_ids) - 300) < (40 if chat_template else 15)


def test_needle_options_are_validated(tmp_path):
    assert [t["id"] for t in load_needles("shed_key,rye_bread")] == ["shed_key", "rye_bread"]
    with pytest.raises(ValueError, match="Unknown detection needle ids"):
        load_needles("sf_sandwich")  # a niah needle: refused, detection data stays disjoint
    bad = tmp_path / "needles.jsonl"
    bad.write_text(
        '{"id": "x", "needle": "The cat sat.", "question": "Who sat?", "answer_prefix": "The", "answer": "dog"}\n'
    )
    with pytest.raises(ValueError, match="must appear verbatim"):
        load_needles(str(bad))
