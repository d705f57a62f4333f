"""``mmlu`` must be lm-eval's built-in MMLU group on packaged data, with a seeded balanced subset on request."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import lm_eval.tasks
import pytest
from lm_eval.tasks import TaskManager
from lm_eval.utils import handle_non_serializable, hash_string

from rh_tasks.mmlu import task as mmlu
from rh_tasks.plugin.registration import task_configs_dir
from rh_tasks.shared import task_data

BUILTIN_DIR = Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"
N_DOCS = 20
SAME_KEYS = (
    "task_alias",
    "description",
    "output_type",
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "target_delimiter",
    "fewshot_delimiter",
    "fewshot_split",
    "num_fewshot",
    "metric_list",
    "test_split",
)


def _ours(**metadata) -> dict:
    return TaskManager(include_defaults=False, include_path=str(task_configs_dir()), metadata=metadata).load("mmlu")


def _packaged_as_hub(path, name=None, **kwargs):
    assert path == mmlu.HUB_DATASET
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(mmlu.read_split(name, split)) for split in ("test", "dev")}
    )


@pytest.fixture(scope="module")
def loaded():
    """Our mmlu group and the built-in one, the latter fed our packaged docs instead of the hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "load_dataset", _packaged_as_hub)
        builtin = TaskManager(include_defaults=False, include_path=str(BUILTIN_DIR)).load("mmlu")
    return {"ours": _ours(), "builtin": builtin}


def _doc_hashes(task) -> list[str]:
    return [
        hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))
        for doc in task.test_docs()
    ]


def test_packaged_data_has_all_subjects():
    subjects = mmlu.subjects()
    assert len(subjects) == 57
    assert sum(len(mmlu.read_split(s, "test")) for s in subjects) == 14042
    assert all(len(mmlu.read_split(s, "dev")) == 5 for s in subjects)
    first = mmlu.read_split("abstract_algebra", "test")[0]
    assert first == {
        "question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",
        "subject": "abstract_algebra",
        "choices": ["0", "4", "2", "6"],
        "answer": 1,
    }


def test_our_group_replaces_the_builtin():
    index = TaskManager().task_index
    for name in ("mmlu", "mmlu_stem", "mmlu_abstract_algebra", "mmlu_world_religions"):
        assert index[name].yaml_path.parent == task_configs_dir() / "mmlu", name
    assert len(index["mmlu_humanities_tasks"].tags) == 13


def test_group_structure_equals_builtin(loaded):
    ours, builtin = loaded["ours"], loaded["builtin"]
    assert ours["group_map"] == builtin["group_map"]
    assert sorted(ours["tasks"]) == sorted(builtin["tasks"])
    assert len(ours["tasks"]) == 57
    for name, group in ours["groups"].items():
        assert group.alias == builtin["groups"][name].alias
        assert group.aggregate_metric_list == builtin["groups"][name].aggregate_metric_list


def test_subject_configs_equal_builtin(loaded):
    for name, task in loaded["ours"]["tasks"].items():
        builtin = loaded["builtin"]["tasks"][name]
        assert {k: getattr(task.config, k) for k in SAME_KEYS} == {k: getattr(builtin.config, k) for k in SAME_KEYS}
        assert task.config.fewshot_config.sampler == builtin.config.fewshot_config.sampler
        assert list(task.test_docs()) == list(builtin.test_docs()), name
        assert list(task.fewshot_docs()) == list(builtin.fewshot_docs()), name


@pytest.mark.parametrize("num_fewshot, every", [(0, 1), (5, 6)], ids=["0-shot-all-subjects", "5-shot-every-6th"])
def test_prompts_equal_builtin(loaded, num_fewshot, every):
    """Character-for-character: all four loglikelihood requests of the first 20 docs of each subject checked.

    lm-eval recompiles the Jinja template for every shot, so 5-shot prompts are checked on every 6th subject only.
    """
    for name in sorted(loaded["ours"]["tasks"])[::every]:
        task = loaded["ours"]["tasks"][name]
        requests = {}
        for side, which in (("ours", task), ("builtin", loaded["builtin"]["tasks"][name])):
            which.set_config(key="num_fewshot", value=num_fewshot)
            which.build_all_requests(limit=N_DOCS)
            requests[side] = [(inst.doc_id, inst.args) for inst in which.instances]
        assert len(requests["ours"]) == 4 * N_DOCS
        assert requests["ours"] == requests["builtin"], f"{name}: prompts differ from lm-eval's mmlu"
    assert requests["ours"][0][1][1] == " A"


