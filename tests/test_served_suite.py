"""A suite on a serving engine: every condition exported and evaluated by a stock lm-eval backend, reported as the
conditions the hooks give."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_suite import _samples, _without_paths

from rh_tasks.suite import SuiteConfigError, parse_suite, run_suite


def test_a_suite_on_the_hf_engine_reports_what_the_hooks_report(suite, tmp_path):
    hooked = run_suite(dataclasses.replace(suite, output_dir=str(tmp_path / "hooks")))
    served = run_suite(dataclasses.replace(suite, engine="hf", output_dir=str(tmp_path / "hf")))
    assert _samples(served) == _samples(hooked) and _samples(hooked)
    records = {p.parent.name: json.loads(p.read_text()) for p in served.rglob("conditions/*/condition.json")}
    assert {name: r["rh_masking"]["engine"] for name, r in records.items()} == dict.fromkeys(records, "hf")
    assert sorted(p.name for p in (served / "exports").iterdir()) == sorted(records)
    for name in records:
        results = json.loads(next((served / "conditions" / name).rglob("results_*.json")).read_text())
        assert "rh_masking" not in results["config"]  # a stock hf run: the report reads its folder's record
        assert results["config"]["model_args"] == {"pretrained": str(served / "exports" / name)}
    report = lambda out: _without_paths(json.loads((out / "report" / "report.json").read_text()))  # noqa: E731
    assert report(served)["models"] == report(hooked)["models"]
    engines = lambda out: {run["engine"] for run in json.loads((out / "report" / "report.json").read_text())["runs"]}  # noqa: E731
    assert engines(served) == {"hf"} and engines(hooked) == {"rh-masked"}
    assert "Engine: hf (4 runs)." in (served / "report" / "report.md").read_text()
    assert "Engine: rh-masked (4 runs)." in (hooked / "report" / "report.md").read_text()
    assert "Engine: hf (4 runs)." in (served / "report" / "report.html").read_text()


def test_a_resumed_engine_suite_reuses_its_exports(suite, tmp_path, monkeypatch):
    from model_wrappers.export import export

    config = dataclasses.replace(suite, engine="hf", output_dir=str(tmp_path / "hf"))
    out = run_suite(config, write_report=False)
    for folder in (out / "conditions").iterdir():
        if folder.name != "none":
            __import__("shutil").rmtree(folder)
    monkeypatch.setattr(export, "export_masked", lambda *a, **k: pytest.fail("an export was redone"))
    run_suite(config, write_report=False)
    assert len(list((out / "conditions").glob("*/condition.json"))) == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"engine": "hf", "masking": {"phase": "decode"}}, "cannot be written into weights"),
        ({"engine": "rh-masked"}, "must name an lm-eval backend"),
        ({"engine": ""}, "must name an lm-eval backend"),
        ({"engine": "hf", "conditions": {"windows": {"window": [64]}}}, "a window restricts which positions"),
    ],
)
def test_engine_suites_refuse_what_weights_cannot_carry(change, message):
    from conftest import SUITE_BASE

    with pytest.raises(SuiteConfigError, match=message):
        parse_suite({**SUITE_BASE, **change})


def test_engine_suites_hash_apart_and_suites_without_one_keep_their_hash():
    """Folders of suites written before engines existed resume: their hash is the one they were written with."""
    written_before = {
        "tasks": [{"task": "niah", "limit": 2, "metadata": {"lengths": [128]}}],
        "model": {"pretrained": "some/model", "head_scores": "s.json"},
        "masking": {"mode": "mean", "phase": "decode", "unit": "kv_group"},
        "conditions": {"retrieval": [1, 3], "random": {"k": [1], "seeds": [0, 1], "match": "layer"}},
        "apply_chat_template": False,
    }
    assert parse_suite(written_before).digest() == "c68ecaefdf1da89e"
    served = {**written_before, "masking": {"phase": "all"}, "engine": "hf"}
    assert parse_suite(served).digest() != parse_suite({**served, "engine": None}).digest()
