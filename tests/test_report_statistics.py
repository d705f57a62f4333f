"""The report's numbers, recomputed independently: paired deltas, cluster and seed tests, Holm's family."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from report_runs import (
    FAST,
    MMLU,
    NONE,
    RETRIEVAL,
    contains_scores,
    find_comparison,
    mc_rows,
    niah_docs,
    niah_rows,
    write_run,
    written,
)

from rh_tasks.report import write_report


def test_report_json_matches_independent_recomputation(built):
    root, files = built
    report = json.loads(files.json.read_text())
    base = contains_scores(root / "none")
    masked = contains_scores(root / "retrieval2")
    c = find_comparison(report, "niah", "retrieval@2", "contains")
    assert c["n"] == 18
    assert c["baseline"] == pytest.approx(np.mean(list(base.values())))
    assert c["delta"] == pytest.approx(np.mean([masked[i] - base[i] for i in base]))
    # 6 contexts (needle x length) of 3 depths each: the test flips whole context sums, enumerated here
    contexts = {}
    for i, doc in enumerate(niah_docs()):
        contexts[doc["context_id"]] = contexts.get(doc["context_id"], 0) + masked[i] - base[i]
    sums = np.array(list(contexts.values()))
    patterns = np.array(list(itertools.product([-1, 1], repeat=sums.size)))
    assert c["test"] == "sign-flip on cluster sums (exact)"
    assert c["p_value"] == pytest.approx(np.mean(np.abs(patterns @ sums) >= abs(sums.sum()) - 1e-9))
    assert (c["unit"], c["n_clusters"], c["n_seeds"]) == ("cluster", 6, None)
    assert c["min_attainable_p"] == pytest.approx(2 / 2 ** np.count_nonzero(sums))  # the units the test uses
    assert c["ci_low"] < c["delta"] < 0 < c["ci_high"]  # 5 contexts that change: p >= 1/16, so the interval holds 0

    seeds = [contains_scores(root / f"random2_{s}") for s in range(3)]
    pooled = find_comparison(report, "niah", "random@2", "contains")
    assert (pooled["n_seeds"], pooled["unit"], pooled["conditional"]) == (3, "seed and cluster", False)
    # the two-way t test over 3 seeds and 6 contexts: min(3, 6) - 1 degrees of freedom, no sign-flip floor
    assert (pooled["df"], pooled["min_attainable_p"], pooled["p_exact"]) == (2, 0.0, None)
    assert pooled["p_value"] == pooled["p_t"]
    assert pooled["null"].startswith("masking random sets of 2 heads leaves the score unchanged on average")
    assert pooled["delta"] == pytest.approx(np.mean([np.mean([s[i] for s in seeds]) - base[i] for i in base]))
    contrast = find_comparison(report, "niah", "retrieval@2 \u2212 random@2", "contains")
    assert contrast["delta"] == pytest.approx(c["delta"] - pooled["delta"])
    assert contrast["in_family"] and contrast["unit"] == "seed and cluster"
    assert contrast["null"].startswith("retrieval@2's expected change equals the mean change of random sets")
    per_seed = [np.mean([masked[i] - s[i] for i in base]) for s in seeds]
    beaten = sum(d < 0 for d in per_seed)
    assert contrast["rank"] == {"beaten": beaten, "sets": 3, "p_value": pytest.approx((1 + 3 - beaten) / 4)}
    single = find_comparison(report, "niah", "random@4", "contains")  # one seed: conditional on the drawn set
    assert (single["n_seeds"], single["conditional"], single["unit"], single["se_seeds"]) == (1, True, "cluster", None)
    assert find_comparison(report, "niah", "retrieval@4 \u2212 random@4", "contains")["conditional"]
    assert not find_comparison(report, "niah", "random@2/seed=0", "contains")["in_family"]  # per-seed rows: exploratory


def test_groups_pool_subtasks_and_filters_stay_apart(built):
    _, files = built
    report = written(files)
    mmlu = find_comparison(report, "mmlu", "retrieval@2", "acc")
    assert mmlu["n"] == 10
    assert mmlu["delta"] == pytest.approx((-1 - 1) / 10)
    strict = find_comparison(report, "gsm8k_cot", "retrieval@2", "exact_match", "strict-match")
    flexible = find_comparison(report, "gsm8k_cot", "retrieval@2", "exact_match", "flexible-extract")
    assert (strict["n"], strict["delta"], flexible["delta"]) == (4, -0.25, -0.25)
    assert not find_comparison(report, "mmlu_anatomy", "retrieval@2")["in_family"]


def test_holm_family_and_statements(built):
    _, files = built
    report = written(files)
    family = [c for m in report["models"] for c in m["comparisons"] if c["in_family"]]
    assert report["settings"]["family_size"] == len(family)
    assert all(c["p_holm"] >= c["p_value"] and c["p_bh"] is not None for c in family)
    assert not any(c["kind"] == "random_seed" for c in family)
    statements = report["models"][0]["statements"]
    niah = [s for s in statements if s.startswith("niah")]
    (random2,) = [s for s in niah if s.startswith("niah · random@2 vs none: ")]
    assert random2.endswith("no effect shown (the interval includes 0).")
    assert any(s.startswith("niah · random@4 vs none: ") for s in niah)  # every K of the sweep
    # 6 contexts: p >= 1/32, and Holm over the family multiplies the smallest floor by its size
    niah_floor = min(c["min_attainable_p_holm"] for c in family if c["task"] == "niah" and c["p_exact"] is not None)
    assert niah_floor >= 0.05
    assert niah[0].startswith("niah: with 6 contexts no exact test against the unmasked run can be significant")
    assert not any(s.endswith(("than unmasked.", "than with random heads.")) for s in niah)  # claims of an effect
    assert all(len(s) < 300 for s in statements)  # one short line each: the design is in the leaderboard
    assert not any(c["p_holm"] < 0.05 for c in family)
    markdown = files.markdown.read_text()
    assert "Unit of analysis:" in markdown and "| niah · contains | " in markdown
    nulls = markdown.split("What each comparison tests:")[1].split("### Leaderboard")[0]
    assert "| random@2 vs none | masking random sets of 2 heads leaves the score unchanged" in nulls
    assert "| retrieval@2 − random@2 | retrieval@2's expected change equals the mean change" in nulls


def test_k_sweep_has_both_series(built):
    _, files = built
    sweep = [r for r in written(files)["models"][0]["k_sweep"] if r["task"] == "niah"]
    assert {(r["series"], r["k"]) for r in sweep} == {("retrieval", 2), ("retrieval", 4), ("random", 2), ("random", 4)}
    family = {c["p_holm"] for c in written(files)["models"][0]["comparisons"] if c["in_family"]}
    # after Holm, not before; a retrieval set whose contrast answers is exploratory, with no corrected p
    assert all(r["p_holm"] is not None and r["p_holm"] in family for r in sweep if r["series"] == "random")
    assert all(r["p_holm"] is None for r in sweep if r["series"] == "retrieval")


def test_group_of_clustered_and_unclustered_tasks_keeps_unclustered_items_apart(tmp_path):
    """A group pooling niah (6 contexts of 3 items) with 10 context-free mmlu items has 6 + 10 clusters."""
    groups = {"mixed": ["niah", "mmlu_anatomy", "mmlu_virology"]}

    def contains_rows(correct, subject):  # context-free items scored with the group's shared metric
        rows = mc_rows(correct, subject)
        for row in rows:
            row["contains"], row["metrics"] = row.pop("acc"), ["contains"]
        return rows

    tasks_none = {"niah": niah_rows(NONE), **{t: contains_rows(base, t) for t, (base, _) in MMLU.items()}}
    tasks_masked = {
        "niah": niah_rows(RETRIEVAL[2]),
        **{t: contains_rows(masked, t) for t, (_, masked) in MMLU.items()},
    }
    write_run(tmp_path / "a", tasks_none, groups=groups, masking={"heads_kind": "none"})
    write_run(
        tmp_path / "b",
        tasks_masked,
        groups=groups,
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
    )
    report = written(write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", **FAST))
    model = report["models"][0]
    mixed = next(c for c in model["comparisons"] if c["task"] == "mixed")
    assert (mixed["n"], mixed["n_clusters"], mixed["unit"]) == (28, 16, "cluster")
    summary = next(t for t in model["tasks"] if t["task"] == "mixed")["filters"]["none"]
    assert summary["n_clusters"] == 16 and summary["min_attainable_p"] == pytest.approx(2 / 2**16)