def test_chat_prompts_equal_builtin(loaded):
    def chat_template(messages, add_generation_prompt=True):
        return json.dumps({"messages": messages, "add_generation_prompt": add_generation_prompt})

    name = "mmlu_high_school_european_history"
    ours, builtin = loaded["ours"]["tasks"][name], loaded["builtin"]["tasks"][name]
    for doc in list(ours.test_docs())[:N_DOCS]:
        kwargs = {"num_fewshot": 5, "apply_chat_template": True, "chat_template": chat_template}
        assert ours.fewshot_context(doc, **kwargs) == builtin.fewshot_context(doc, **kwargs)


def test_balanced_subset_is_seeded_and_balanced():
    # rh-masked's own ``seed`` reaches task metadata through model_args; it must not change the subset.
    first, again, other = _ours(per_subject=2), _ours(per_subject=2, seed=99), _ours(per_subject=2, subset_seed=7)
    for name, task in first["tasks"].items():
        docs = list(task.test_docs())
        assert len(docs) == 2
        assert docs == list(again["tasks"][name].test_docs())
        full = mmlu.read_split(task.config.dataset_kwargs["subject"], "test")
        assert [full.index(d) for d in docs] == sorted(full.index(d) for d in docs)
        assert _doc_hashes(task) == _doc_hashes(again["tasks"][name])
    assert any(
        list(task.test_docs()) != list(other["tasks"][name].test_docs()) for name, task in first["tasks"].items()
    )


@pytest.mark.parametrize(
    "per_subject, message",
    [(0, "must be a positive integer"), ("2", "must be a positive integer"), (101, "exceeds the 100 test questions")],
)
def test_bad_per_subject_is_an_error(per_subject, message):
    with pytest.raises(ValueError, match=message):
        mmlu.subject_dataset("abstract_algebra", per_subject=per_subject)


def test_bad_subject_or_source_is_an_error():
    with pytest.raises(ValueError, match="Unknown MMLU subject 'algebra'"):
        mmlu.subject_dataset("algebra")
    with pytest.raises(ValueError, match="source='web'.*'packaged'.*'hub'"):
        mmlu.subject_dataset("anatomy", source="web")


def test_hub_is_an_explicit_option(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", _packaged_as_hub)
    hub = mmlu.subject_dataset("anatomy", source="hub", per_subject=3)
    assert len(hub["test"]) == 3 and len(hub["dev"]) == 5


def test_name_clash_is_logged_once(caplog):
    mmlu._announce.cache_clear()
    with caplog.at_level("INFO", logger="rh_tasks.mmlu"):
        for subject in ("anatomy", "virology"):
            mmlu.subject_dataset(subject)
    assert caplog.text.count("rh-eval's copy of lm-eval's mmlu is active") == 1


def test_modified_or_missing_data_is_an_error(data_copy):
    modified = data_copy / mmlu.packaged_file("anatomy", "test")
    modified.write_bytes(modified.read_bytes()[:-1])
    with pytest.raises(task_data.PackagedDataError, match="was modified"):
        mmlu.subject_dataset("anatomy")
    (data_copy / mmlu.packaged_file("virology", "dev")).unlink()
    with pytest.raises(task_data.PackagedDataError, match="is missing"):
        mmlu.subject_dataset("virology")


@pytest.mark.slow
def test_runs_through_lm_eval_on_the_embedded_model():
    """Two 5-shot questions of one subject: per-sample ``acc`` on packaged data, with no hub access."""
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
        tasks=["mmlu_anatomy"],
        task_manager=manager,
        num_fewshot=5,
        limit=2,
        log_samples=True,
    )
    samples = out["samples"]["mmlu_anatomy"]
    assert len(samples) == 2 and all(s["acc"] in (0.0, 1.0) for s in samples)
    assert out["n-shot"]["mmlu_anatomy"] == 5
