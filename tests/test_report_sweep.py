"""A K sweep is answered over its whole curve, and the answers, the forest plot and the family agree."""

from __future__ import annotations

import pytest
from report_runs import FAST, NONE, niah_rows, write_report, write_run, written

from rh_tasks.suite.summary import summary

KS = (2, 4, 8)
LOST = ["h"] * 18  # every needle lost
SEEDS = 4


def sweep(root, effect_at: set[int]) -> list:
    """none, retrieval@K and random@K (4 seeds) for K = 2, 4, 8 on niah: retrieval loses every needle at the Ks
    in ``effect_at`` and none elsewhere; each random seed loses one needle of its own."""
    runs = [write_run(root / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})]
    for k in KS:
        masking = {"heads_kind": "retrieval", "k": k, "num_masked": k, "heads": [[1, h] for h in range(k)]}
        rows = niah_rows(LOST if k in effect_at else NONE)
        runs.append(write_run(root / f"retrieval{k}", {"niah": rows}, masking=masking))
        for seed in range(SEEDS):
            outcomes = list(NONE)
            outcomes[3 * seed] = "h"
            masking = {"heads_kind": "random", "k": k, "seed": seed, "num_masked": k, "heads": [[0, seed], [2, k]]}
            runs.append(write_run(root / f"random{k}_{seed}", {"niah": niah_rows(outcomes)}, masking=masking))
    return runs


LOWERS = "masking its retrieval heads lowers the score more than masking random heads"


@pytest.mark.parametrize(
    "effect_at, says",
    [
        ({8}, f"niah: at K = 8, {LOWERS}; at K = 2 and 4 no effect shows ("),
        ({4, 8}, f"niah: from K = 4 on, {LOWERS}; at K = 2 no effect shows ("),
        ({2}, f"niah: at K = 2, {LOWERS}; at K = 4 and 8 no effect shows ("),
        ({2, 4}, f"niah: up to K = 4, {LOWERS}; at K = 8 no effect shows ("),
        ({2, 4, 8}, f"niah: at each of K = 2, 4 and 8, {LOWERS} ("),
        (set(), "niah: no effect shows at K = 2, 4 or 8 ("),
    ],
)
def test_a_sweep_is_answered_over_every_k_as_the_forest_shows_it(tmp_path, effect_at, says):
    files = write_report(sweep(tmp_path, effect_at), tmp_path / "out", **FAST)
    report = written(files)
    model = report["models"][0]
    (answer,) = model["answers"]
    assert answer.startswith(says), answer
    for k in KS:  # every K's numbers, whatever the curve
        assert f"K = {k}: " in answer
    forest = {row["k"]: row for row in model["forest"]}
    assert sorted(forest) == list(KS)
    assert {k for k, row in forest.items() if row["significant"]} == effect_at
    for k, row in forest.items():
        assert row["effect"]["condition"] == f"retrieval@{k} \u2212 random@{k}"
        assert f"K = {k}: " + _points(row["effect"]) in answer
    # the family is what the design asks: three contrasts and three random controls against none
    family = [c for c in model["comparisons"] if c["in_family"]]
    assert sorted((c["kind"], c["k"]) for c in family) == sorted(
        (kind, k) for k in KS for kind in ("contrast", "random")
    )
    assert report["settings"]["family_size"] == 6
    # report.json's version names the fields these rest on: headline, answers, the forest's window
    assert report["schema"] == "rh-eval-report/5" and all("window" in row for row in model["forest"])
    assert not any(c["in_family"] for c in model["comparisons"] if c["kind"] in ("retrieval", "random_seed"))
    markdown = files.markdown.read_text()
    assert markdown.index(f"- {answer}") < markdown.index("](forest.svg)")
    assert "Family: the questions the design declares" in markdown
    assert "Answers: each headline task is answered at every K" in markdown
    # the findings list every K's questions too, and say the leaderboard is at one K
    for k in KS:
        assert any(line.startswith(f"niah · retrieval@{k} − random@{k}: ") for line in model["statements"]), k
        assert any(line.startswith(f"niah · random@{k} vs none: ") for line in model["statements"]), k
    assert "K = 2, 4, 8: the findings and answers cover every K; the leaderboard is at K = " in markdown
    assert "the findings and answers cover every K" in files.html.read_text()


