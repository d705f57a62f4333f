"""rh-masked is declared in lm-eval's ``lm_eval.models`` entry-point group, for releases that discover plugins."""

from __future__ import annotations

from importlib.metadata import entry_points

from rh_tasks.plugin.registration import MODEL_NAME, MODEL_TARGET


def test_installed_entry_point_names_the_class_the_start_up_hook_registers():
    (entry,) = entry_points(group="lm_eval.models", name=MODEL_NAME)
    assert entry.value == MODEL_TARGET and entry.dist.name == "rh-eval"
    from model_wrappers.lm.rh_masked import RHMaskedLM

    assert entry.load() is RHMaskedLM
