"""Which runs the report pairs, item by item, and which it refuses to compare."""

from __future__ import annotations

import pytest
from report_runs import (
    FAST,
    MODEL,
    NONE,
    RETRIEVAL,
    assert_well_formed,
    niah_rows,
    sha,
    two_models,
    two_runs,
    write_run,
    written,
)

from rh_tasks.report import ReportInputError, write_report


def test_pairs_by_doc_id_not_position(tmp_path):
    write_run(tmp_path / "a", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})
    write_run(
        tmp_path / "b",
        {"niah": niah_rows(RETRIEVAL[2])[::-1]},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
    )
    shuffled = written(write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", **FAST))
    c = shuffled["models"][0]["comparisons"][0]
    lost = sum(a == "c" and b != "c" for a, b in zip(NONE, RETRIEVAL[2]))
    gained = sum(a != "c" and b == "c" for a, b in zip(NONE, RETRIEVAL[2]))
    assert c["delta"] == pytest.approx((gained - lost) / 18)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rows": niah_rows(RETRIEVAL[2], prompt_suffix=" ")}, "prompt_hash"),
        ({"versions": {"niah": 2.0}}, "task versions"),
        ({"weights": "fff999"}, "different weights"),
        ({"model": "models/other"}, "no unmasked run of models/other"),
    ],
)
def test_refuses_runs_that_cannot_be_paired(tmp_path, changes, message):
    folders = two_runs(tmp_path, **changes)
    with pytest.raises(ReportInputError, match=message):
        write_report(folders, tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "audit, message",
    [
        (None, "but it has none"),
        ({"clean": False, "problems": ["layer 1's hooks ran in 3 of 4 forward passes"]}, "ran in 3 of 4"),
    ],
)
def test_refuses_masked_runs_without_a_clean_audit(tmp_path, audit, message):
    base = write_run(tmp_path / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})
    masking = {"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]], "audit": audit}
    other = write_run(tmp_path / "masked", {"niah": niah_rows(RETRIEVAL[2])}, masking=masking)
    with pytest.raises(ReportInputError, match=message):
        write_report([base, other], tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


def test_refuses_mismatched_documents(tmp_path):
    rows = niah_rows(RETRIEVAL[2])
    rows[3]["doc_hash"] = sha("another document")
    with pytest.raises(ReportInputError, match="doc_hash"):
        write_report(two_runs(tmp_path, rows=rows), tmp_path / "out", **FAST)


def test_newest_run_of_a_condition_wins(tmp_path):
    folders = two_runs(tmp_path)
    write_run(
        tmp_path / "masked",
        {"niah": niah_rows(NONE)},
        date="2026-01-02T10-00-00.000001",
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
    )
    report = written(write_report(folders, tmp_path / "out", **FAST))
    assert report["models"][0]["comparisons"][0]["delta"] == 0.0


def test_headline_metric_follows_the_declared_metric_list():
    from rh_tasks.report.runs import _declared_order

    config = {"metric_list": [{"metric": "contains"}, {"metric": "f1"}, {"metric": "exact_match"}]}
    assert sorted(["exact_match", "f1", "contains@512", "contains"], key=_declared_order(config)) == [
        "contains",
        "f1",
        "exact_match",
        "contains@512",
    ]


def test_same_label_with_different_heads_is_refused(tmp_path):
    folders = two_runs(tmp_path)
    write_run(
        tmp_path / "rerun",
        {"niah": niah_rows(NONE)},
        date="2026-01-02T10-00-00.000001",
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[5, 1], [6, 1]]},
    )
    with pytest.raises(ReportInputError, match=r"both retrieval@2 but masked different heads.*\(5,1\)"):
        write_report([*folders, tmp_path / "rerun"], tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


def test_variants_at_the_same_k_do_not_replace_each_other(tmp_path):
    folders = two_runs(tmp_path)
    write_run(
        tmp_path / "zero",
        {"niah": niah_rows(NONE)},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]], "mode": "zero"},
    )
    model = written(write_report([*folders, tmp_path / "zero"], tmp_path / "out", **FAST))["models"][0]
    sweep = {(r["series"], r["k"]): r["delta"] for r in model["k_sweep"]}
    assert sweep[("retrieval", 2)] < 0 and sweep[("retrieval [zero]", 2)] == 0.0


def test_plain_hf_runs_and_cross_model_ranking(tmp_path):
    """A plain hf baseline pairs with masked runs of the same model; two models are ranked, never cross-paired."""
    files = two_models(tmp_path)
    report = written(files)
    assert [row["model"] for row in report["cross_model"]] == [MODEL, "models/robust"]
    first, second = report["cross_model"]
    assert first["dependence"] > second["dependence"]
    assert first["tasks"]["niah"]["contrast"]["n"] == 18
    assert first["dependence_basis"] == "long-context tasks"
    html = files.html.read_text()
    assert_well_formed(html)
    assert "Across models" in html
