"""The memory axis of windowed conditions: the kept share of the KV cache, its table, figure and contrast."""

from __future__ import annotations

import pytest
from report_runs import FAST, LENGTHS, NONE, RANDOM, RETRIEVAL, WellFormed, niah_rows, write_run, written

from rh_tasks.report import ReportInputError, write_report
from rh_tasks.report.memory import kept_fraction

WINDOW = {"window": 64, "sink": 4, "phase": "decode", "unit": "kv_group", "kv_groups": 6}


def _windowed(root, name, outcomes, **masking):
    return write_run(root / name, {"niah": niah_rows(outcomes)}, masking=WINDOW | masking)


def windowed_suite(root):
    """none; every head windowed; the top 2 KV groups kept; 3 random draws of 2 groups kept (one in 1 group)."""
    folders = [write_run(root / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})]
    folders.append(_windowed(root, "streaming", RETRIEVAL[4], heads_kind="none", kept_kv_groups=0))
    folders.append(
        _windowed(root, "retrieval", RANDOM[(2, 0)], heads_kind="retrieval", k=2, heads=[[1, 0]], kept_kv_groups=2)
    )
    for seed in range(3):
        folders.append(
            _windowed(
                root,
                f"random{seed}",
                RETRIEVAL[2],
                heads_kind="random",
                k=2,
                seed=seed,
                heads=[[0, seed]],
                kept_kv_groups=1 if seed == 2 else 2,
            )
        )
    return folders


def test_kept_fraction_counts_kv_groups_times_positions():
    assert kept_fraction(0, 6, window=64, sink=4, lengths=[68]) == 1.0  # the window covers the context
    assert kept_fraction(6, 6, window=64, sink=4, lengths=[1024]) == 1.0
    assert kept_fraction(2, 6, window=60, sink=4, lengths=[256, 512]) == pytest.approx(
        ((2 * 256 + 4 * 64) / (6 * 256) + (2 * 512 + 4 * 64) / (6 * 512)) / 2
    )


def test_windowed_runs_get_a_memory_axis_with_the_contrast_at_equal_memory(tmp_path):
    files = write_report(windowed_suite(tmp_path), tmp_path / "out", **FAST)
    memory = {p["label"]: p for p in written(files)["models"][0]["memory"]}
    assert set(memory) == {
        "keep none [w=64, decode]",
        "keep retrieval@2 [w=64, kv_group, decode]",
        "keep random@2 [w=64, kv_group, decode]",
        "keep retrieval@2 [w=64, kv_group, decode] \u2212 keep random@2 [w=64, kv_group, decode]",
    }
    streaming, retrieval = memory["keep none [w=64, decode]"], memory["keep retrieval@2 [w=64, kv_group, decode]"]
    assert streaming["keep"] == "none" and streaming["kept_kv_groups"] == 0
    assert streaming["kept_fraction"] == pytest.approx(kept_fraction(0, 6, 64, 4, list(LENGTHS)))
    assert retrieval["kept_fraction"] == pytest.approx(kept_fraction(2, 6, 64, 4, list(LENGTHS)))
    random = memory["keep random@2 [w=64, kv_group, decode]"]
    assert random["kept_kv_groups"] == pytest.approx(5 / 3) and not random["equal_memory"]
    contrast = memory["keep retrieval@2 [w=64, kv_group, decode] \u2212 keep random@2 [w=64, kv_group, decode]"]
    assert contrast["keep"] == "contrast" and not contrast["equal_memory"] and contrast["n_seeds"] == 3
    assert contrast["delta"] > 0, "keeping the retrieval groups should lose less than keeping random ones"
    markdown = files.markdown.read_text()
    assert "less damaging than 3 of 3 random kept sets" in markdown  # a kept set is ranked the other way
    assert "does keeping a model's retrieval heads whole keep a task's score better" in markdown
    assert "### Memory: windowed conditions" in markdown and "| keep none [w=64, decode] | 64 + 4 sinks |" in markdown
    html = files.html.read_text()
    page = WellFormed()
    page.feed(html)
    assert not page.errors and "Memory: score against the kept share of the KV cache" in html
    assert html.count("<svg") >= 2


def test_a_windowed_run_without_its_kv_groups_is_refused(tmp_path):
    base = write_run(tmp_path / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})
    bare = write_run(tmp_path / "w", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none", "window": 64})
    with pytest.raises(ReportInputError, match="must record kept_kv_groups and kv_groups"):
        write_report([base, bare], tmp_path / "out", **FAST)
