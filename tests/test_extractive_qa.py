"""``extractive_qa``: deterministic grids, gold paragraph at the requested depth, target lengths, SQuAD scoring."""

from __future__ import annotations

import json

import pytest
from lm_eval.utils import handle_non_serializable, hash_string

from rh_tasks.extractive_qa import squad_data
from rh_tasks.extractive_qa import task as extractive_qa
from rh_tasks.extractive_qa.distractor_context import build_context
from rh_tasks.extractive_qa.squad_metrics import contains_words, exact_match, normalize_answer, squad_scores, token_f1
from rh_tasks.shared import task_data, token_splice
from rh_tasks.shared.tokenizer import resolve_tokenizer

SMALL = {"lengths": [512, 1024], "depths": [0, 25, 50, 75, 100], "questions_per_cell": 3, "question_seed": 1234}


@pytest.fixture(scope="module")
def tokenizer():
    """The embedded model's tokenizer: lengths are measured in the evaluated model's tokens."""
    return resolve_tokenizer()


@pytest.fixture(scope="module")
def grid(tokenizer):
    return extractive_qa.build_grid(tokenizer, limit=8192, **SMALL)


def _doc_hash(doc: dict) -> str:
    """As lm-eval's logged ``doc_hash``."""
    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


# --- SQuAD scoring, against values worked out by hand --------------------------------------------------------


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  an  apple,  a pear ", "apple pear"),
        ("Theatre", "theatre"),
        ("1,000 B.C.", "1000 bc"),
    ],
)
def test_normalisation_follows_the_official_script(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize(
    "prediction, gold, em, f1",
    [
        ("Denver Broncos", "the Denver Broncos", 1.0, 1.0),
        ("Denver Broncos won", "Denver Broncos", 0.0, 0.8),  # p = 2/3, r = 1
        ("Broncos", "Denver Broncos", 0.0, 2 / 3),  # p = 1, r = 1/2
        ("the Carolina Panthers", "Denver Broncos", 0.0, 0.0),
        ("Santa Clara Santa", "Santa Clara, California", 0.0, 2 * (2 / 3 * 2 / 3) / (4 / 3)),  # p = r = 2/3
        ("", "Denver", 0.0, 0.0),
        ("the", "a", 1.0, 1.0),  # both normalise to nothing
    ],
)
def test_exact_match_and_f1_on_known_pairs(prediction, gold, em, f1):
    assert exact_match(prediction, gold) == em
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_contains_words_respects_word_boundaries():
    assert contains_words("It was the Denver Broncos.", "Denver Broncos") == 1.0
    assert contains_words("Denverite", "Denver") == 0.0
    assert contains_words("anything", "the") == 0.0  # an answer that normalises to nothing is never "contained"


def test_scores_take_the_best_gold_answer():
    golds = ["Charleston, South Carolina", "Charleston"]
    assert squad_scores("Charleston", golds) == {"exact_match": 1.0, "f1": 1.0, "contains_words": 1.0}
    assert squad_scores("near Charleston, South Carolina", golds) == {
        "exact_match": 0.0,
        "f1": pytest.approx(6 / 7),  # p = 3/4, r = 1 against the first gold
        "contains_words": 1.0,
    }


def test_score_reads_the_first_non_empty_line():
    doc = {"answers": ["Narrow alleys"]}
    assert extractive_qa.score(doc, ["\n  narrow alleys.\nQuestion: more"]) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "contains_words": 1.0,
    }
    assert extractive_qa.score(doc, [""]) == {"exact_match": 0.0, "f1": 0.0, "contains_words": 0.0}


def test_a_question_without_gold_answers_is_an_error():
    with pytest.raises(ValueError, match="at least one gold answer"):
        squad_scores("x", [])


# --- data ------------------------------------------------------------------------------------------------------


def test_packaged_squad_is_v1_1_dev():
    paragraphs, questions = squad_data.load_dev()
    assert (len(paragraphs), len(questions)) == (2067, 10570)
    assert len({p.article_id for p in paragraphs}) == 48
    assert all(q.answers and all(a in q.paragraph.text for a in q.answers) for q in questions)


