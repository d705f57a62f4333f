"""Misspelt task options are refused; model arguments, which lm-eval merges into the same dict, never are."""

from __future__ import annotations

import inspect

import pytest
import yaml
from lm_eval.models.huggingface import HFLM

from model_wrappers.lm.rh_masked import RHMaskedLM
from rh_tasks.extractive_qa import task as extractive_qa
from rh_tasks.niah import task as niah
from rh_tasks.shared.options import check_option_names, task_options

OPTION_SETS = {
    "niah": niah.DEFAULTS,
    "extractive_qa": extractive_qa.DEFAULTS,
    "mmlu": ("source", "per_subject", "subset_seed"),
    "gsm8k_cot": ("source",),
}
MODEL_ARGS = {
    name for cls in (HFLM, RHMaskedLM) for name in inspect.signature(cls.__init__).parameters if name != "self"
}


@pytest.mark.parametrize("task", list(OPTION_SETS))
def test_model_arguments_pass(task):
    check_option_names(task, dict.fromkeys(MODEL_ARGS | {"version"}, 1), OPTION_SETS[task])


@pytest.mark.parametrize(
    "task, typo, meant",
    [("niah", "lenghts", "lengths"), ("niah", "depth", "depths"), ("extractive_qa", "questions_per_cells",
     "questions_per_cell"), ("mmlu", "per_subjects", "per_subject"), ("gsm8k_cot", "sources", "source")],
)  # fmt: skip
def test_misspelt_options_are_refused(task, typo, meant):
    with pytest.raises(ValueError, match=f"{task}: unknown option '{typo}'; did you mean '{meant}'"):
        check_option_names(task, {typo: 1}, OPTION_SETS[task])


def test_options_override_defaults():
    assert task_options("niah", {"lengths": [64], "pretrained": "x"}, niah.DEFAULTS)["lengths"] == [64]


@pytest.mark.parametrize("task", [niah, extractive_qa])
def test_generation_budget_is_the_one_the_yaml_generates_with(task):
    """The grid leaves room for as many tokens as lm-eval generates; metadata cannot pretend otherwise."""
    from rh_tasks.plugin.registration import task_configs_dir

    name = task.__name__.split(".")[1]
    config = yaml.load((task_configs_dir() / name / f"{name}.yaml").read_text(), Loader=_IgnoreTags)
    assert config["generation_kwargs"]["max_gen_toks"] == task.GEN_TOKENS
    with pytest.raises(ValueError, match="--gen_kwargs max_gen_toks=N"):
        task_options(name, {"max_gen_toks": 64}, task.DEFAULTS)


class _IgnoreTags(yaml.SafeLoader):
    """Reads a task YAML without resolving its ``!function`` tags."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)
