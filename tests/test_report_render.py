"""The report's files: their structure, figures and escaping, byte for byte reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
from report_runs import (
    FAST,
    MODEL,
    NONE,
    RANDOM,
    RETRIEVAL,
    assert_well_formed,
    find_comparison,
    flat_rows,
    interval_text,
    niah_rows,
    suite,
    two_models,
    write_run,
    written,
)

from rh_tasks.report import write_report
from rh_tasks.report.narrative import answers, format_value
from rh_tasks.report.render import cross_model_table, forest_rows
from rh_tasks.report.schema import to_json
from rh_tasks.suite.summary import summary


def test_report_files_and_structure(built):
    root, files = built
    report = json.loads(files.json.read_text())
    assert report == json.loads(json.dumps(to_json(files.report)))
    model = report["models"][0]
    assert model["model"] == MODEL
    assert model["headline_k"] == 2  # three random seeds at K=2, one at K=4
    assert [c["label"] for c in model["conditions"]] == [
        "none",
        "retrieval@2",
        "retrieval@4",
        "random@2/seed=0",
        "random@2/seed=1",
        "random@2/seed=2",
        "random@4/seed=0",
    ]
    headline = {t["task"] for t in model["tasks"] if t["headline"]}
    assert headline == {"niah", "gsm8k_cot", "mmlu"}
    assert {(t["task"], t["headline"]) for t in model["tasks"]} >= {("mmlu_anatomy", False)}
    niah = next(t for t in model["tasks"] if t["task"] == "niah")
    assert niah["long_context"] and niah["filters"]["none"]["n"] == 18
    assert niah["filters"]["none"]["n_clusters"] == 6
    assert files.markdown.read_text().startswith("# Which abilities")


def test_same_runs_and_seed_give_byte_identical_reports(built, tmp_path):
    """Every number is seeded, so a report regenerated from the same runs can be compared with any earlier one."""
    root, files = built
    again = write_report(suite(tmp_path / "copy"), tmp_path / "again", **FAST)
    for first, second in ((files.json, again.json), (files.markdown, again.markdown), (files.html, again.html)):
        assert first.read_text().replace(str(root), "ROOT") == second.read_text().replace(
            str(tmp_path / "copy"), "ROOT"
        )
    other_seed = written(write_report(suite(tmp_path / "copy"), tmp_path / "seed1", seed=1, **FAST))
    intervals = [
        [(c["ci_low"], c["ci_high"]) for c in r["models"][0]["comparisons"]] for r in (other_seed, written(files))
    ]
    assert intervals[0] == intervals[1]  # t intervals: nothing is resampled, the seed only drives Monte Carlo flips


def test_heatmaps_and_failure_breakdown(built):
    _, files = built
    model = written(files)["models"][0]
    (heat,) = model["heatmaps"]
    assert heat["lengths"] == [256, 512] and heat["depths"] == [0, 50, 100]
    assert [p["condition"] for p in heat["panels"]] == ["none", "retrieval@2", "retrieval@4", "random@2", "random@4"]
    (failures,) = model["failures"]
    none, ret2 = failures["panels"][:2]
    assert none["counts"] == {"correct": 17, "incomplete": 1, "hallucinated": 0, "wrong_extraction": 0, "empty": 0}
    assert ret2["counts"] == {"correct": 6, "incomplete": 1, "hallucinated": 6, "wrong_extraction": 5, "empty": 0}
    assert failures["panels"][3]["n"] == 54  # three seeds summed


def test_html_is_self_contained_and_well_formed(built):
    _, files = built
    html = files.html.read_text()
    parser = assert_well_formed(html)
    assert parser.tags.count("svg") >= 3  # k-sweep, heatmap, failure bars
    for external in ('href="http', 'xlink:href="http', "src=", "<link", "@import", "url(http"):
        assert external not in html


def test_malicious_names_are_escaped(tmp_path):
    evil_task, evil_model = "<img src=x onerror=alert(1)>", "<script>alert(1)</script>"
    rows = niah_rows(NONE)
    write_run(tmp_path / "a", {evil_task: rows}, model=evil_model, masking={"heads_kind": "none"})
    write_run(
        tmp_path / "b",
        {evil_task: niah_rows(RETRIEVAL[2])},
        model=evil_model,
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
    )
    files = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", **FAST)
    html = files.html.read_text()
    assert_well_formed(html)
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert" not in files.markdown.read_text()


def test_head_map_reads_the_score_file(tmp_path):
    scores = {f"{l}-{h}": [0.05 * (l + h)] for l in range(3) for h in range(4)}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    masking = {"head_scores": str(tmp_path / "scores.json")}
    write_run(tmp_path / "a", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"} | masking)
    write_run(
        tmp_path / "b",
        {"niah": niah_rows(RETRIEVAL[2])},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[2, 3], [2, 2]]} | masking,
    )
    write_run(
        tmp_path / "c",
        {"niah": niah_rows(RANDOM[2, 0])},
        masking={"heads_kind": "random", "k": 2, "seed": 0, "heads": [[0, 0], [1, 1]]} | masking,
    )
    files = write_report([tmp_path / d for d in "abc"], tmp_path / "out", **FAST)
    head_map = written(files)["models"][0]["head_map"]
    assert np.array(head_map["means"]).shape == (3, 4)
    assert [m["kind"] for m in head_map["masked"]] == ["retrieval", "random"]
    assert "Retrieval scores by layer and head" in files.html.read_text()


@pytest.mark.parametrize(
    ("name", "content"), [("heads.yaml", 'attn_head_set: "2-3,2-2,1-0"\n'), ("gates.tsv", "0.1\t0.9\n0.2\t0.3\n")]
)
def test_head_map_is_left_out_for_files_without_a_score_per_query_head(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    masking = {"head_scores": str(tmp_path / name)}
    write_run(tmp_path / "a", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"} | masking)
    write_run(
        tmp_path / "b",
        {"niah": niah_rows(RETRIEVAL[2])},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[2, 3], [2, 2]]} | masking,
    )
    files = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", **FAST)
    head_map = written(files)["models"][0]["head_map"]
    assert head_map["means"] is None and head_map["masked"][0]["heads"] == [[2, 2], [2, 3]]


def test_cross_model_table_ranks_by_long_context_contrast_and_shows_its_interval(tmp_path):
    files = two_models(tmp_path)
    report = written(files)
    contrasts = {row["model"]: row["tasks"]["niah"]["contrast"] for row in report["cross_model"]}
    assert contrasts[MODEL]["delta"] < contrasts["models/robust"]["delta"]  # more dependent on retrieval heads
    columns, rows = cross_model_table(files.report)
    assert [r["model"] for r in rows] == [MODEL, "models/robust"]  # not the alphabetical order
    assert columns == ["gsm8k_cot", "mmlu", "niah (long context)"]
    for row in rows:
        niah = row["cells"][columns.index("niah (long context)")]
        assert niah["text"] == interval_text(contrasts[row["model"]])
        assert [c["text"] for c in row["cells"][:2]] == ["\u2014", "\u2014"]  # no random control
    markdown = files.markdown.read_text()
    assert markdown.index(f"**{MODEL}**") < markdown.index("**models/robust**")  # the answers in rank order
    assert [row.model for row in forest_rows(files.report)] == [MODEL] * 6 + ["models/robust"] * 6  # 3 tasks x K 2, 4
    rule = markdown.index("Ranked by dependence on retrieval heads: the mean causal contrast")
    first = markdown.index(f"| 1 | {MODEL} | 2 |")
    assert rule < first < markdown.index("| 2 | models/robust | 2 |")
    assert interval_text(contrasts[MODEL]) in markdown[first:].splitlines()[0]
    html = files.html.read_text()
    rule, table = html.index("Ranked by dependence on retrieval heads"), html.index(f'<td class="name">{MODEL}</td>')
    low, high = (format_value(contrasts[MODEL][key], True, signed=True) for key in ("ci_low", "ci_high"))
    assert rule < table < html.index(f'<span class="ci">[{low}, {high}]</span>', table)


def test_forest_rows_are_the_headline_comparisons(built):
    _, files = built
    report = written(files)
    model = report["models"][0]
    rows = {(row["task"], row["k"]): row for row in model["forest"]}
    # headline tasks in report order, each at both Ks of the sweep
    assert list(rows) == [(t, k) for t in ("mmlu", "gsm8k_cot", "niah") for k in (2, 4)]
    forest = {task: row for (task, k), row in rows.items() if k == model["headline_k"]}
    assert forest["niah"]["label"] == "niah \u00b7 contains, K = 2"
    assert forest["mmlu"]["label"] == "mmlu \u00b7 acc, K = 2 (no random control: retrieval@2 vs none)"
    assert rows[("niah", 4)]["effect"]["condition"] == "retrieval@4 \u2212 random@4"
    expected = {
        "niah": ("retrieval@2 \u2212 random@2", "retrieval@2", "random@2"),
        "mmlu": ("retrieval@2", "retrieval@2", None),
        "gsm8k_cot": ("retrieval@2", "retrieval@2", None),
    }
    for task, row in forest.items():
        assert row["filter"] == next(iter(next(t for t in model["tasks"] if t["task"] == task)["filters"]))
        for part, condition in zip(("effect", "retrieval", "random"), expected[task]):
            if condition is None:
                assert row[part] is None
                continue
            c = find_comparison(report, task, condition, row["metric"], row["filter"])
            assert c["headline"] and c["k"] == model["headline_k"]
            # the family is what the design asks: the contrast and the random control; retrieval against none
            # only where no random control stands beside it
            assert c["in_family"] == (part != "retrieval" or task != "niah")
            assert row[part] == {
                "condition": condition,
                "reference": c["reference"],
                "delta": c["delta"],
                "ci_low": c["ci_low"],
                "ci_high": c["ci_high"],
                "p_holm": c["p_holm"],
            }
        assert row["significant"] == (row["effect"]["p_holm"] < 0.05)
        assert row["baseline"] == find_comparison(report, task, "retrieval@2", row["metric"], row["filter"])["baseline"]
    assert forest["niah"]["effect"]["reference"] == "random@2"


def test_forest_figure_opens_the_report(built):
    _, files = built
    assert files.forest == files.markdown.parent / "forest.svg"
    assert_well_formed(files.forest.read_text())
    markdown = files.markdown.read_text()
    sentences = answers(files.report.models[0])
    assert markdown.index(f"- {sentences[-1]}") < markdown.index("](forest.svg)") < markdown.index("## Methods")
    html = files.html.read_text()
    figure = html.index("<svg")
    assert html.index("<h1>") < html.index("<li>" + sentences[0].replace("'", "&#39;")) < figure
    assert figure < html.index("Unit of analysis") and figure < html.index("<h3>Findings</h3>")


def test_figures_with_one_cell_or_one_k_are_left_out_with_a_note(tmp_path):
    runs = [
        write_run(tmp_path / "none", {"niah": flat_rows(NONE)}, masking={"heads_kind": "none"}),
        write_run(
            tmp_path / "retrieval",
            {"niah": flat_rows(RETRIEVAL[2])},
            masking={"heads_kind": "retrieval", "k": 2, "heads": [[1, 0], [1, 1]]},
        ),
    ]
    for seed in range(3):
        masking = {"heads_kind": "random", "k": 2, "seed": seed, "heads": [[0, seed], [2, 2]]}
        runs.append(write_run(tmp_path / f"random{seed}", {"niah": flat_rows(RANDOM[2, seed])}, masking=masking))
    files = write_report(runs, tmp_path / "out", **FAST)
    model = written(files)["models"][0]
    notes = ["niah: one context length and one depth, so no heatmap.", "niah: one K, so no dose-response figure."]
    assert model["skipped_figures"] == notes
    assert model["heatmaps"] == [] and {r["k"] for r in model["k_sweep"]} == {2}  # the sweep's numbers stay
    html, markdown = files.html.read_text(), files.markdown.read_text()
    assert all(note in html and note in markdown for note in notes)
    assert "Dose\u2013response" not in html and "score by depth and context length" not in html
    assert html.count("<svg") == 2  # the forest plot and the failure breakdown


def test_figures_with_several_cells_and_ks_are_drawn(built):
    _, files = built
    model = written(files)["models"][0]
    assert model["skipped_figures"] == []
    html = files.html.read_text()
    assert "Dose\u2013response: \u0394 against K" in html and "niah: score by depth and context length" in html


def test_suite_summary_is_one_table_within_the_terminal(built):
    _, files = built
    model = written(files)["models"][0]
    for width in (100, 300, 80):
        text = summary(files, width)
        *lines, where = text.splitlines()
        assert where.startswith("Report: ") and all(len(line) <= min(width, 100) for line in lines), width
        table = text.split(f"\n{model['model']}\n")[1].split("\n\n")[0].splitlines()
        header, rows = table[0], table[1:]
        assert header.split()[-7:] == ["K", "unmasked", "\u0394", "retrieval", "\u0394", "random", "contrast"]
        assert text.count("unmasked  ") == 1 and len(rows) == 2 * len(model["forest"])  # one table, two lines a row
        for row, values, intervals in zip(model["forest"], rows[::2], rows[1::2]):
            contrast = row["effect"] if row["random"] else None
            shown = [interval_text(e).split(" [") for e in (row["retrieval"], row["random"], contrast) if e]
            cells = values.split()
            assert cells[1:3] == [str(row["k"]), format_value(row["baseline"], True)]
            assert [c.rstrip("*\u2020") for c in cells[3:] if c != "\u2014"] == [delta for delta, _ in shown]
            assert all(f"[{ci}" in intervals for _, ci in shown) and intervals.split()[1].rstrip(",") == row["metric"]
    assert "Design: mmlu: 10 items; gsm8k_cot: 4 items; niah: 18 items in 6 contexts, 1 to 3 random seeds." in summary(
        files
    )