def test_question_choice_is_seeded_and_extends():
    five, ten = squad_data.choose_questions(5, 1234), squad_data.choose_questions(10, 1234)
    assert ten[:5] == five
    assert len({q.paragraph.id for q in ten}) == 10
    assert squad_data.choose_questions(5, 99) != five


# --- the grid --------------------------------------------------------------------------------------------------


def test_grid_layout_and_logged_fields(grid):
    assert len(grid) == 3 * 2 * 5
    cells = [(d["length"], d["depth"]) for d in grid[:10]]
    assert cells == [(n, d) for n in SMALL["lengths"] for d in SMALL["depths"]]  # question-major order
    assert len({d["id"] for d in grid[:10]}) == 1
    for doc in grid:
        assert {"id", "question", "answers", "title", "article_id", "context_id", "length", "depth"} <= doc.keys()
        assert doc["context_id"].startswith(f"{doc['article_id']}/")


def test_same_metadata_gives_same_prompts_and_doc_hashes(tokenizer, grid):
    again = extractive_qa.build_grid(tokenizer, limit=8192, **SMALL)
    assert [extractive_qa.doc_to_text(d) for d in again] == [extractive_qa.doc_to_text(d) for d in grid]
    assert [_doc_hash(d) for d in again] == [_doc_hash(d) for d in grid]
    other = extractive_qa.build_grid(tokenizer, limit=8192, **(SMALL | {"question_seed": 7}))
    assert [_doc_hash(d) for d in other] != [_doc_hash(d) for d in grid]


def test_prompts_hit_the_target_length(tokenizer, grid):
    for doc in grid:
        measured = token_splice.count(tokenizer, extractive_qa.doc_to_text(doc))
        assert measured == doc["prompt_tokens"]
        assert doc["length"] - 8 <= measured <= doc["length"], (doc["id"], doc["length"], measured)


def test_gold_paragraph_sits_at_the_requested_depth(tokenizer, grid):
    paragraphs = {p.id: p for p in squad_data.load_dev()[0]}
    for doc in grid:
        gold = paragraphs[doc["context_id"]].text.strip()
        context = doc["context"]
        assert context.count(gold) == 1
        assert context.index(gold) == doc["gold_start"]
        passages = context.split("\n\n")
        if doc["depth"] == 0:
            assert context.startswith(gold)
        elif doc["depth"] == 100:
            assert context.endswith(gold)
        # Passages are never split, so the realised depth is off by at most half a neighbouring passage.
        before = token_splice.count(tokenizer, context[: doc["gold_start"]])
        distractor_tokens = token_splice.count(tokenizer, context) - token_splice.count(tokenizer, gold)
        slack = max(token_splice.count(tokenizer, p) for p in passages if p != gold) / 2 + 4
        assert abs(before - distractor_tokens * doc["depth"] / 100) <= slack, (doc["depth"], before)
        assert abs(doc["depth_actual"] - doc["depth"]) <= 100 * slack / distractor_tokens


def test_depths_of_one_question_share_their_distractors(grid):
    cell = [d for d in grid[:5]]  # one question, one length, five depths
    gold = cell[0]["context"].split("\n\n")[0]
    distractor_sets = [sorted(p for p in d["context"].split("\n\n") if p != gold) for d in cell]
    assert all(s == distractor_sets[0] for s in distractor_sets)


def test_distractors_come_from_other_articles_and_hide_the_answer(grid):
    paragraphs = squad_data.load_dev()[0]
    article_of = {p.text.strip(): p.article_id for p in paragraphs}
    for doc in grid:
        passages = doc["context"].split("\n\n")
        distractors = [p for i, p in enumerate(passages) if i != doc["gold_position"]]
        whole = [p for p in distractors if p in article_of]
        assert len(whole) >= len(distractors) - 1  # only the last distractor may be cut
        assert all(article_of[p] != doc["article_id"] for p in whole)
        assert not any(contains_words(p, answer) for p in distractors for answer in doc["answers"])


