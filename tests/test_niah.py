"""The niah task: deterministic prompts, needles where they were asked for, lengths that hit the target."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from model_wrappers.sources.gguf_cache import embedded_model_dir
from rh_tasks.niah.haystack import HAYSTACKS, insert_needle
from rh_tasks.niah.task import DEFAULTS, build, build_grid, doc_to_text, mean_present, score
from rh_tasks.shared import task_data


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def haystack():
    return task_data.TASK_DATA.read_text(HAYSTACKS["time_machine"])


def _grid(tokenizer, **overrides):
    options = {**DEFAULTS, "lengths": [512, 1024], "depths": [0, 50, 100]} | overrides
    return build_grid(tokenizer, limit=8192, **options)


def test_same_metadata_gives_the_same_prompts(tokenizer):
    first, second = _grid(tokenizer), _grid(tokenizer)
    assert [doc_to_text(d) for d in first] == [doc_to_text(d) for d in second]
    assert len(first) == 2 * 3 * 26
    assert [d["needle_id"] for d in _grid(tokenizer, shuffle_seed=1)] != [d["needle_id"] for d in first]


@pytest.mark.parametrize("depth", [0, 10, 50, 90, 100])
def test_needle_sits_at_the_requested_depth_on_a_sentence_boundary(tokenizer, haystack, depth):
    needle = "The password to the lighthouse storeroom is violet harbor ninety-two."
    context = insert_needle(tokenizer, haystack, needle, 1000, depth)
    assert context.text[context.needle_start : context.needle_start + len(needle)] == needle
    before = context.text[: context.needle_start]
    position = len(tokenizer(before, add_special_tokens=False)["input_ids"]) / context.num_tokens * 100
    assert abs(position - depth) < 5, f"needle at {position:.1f}% instead of {depth}%"
    assert before == "" or before.rstrip()[-1] in ".!?”’\"'"


@pytest.mark.parametrize("length", [256, 1024, 3000])
def test_prompt_lengths_hit_the_target(tokenizer, length):
    for doc in _grid(tokenizer, lengths=[length], depths=[50]):
        prompt = doc_to_text(doc)
        tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert length - 8 <= tokens <= length + 2, f"{tokens} tokens for target {length}"


def test_short_haystack_is_repeated(tokenizer):
    context = insert_needle(tokenizer, "One sentence here. Another one there.", "The key is red.", 200, 50)
    assert context.num_tokens >= 190 and context.text.count("The key is red.") == 1


def test_empty_haystack_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="haystack is empty"):
        insert_needle(tokenizer, " \n ", "The key is red.", 200, 50)


def test_docs_carry_what_the_report_needs(tokenizer):
    doc = _grid(tokenizer)[0]
    assert {"length", "depth", "needle_id", "context_id", "answer", "answer_prefix", "question"} <= doc.keys()
    assert doc["needle"] in doc["context"]


def test_scoring():
    doc = {"answer": "violet harbor ninety-two", "length": 1024}
    assert score(doc, [" violet harbor ninety-two."]) == {"contains": 1.0, "rouge1_recall": 1.0}
    partial = score(doc, [" violet harbour, I think"])
    # ROUGE tokens of the answer: violet, harbor, ninety, two; only "violet" is recalled.
    assert partial["contains"] == 0.0 and partial["rouge1_recall"] == pytest.approx(1 / 4)
    assert mean_present([1.0, None, 0.0, None]) == 0.5


def test_every_doc_logs_every_per_length_metric():
    from lm_eval.tasks import TaskManager

    from rh_tasks.plugin.registration import task_configs_dir

    metadata = {"lengths": [256, 512], "depths": [50], "needles": ["sf_sandwich"]}
    manager = TaskManager(include_defaults=False, include_path=[str(task_configs_dir())], metadata=metadata)
    task = manager.load(["niah"])["tasks"]["niah"]
    doc = next(d for d in task.eval_docs if d["length"] == 256)
    metrics = task.process_results(doc, [" eat a sandwich and sit in Dolores Park on a sunny day."])
    assert metrics == {"contains": 1.0, "rouge1_recall": 1.0, "contains@256": 1.0, "contains@512": None}
    assert {"contains@256", "contains@512"} <= task.aggregation().keys()
    assert task.higher_is_better()["contains@512"] is True


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lengths=[8170]), "exceeds the model's context of 8192"),
        (dict(lengths=[32]), "must be an integer number of tokens >= 64"),
        (dict(depths=[-5]), "between 0 and 100"),
        (dict(depths=[150]), "between 0 and 100"),
        (dict(needles=["no_such_needle"]), "Unknown needle ids"),
        (dict(haystack="/no/such/file.txt"), "neither a packaged haystack"),
        (dict(lengths=[]), "non-empty list"),
    ],
)
def test_bad_metadata_is_a_clear_error(tokenizer, overrides, message):
    with pytest.raises(ValueError, match=message):
        _grid(tokenizer, **overrides)


def test_builder_reads_metadata_and_model_args(tokenizer):
    dataset = build(lengths=[256], depths=[50], needles=["sf_sandwich"], heads="retrieval", seed=3)["test"]
    assert len(dataset) == 1 and dataset[0]["length"] == 256


def test_modified_or_missing_packaged_file_is_refused(data_copy):
    (data_copy / "needles" / "niah.jsonl").write_text("{}\n")
    (data_copy / "needles" / "detect.jsonl").unlink()
    with pytest.raises(task_data.PackagedDataError, match="was modified"):
        task_data.TASK_DATA.path("needles/niah.jsonl")
    with pytest.raises(task_data.PackagedDataError, match="is missing"):
        task_data.TASK_DATA.path("needles/detect.jsonl")


def test_packaged_files_match_the_manifest():
    for name in task_data.TASK_DATA.manifest():
        task_data.TASK_DATA.path(name)
