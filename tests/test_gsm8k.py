"""``gsm8k_cot`` must be lm-eval's built-in task on packaged data; ``gsm8k_direct`` the same items answered directly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import lm_eval.tasks
import pytest
from lm_eval.tasks import TaskManager

from rh_tasks.gsm8k import task as gsm8k
from rh_tasks.plugin.registration import task_configs_dir
from rh_tasks.shared import task_data

BUILTIN_DIR = Path(lm_eval.tasks.__file__).parent / "gsm8k"
N_DOCS = 20
SAME_KEYS = (
    "output_type",
    "doc_to_text",
    "doc_to_target",
    "target_delimiter",
    "fewshot_delimiter",
    "num_fewshot",
    "repeats",
    "generation_kwargs",
    "filter_list",
    "metric_list",
    "test_split",
)


def _json_chat_template(messages, add_generation_prompt=True):
    """Serialises the chat turns exactly, so chat-formatted prompts can be compared without a tokenizer."""
    return json.dumps({"messages": messages, "add_generation_prompt": add_generation_prompt})


@pytest.fixture(scope="module")
def tasks():
    """Our gsm8k_cot / gsm8k_direct and the built-in gsm8k_cot, the latter fed our packaged docs instead of the hub."""
    ours = TaskManager(include_defaults=False, include_path=str(task_configs_dir()))
    ours = ours.load(["gsm8k_cot", "gsm8k_direct"])["tasks"]
    packaged = gsm8k.load_test()

    def offline_hub(path, name=None, **kwargs):
        assert (path, name) == gsm8k.HUB_DATASET
        return datasets.DatasetDict({"test": packaged})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "load_dataset", offline_hub)
        builtin = TaskManager(include_defaults=False, include_path=str(BUILTIN_DIR)).load("gsm8k_cot")["tasks"]
    return {"ours": ours["gsm8k_cot"], "direct": ours["gsm8k_direct"], "builtin": builtin["gsm8k_cot"]}


def _config(task) -> dict:
    return {key: getattr(task.config, key) for key in SAME_KEYS}


def test_packaged_test_set_is_the_official_one():
    test = gsm8k.load_test()
    assert len(test) == 1319
    assert test.column_names == ["question", "answer"]
    assert test[0]["question"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert all("\n#### " in answer for answer in test["answer"])


def test_our_yaml_replaces_the_builtin():
    entry = TaskManager().task_index["gsm8k_cot"]
    assert entry.yaml_path == task_configs_dir() / "gsm8k_cot" / "gsm8k_cot.yaml"


def test_config_equals_builtin(tasks):
    assert _config(tasks["ours"]) == _config(tasks["builtin"])
    assert tasks["ours"].config.fewshot_config == tasks["builtin"].config.fewshot_config
    assert tasks["ours"].VERSION == tasks["builtin"].VERSION


def test_docs_equal_builtin(tasks):
    assert list(tasks["ours"].test_docs()) == list(tasks["builtin"].test_docs())


@pytest.mark.parametrize(
    "chat",
    [
        {},
        {"apply_chat_template": True, "chat_template": _json_chat_template},
        {"apply_chat_template": True, "fewshot_as_multiturn": True, "chat_template": _json_chat_template},
    ],
    ids=["plain", "chat", "chat-multiturn"],
)
def test_prompts_equal_builtin(tasks, chat):
    """Character-for-character: the rendered 8-shot prompts and the generation requests of the first 20 docs."""
    requests = {}
    for name in ("ours", "builtin"):
        task = tasks[name]
        task.build_all_requests(limit=N_DOCS, **chat)
        requests[name] = [(inst.doc_id, inst.args) for inst in task.instances]
    assert len(requests["ours"]) == N_DOCS
    for (doc_id, ours), (_, builtin) in zip(requests["ours"], requests["builtin"], strict=True):
        assert ours == builtin, f"doc {doc_id}: prompt differs from lm-eval's gsm8k_cot"
    assert "Q: There are 15 trees in the grove." in requests["ours"][0][1][0]


def test_direct_uses_the_same_items_and_scoring(tasks):
    cot, direct = tasks["ours"], tasks["direct"]
    assert list(direct.test_docs()) == list(cot.test_docs())
    assert _config(direct) == _config(cot)
    cot_shots = cot.config.fewshot_config.samples
    direct_shots = direct.config.fewshot_config.samples
    assert [s["question"] for s in direct_shots] == [s["question"] for s in cot_shots]
    for cot_shot, direct_shot in zip(cot_shots, direct_shots, strict=True):
        final = re.search(r"The answer is (\-?[0-9\.\,]+)\.$", cot_shot["target"]).group(1)
        assert direct_shot["target"] == f"The answer is {final}."


def test_direct_prompt_has_no_reasoning(tasks):
    prompt = tasks["direct"].fewshot_context(tasks["direct"].test_docs()[0], num_fewshot=8)
    assert prompt.startswith("Q: There are 15 trees in the grove.")
    assert "\nA: The answer is 6.\n\nQ: If there are 3 cars" in prompt
    assert "=" not in prompt.split("\n\n")[0]
    assert prompt.endswith("farmers' market?\nA:")


def test_hub_is_an_explicit_option(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or "hub-test")
    assert gsm8k.cot_dataset(source="hub", pretrained="x") == {"test": "hub-test"}
    assert calls == [(gsm8k.HUB_DATASET, {"split": "test"})]


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="source='github'.*'packaged'.*'hub'"):
        gsm8k.cot_dataset(source="github")


def test_name_clash_is_logged(caplog):
    with caplog.at_level("INFO", logger="rh_tasks.gsm8k"):
        gsm8k.cot_dataset()
    assert "rh-eval's copy of lm-eval's gsm8k_cot is active" in caplog.text
    assert "gsm8k/test.jsonl.gz" in caplog.text


def test_modified_data_is_an_error(data_copy):
    path = data_copy / gsm8k.PACKAGED_TEST
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(task_data.PackagedDataError, match="was modified"):
        gsm8k.load_test()


def test_missing_data_is_an_error(data_copy):
    (data_copy / gsm8k.PACKAGED_TEST).unlink()
    with pytest.raises(task_data.PackagedDataError, match="is missing"):
        gsm8k.load_test()


@pytest.mark.slow
def test_runs_through_lm_eval_on_the_embedded_model():
    """One problem per task: both filters score every sample, on packaged data, with no hub access."""
    import lm_eval

    from model_wrappers.sources.gguf_cache import embedded_model_dir

    model_dir = str(embedded_model_dir())
    manager = TaskManager(
        include_defaults=False, include_path=str(task_configs_dir()), metadata={"pretrained": model_dir}
    )
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model_dir, "dtype": "float32"},
        device="cpu",
        tasks=["gsm8k_cot", "gsm8k_direct"],
        task_manager=manager,
        limit=1,
        gen_kwargs={"max_gen_toks": 48},
        log_samples=True,
    )
    for task in ("gsm8k_cot", "gsm8k_direct"):
        samples = out["samples"][task]
        assert sorted(s["filter"] for s in samples) == ["flexible-extract", "strict-match"]
        assert all(s["exact_match"] in (0.0, 1.0) for s in samples)
        assert samples[0]["target"] == "18"