def _points(estimate: dict) -> str:
    from rh_tasks.report.narrative import format_p, format_value

    values = [format_value(estimate[key], True, signed=True) for key in ("delta", "ci_low", "ci_high")]
    return f"{values[0]} points [{values[1]}, {values[2]}], Holm p = {format_p(estimate['p_holm'])}"


def test_exploratory_rows_are_marked_and_carry_no_corrected_p(tmp_path):
    files = write_report(sweep(tmp_path, {8}), tmp_path / "out", **FAST)
    model = written(files)["models"][0]
    retrieval = [c for c in model["comparisons"] if c["kind"] == "retrieval" and c["metric"] == "contains"]
    assert retrieval and all(c["headline"] and c["p_holm"] is None for c in retrieval)
    markdown = files.markdown.read_text()
    leaderboard = markdown.split("### Leaderboard")[1].split("\n\n")[2]
    assert " †" in leaderboard.splitlines()[2].split("|")[3]  # Δ retrieval at the headline K: exploratory
    assert "| retrieval@8 − random@8 | " in markdown and "| retrieval@8 | " in markdown


def windowed_sweep(root, seeds: int) -> list:
    """Windows 64 and 256, each keeping no KV group, the top K or K random ones, K = 2 and 8: every
    windowed run loses every needle but window 64 keeping the retrieval groups at K = 8, which finds them."""
    runs = [write_run(root / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})]
    for window in (64, 256):
        shared = {"window": window, "sink": 4, "phase": "decode", "unit": "kv_group", "kv_groups": 6}
        runs.append(_windowed(root / f"w{window}-none", LOST, shared, heads_kind="none"))
        for k in (2, 8):
            kept = NONE if (window, k) == (64, 8) else LOST
            heads = [[1, h] for h in range(k)]
            runs.append(
                _windowed(root / f"w{window}-retrieval{k}", kept, shared, heads_kind="retrieval", k=k, heads=heads)
            )
            for seed in range(seeds):
                heads = [[0, seed], [2, k]]
                folder = root / f"w{window}-random{k}_{seed}"
                runs.append(_windowed(folder, LOST, shared, heads_kind="random", k=k, seed=seed, heads=heads))
    return runs


def _windowed(folder, outcomes, shared, **masking):
    kept = {"kept_kv_groups": masking.get("k") or 0}
    return write_run(folder, {"niah": niah_rows(outcomes)}, masking=shared | kept | masking)


KEEPING = "keeping its retrieval heads whole under a window raises the score against keeping random heads"


@pytest.mark.parametrize(
    "seeds, says",
    [
        (8, f"niah: with window 64, at K = 8, {KEEPING}; at K = 2 no effect shows ("),
        # t on 4 seeds has 3 degrees of freedom: the interval excludes 0, Holm over 10 questions does not reach 0.05
        (4, f"niah: with window 64, at K = 8, {KEEPING}, but not significantly after Holm correction; at K = 2 no "),
    ],
)
def test_a_windowed_sweep_is_answered_per_window_and_its_family_is_declared(tmp_path, seeds, says):
    files = write_report(windowed_sweep(tmp_path, seeds), tmp_path / "out", **FAST)
    report = written(files)
    model = report["models"][0]
    (answer,) = model["answers"]
    assert answer.startswith(says), answer
    assert "; with window 256, no effect shows at K = 2 or 8 (" in answer
    forest = {(row["window"], row["k"]): row["significant"] for row in model["forest"]}
    assert forest == {(64, 2): False, (64, 8): seeds == 8, (256, 2): False, (256, 8): False}
    # per window and K: the contrast and the random control; per window: keeping no head; all against none
    family = [c for c in model["comparisons"] if c["in_family"]]
    assert sorted(c["kind"] for c in family) == ["contrast"] * 4 + ["explicit"] * 2 + ["random"] * 4
    assert report["settings"]["family_size"] == 10
    text = summary(files, 100)
    *lines, where = text.splitlines()
    assert where.startswith("Report: ") and all(len(line) <= 100 for line in lines)
    rows = [line.split("  ")[0] + "|" + line[len("task \u00b7 metric  ") :].split("  ")[0] for line in lines]
    assert text.count("unmasked  ") == 1  # one table, a row per window and K
    assert [r for r in rows if r.startswith("niah|")] == [f"niah|{k}, w={w}" for w in (64, 256) for k in (2, 8)]