def test_closed_book_asks_the_same_questions():
    closed = extractive_qa.build_closed_book(questions_per_cell=3, question_seed=1234, seed=5, pretrained="ignored")[
        "test"
    ]
    assert [d["id"] for d in closed] == [q.id for q in squad_data.choose_questions(3, 1234)]
    prompt = extractive_qa.doc_to_text_closed_book(closed[0])
    assert prompt.endswith(f"Question: {closed[0]['question']}\nAnswer:")
    assert "passages" not in prompt


# --- bad metadata ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lengths": [8192]}, r"length 8192 plus max_gen_toks 32 exceeds the model's context of 8192 tokens.*<= 8160"),
        ({"lengths": [100]}, r"length 100 must be an integer number of tokens >= 128"),
        ({"lengths": [200]}, r"length 200 cannot hold question .* Use lengths >= \d+"),
        ({"lengths": []}, r"lengths=\[\] must be a non-empty list"),
        ({"depths": [-10]}, r"depth -10 must be a percentage between 0 and 100"),
        ({"depths": [150]}, r"depth 150 must be a percentage between 0 and 100"),
        ({"questions_per_cell": 0}, r"questions_per_cell=0 must be an integer between 1 and 2067"),
    ],
)
def test_bad_metadata_is_a_clear_error(tokenizer, change, message):
    with pytest.raises(ValueError, match=message):
        extractive_qa.build_grid(tokenizer, limit=8192, **(SMALL | {"lengths": [1024]} | change))


def test_builder_checks_against_the_model_context():
    with pytest.raises(ValueError, match="context of 8192 tokens"):
        extractive_qa.build(lengths=[8180])
    with pytest.raises(ValueError, match="context of 2048 tokens"):
        extractive_qa.build(lengths=[2048], max_length=2048)


def test_build_context_rejects_a_gold_passage_that_cannot_fit(tokenizer):
    with pytest.raises(ValueError, match="cannot hold a gold passage"):
        build_context(tokenizer, "word " * 100, ["filler"] * 10, 50, 50)


@pytest.fixture
def squad_copy(data_copy):
    """The damageable data copy, with the parsed SQuAD cache dropped around the test."""
    squad_data.load_dev.cache_clear()
    yield data_copy
    squad_data.load_dev.cache_clear()


def test_modified_or_missing_data_is_an_error(squad_copy):
    path = squad_copy / squad_data.PACKAGED_DEV
    path.write_bytes(b"tampered" + path.read_bytes())
    with pytest.raises(task_data.PackagedDataError, match="was modified"):
        squad_data.load_dev()
    path.unlink()
    task_data.TASK_DATA.path.cache_clear()
    with pytest.raises(task_data.PackagedDataError, match="is missing"):
        squad_data.load_dev()


# --- end to end on the embedded model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_runs_through_lm_eval_on_the_embedded_model():
    """One question, one cell, chat template: per-sample metrics and grid fields reach the logged samples."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from model_wrappers.sources.gguf_cache import embedded_model_dir
    from rh_tasks.plugin.registration import task_configs_dir

    model_dir = str(embedded_model_dir())
    metadata = {"pretrained": model_dir, "lengths": [512], "depths": [50], "questions_per_cell": 1}
    manager = TaskManager(include_defaults=False, include_path=str(task_configs_dir()), metadata=metadata)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model_dir, "dtype": "float32"},
        device="cpu",
        tasks=["extractive_qa", "extractive_qa_closed_book"],
        task_manager=manager,
        apply_chat_template=True,
        log_samples=True,
    )
    for task in ("extractive_qa", "extractive_qa_closed_book"):
        (sample,) = out["samples"][task]
        assert {"exact_match", "f1", "contains_words"} <= sample.keys()
        assert 0.0 <= sample["f1"] <= 1.0
        assert "exact_match,none" in out["results"][task]
    sample = out["samples"]["extractive_qa"][0]
    assert (sample["doc"]["length"], sample["doc"]["depth"]) == (512, 50)
    assert sample["doc"]["prompt_tokens"] <= 512
