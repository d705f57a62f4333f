"""The report end to end on synthetic lm-eval output folders written in lm-eval's exact on-disk format."""

import hashlib
import itertools
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rh_tasks.plugin.command import main
from rh_tasks.report import ReportInputError, write_report
from rh_tasks.report.failures import classify, words
from rh_tasks.report.narrative import answers, format_value
from rh_tasks.report.render import cross_model_table, forest_rows
from rh_tasks.report.schema import to_json
from rh_tasks.suite.summary import summary

MODEL = "/models/tiny-llama"
HAYSTACK = "The Time Traveller was expounding a recondite matter to us. His grey eyes shone and twinkled."
NEEDLES = [
    (
        "sf",
        "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park.",
        "What is the best thing to do in San Francisco?",
        "eat a sandwich and sit in Dolores Park",
    ),
    (
        "pw",
        "The password to the lighthouse storeroom is violet harbor ninety-two.",
        "What is the password to the lighthouse storeroom?",
        "violet harbor ninety-two",
    ),
    (
        "kite",
        "The kite festival in Port Elmsworth is held on the first Sunday of September.",
        "When is the kite festival held?",
        "on the first Sunday of September",
    ),
]
LENGTHS, DEPTHS = (256, 512), (0, 50, 100)
FAST = {"n_resamples": 2000}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def niah_docs():
    docs = []
    for needle_id, needle, question, answer in NEEDLES:
        for length in LENGTHS:
            for depth in DEPTHS:
                docs.append(
                    {
                        "length": length,
                        "depth": depth,
                        "needle_id": needle_id,
                        "answer": answer,
                        "context_id": f"{needle_id}/{length}",
                        "needle": needle,
                        "question": question,
                    }
                )
    return docs


def niah_rows(outcomes: list[str], prompt_suffix: str = "") -> list[dict]:
    """Rows for the 18 NIAH docs; outcome c(orrect), p(artial), h(allucinated) or w(rong extraction)."""
    rows = []
    for doc_id, (doc, outcome) in enumerate(zip(niah_docs(), outcomes)):
        prompt = f"{HAYSTACK} {doc['needle']} {HAYSTACK}\nQuestion: {doc['question']}\nAnswer:{prompt_suffix}"
        response = {
            "c": doc["answer"],
            "p": doc["answer"].split()[-1],
            "h": "I like turtles very much",
            "w": "grey eyes shone and twinkled",
        }[outcome]
        score = {"c": 1.0, "p": 0.0, "h": 0.0, "w": 0.0}[outcome]
        rows.append(
            sample_row(
                doc_id,
                doc,
                prompt,
                response,
                "none",
                {"contains": score, "rouge1_recall": {"c": 1.0, "p": 0.3}.get(outcome, 0.0)},
            )
        )
    return rows


def sample_row(doc_id, doc, prompt, response, filter_name, metrics) -> dict:
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": str(doc.get("answer", "")),
        "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": ["\n\n"], "max_gen_toks": 32}}},
        "resps": [[response]],
        "filtered_resps": [response],
        "filter": filter_name,
        "metrics": list(metrics),
        "doc_hash": _sha(json.dumps(doc, sort_keys=True)),
        "prompt_hash": _sha(prompt),
        "target_hash": _sha(str(doc.get("answer", ""))),
        **metrics,
    }


def mc_rows(correct: list[int], subject: str) -> list[dict]:
    return [
        sample_row(
            i,
            {"question": f"{subject} q{i}", "choices": ["a", "b"], "answer": 0},
            f"{subject} q{i}",
            ["-1.0", "False"],
            "none",
            {"acc": float(c)},
        )
        for i, c in enumerate(correct)
    ]


def gsm_rows(strict: list[int], flexible: list[int]) -> list[dict]:
    rows = []
    for name, values in (("strict-match", strict), ("flexible-extract", flexible)):
        rows += [
            sample_row(
                i, {"question": f"q{i}", "answer": "#### 4"}, f"Q: q{i}\nA:", "4", name, {"exact_match": float(v)}
            )
            for i, v in enumerate(values)
        ]
    return rows


def write_run(
    folder: Path,
    tasks: dict[str, list[dict]],
    *,
    masking: dict | None = None,
    model: str = MODEL,
    versions: dict | None = None,
    date: str = "2026-01-01T10-00-00.000001",
    groups: dict | None = None,
    weights: str | None = "abc123",
) -> Path:
    """One condition's lm-eval output, as ``lm_eval --output_path folder --log_samples`` lays it out."""
    out = folder / model.strip("/").replace("/", "__")
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": "rh-masked" if masking else "hf",
        "model_args": f"pretrained={model},dtype=float32",
        "model_num_parameters": 1000,
        "model_dtype": "torch.float32",
        "model_revision": "main",
        "model_sha": "",
        "batch_size": 1,
        "device": "cpu",
        "limit": None,
        "bootstrap_iters": 100000,
    }
    if masking:
        config["rh_masking"] = {
            "heads_kind": "none",
            "k": None,
            "seed": None,
            "match": None,
            "unit": "head",
            "num_masked": 0,
            "heads": [],
            "mode": "uniform",
            "phase": "all",
            "head_scores": None,
            "head_scores_sha256": None,
            "model": model,
            "model_sha256": weights,
            "audit": {"clean": True, "problems": [], "forward_passes": 1, "canary_logit_change": 1.0, "layers": {}},
        } | masking
    results = {
        "results": {t: {"alias": t} for t in tasks} | {g: {"alias": g} for g in (groups or {})},
        "group_subtasks": (groups or {}) | {t: [] for t in tasks},
        "configs": {t: {"task": t} for t in tasks},
        "versions": {t: 1.0 for t in tasks} | (versions or {}),
        "n-shot": {t: 0 for t in tasks},
        "higher_is_better": {},
        "n-samples": {t: {"original": len(r), "effective": len(r)} for t, r in tasks.items()},
        "config": config,
        "git_hash": None,
        "date": 0.0,
        "model_name": model,
    }
    (out / f"results_{date}.json").write_text(json.dumps(results, indent=2))
    for task, rows in tasks.items():
        (out / f"samples_{task}_{date}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


NONE = ["c"] * 16 + ["p", "c"]
RETRIEVAL = {2: ["h"] * 6 + ["w"] * 5 + ["p"] + ["c"] * 6, 4: ["h"] * 9 + ["w"] * 8 + ["c"]}
RANDOM = {
    (2, 0): ["c"] * 17 + ["h"],
    (2, 1): ["c"] * 18,
    (2, 2): ["h", "h"] + ["c"] * 16,
    (4, 0): ["h"] * 3 + ["c"] * 15,
}
MMLU = {"mmlu_anatomy": ([1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1]), "mmlu_virology": ([1, 1, 0, 1], [1, 1, 0, 0])}


def suite(root: Path, model: str = MODEL, weights: str | None = "abc123") -> list[Path]:
    """none, retrieval@2 and @4, random@2 (3 seeds) and random@4 (1 seed): niah, gsm8k_cot and an mmlu group."""
    groups = {"mmlu": list(MMLU)}
    folders = [
        write_run(
            root / "none",
            {
                "niah": niah_rows(NONE),
                "gsm8k_cot": gsm_rows([1, 0, 1, 1], [1, 1, 1, 1]),
                **{s: mc_rows(base, s) for s, (base, _) in MMLU.items()},
            },
            groups=groups,
            model=model,
            weights=weights,
            masking={"heads_kind": "none"} if weights else None,
        )
    ]
    for k, outcomes in RETRIEVAL.items():
        folders.append(
            write_run(
                root / f"retrieval{k}",
                {
                    "niah": niah_rows(outcomes),
                    "gsm8k_cot": gsm_rows([0, 0, 1, 1], [1, 0, 1, 1]),
                    **{s: mc_rows(masked, s) for s, (_, masked) in MMLU.items()},
                },
                groups=groups,
                model=model,
                weights=weights,
                masking={"heads_kind": "retrieval", "k": k, "num_masked": k, "heads": [[1, h] for h in range(k)]},
            )
        )
    for (k, seed), outcomes in RANDOM.items():
        folders.append(
            write_run(
                root / f"random{k}_{seed}",
                {"niah": niah_rows(outcomes)},
                model=model,
                weights=weights,
                masking={"heads_kind": "random", "k": k, "seed": seed, "num_masked": k, "heads": [[0, seed], [2, k]]},
            )
        )
    return folders


def contains_scores(folder: Path, task: str = "niah") -> dict[int, float]:
    """Independent reading of a samples file."""
    (path,) = folder.rglob(f"samples_{task}_*.jsonl")
    return {row["doc_id"]: row["contains"] for row in map(json.loads, path.read_text().splitlines())}


class WellFormed(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def assert_well_formed(html: str) -> WellFormed:
    parser = WellFormed()
    parser.feed(html)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, parser.stack
    return parser


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    folders = suite(root)
    files = write_report(folders, root / "report", **FAST)
    return root, files


def written(files) -> dict:
    """The report.json a report wrote, as any reader of it sees it."""
    return json.loads(files.json.read_text())


def _find(report, task, condition, metric=None, filter_name=None):
    model = report["models"][0]
    for c in model["comparisons"]:
        if (
            (c["task"], c["condition"]) == (task, condition)
            and metric in (None, c["metric"])
            and filter_name in (None, c["filter"])
        ):
            return c
    raise AssertionError(f"no comparison {task} {condition}")


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


def test_report_json_matches_independent_recomputation(built):
    root, files = built
    report = json.loads(files.json.read_text())
    base = contains_scores(root / "none")
    masked = contains_scores(root / "retrieval2")
    c = _find(report, "niah", "retrieval@2", "contains")
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
    pooled = _find(report, "niah", "random@2", "contains")
    assert (pooled["n_seeds"], pooled["unit"], pooled["conditional"]) == (3, "seed and cluster", False)
    # the two-way t test over 3 seeds and 6 contexts: min(3, 6) - 1 degrees of freedom, no sign-flip floor
    assert (pooled["df"], pooled["min_attainable_p"], pooled["p_exact"]) == (2, 0.0, None)
    assert pooled["p_value"] == pooled["p_t"]
    assert pooled["null"].startswith("masking random sets of 2 heads leaves the score unchanged on average")
    assert pooled["delta"] == pytest.approx(np.mean([np.mean([s[i] for s in seeds]) - base[i] for i in base]))
    contrast = _find(report, "niah", "retrieval@2 \u2212 random@2", "contains")
    assert contrast["delta"] == pytest.approx(c["delta"] - pooled["delta"])
    assert contrast["in_family"] and contrast["unit"] == "seed and cluster"
    assert contrast["null"].startswith("retrieval@2's expected change equals the mean change of random sets")
    per_seed = [np.mean([masked[i] - s[i] for i in base]) for s in seeds]
    beaten = sum(d < 0 for d in per_seed)
    assert contrast["rank"] == {"beaten": beaten, "sets": 3, "p_value": pytest.approx((1 + 3 - beaten) / 4)}
    single = _find(report, "niah", "random@4", "contains")  # one seed: conditional on the drawn set
    assert (single["n_seeds"], single["conditional"], single["unit"], single["se_seeds"]) == (1, True, "cluster", None)
    assert _find(report, "niah", "retrieval@4 \u2212 random@4", "contains")["conditional"]
    assert not _find(report, "niah", "random@2/seed=0", "contains")["in_family"]  # per-seed rows: exploratory


def test_groups_pool_subtasks_and_filters_stay_apart(built):
    _, files = built
    report = written(files)
    mmlu = _find(report, "mmlu", "retrieval@2", "acc")
    assert mmlu["n"] == 10
    assert mmlu["delta"] == pytest.approx((-1 - 1) / 10)
    strict = _find(report, "gsm8k_cot", "retrieval@2", "exact_match", "strict-match")
    flexible = _find(report, "gsm8k_cot", "retrieval@2", "exact_match", "flexible-extract")
    assert (strict["n"], strict["delta"], flexible["delta"]) == (4, -0.25, -0.25)
    assert not _find(report, "mmlu_anatomy", "retrieval@2")["in_family"]


def test_holm_family_and_statements(built):
    _, files = built
    report = written(files)
    family = [c for m in report["models"] for c in m["comparisons"] if c["in_family"]]
    assert report["settings"]["family_size"] == len(family)
    assert all(c["p_holm"] >= c["p_value"] and c["p_bh"] is not None for c in family)
    assert not any(c["kind"] == "random_seed" for c in family)
    statements = report["models"][0]["statements"]
    niah = [s for s in statements if s.startswith("niah")]
    assert "niah · random@2 vs none: " in niah[2] and niah[2].endswith("no effect shown (the interval includes 0).")
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


def test_k_sweep_has_both_series(built):
    _, files = built
    sweep = [r for r in written(files)["models"][0]["k_sweep"] if r["task"] == "niah"]
    assert {(r["series"], r["k"]) for r in sweep} == {("retrieval", 2), ("retrieval", 4), ("random", 2), ("random", 4)}
    family = {c["p_holm"] for c in written(files)["models"][0]["comparisons"] if c["in_family"]}
    assert all(r["p_holm"] is not None and r["p_holm"] in family for r in sweep)  # after Holm, not before


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


def _two_runs(tmp_path, **changes):
    base = write_run(tmp_path / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})
    other = write_run(
        tmp_path / "masked",
        {"niah": changes.pop("rows", niah_rows(RETRIEVAL[2]))},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
        **changes,
    )
    return [base, other]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rows": niah_rows(RETRIEVAL[2], prompt_suffix=" ")}, "prompt_hash"),
        ({"versions": {"niah": 2.0}}, "task versions"),
        ({"weights": "fff999"}, "different weights"),
        ({"model": "/models/other"}, "no unmasked run of /models/other"),
    ],
)
def test_refuses_runs_that_cannot_be_paired(tmp_path, changes, message):
    folders = _two_runs(tmp_path, **changes)
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
    rows[3]["doc_hash"] = _sha("another document")
    with pytest.raises(ReportInputError, match="doc_hash"):
        write_report(_two_runs(tmp_path, rows=rows), tmp_path / "out", **FAST)


def run_cli(argv) -> int:
    return main(["report", *map(str, argv)])


def test_cli_errors_leave_existing_report_untouched(tmp_path, capsys):
    folders = _two_runs(tmp_path)
    assert run_cli([*folders, "-o", tmp_path / "out", "--n-resamples", "2000"]) == 0
    assert "Wrote" in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert set(before) == {"report.md", "report.json", "report.html", "forest.svg"}

    (tmp_path / "empty").mkdir()
    no_samples = tmp_path / "no_samples"
    write_run(no_samples, {"niah": niah_rows(NONE)})
    for sample in no_samples.rglob("samples_*"):
        sample.unlink()
    bad = _two_runs(tmp_path / "bad", versions={"niah": 9.0})
    for args in ([tmp_path / "empty"], [no_samples], bad, [tmp_path / "missing"]):
        assert run_cli([*args, "-o", tmp_path / "out"]) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_cli_without_output_dir_writes_a_new_report_folder_and_never_overwrites(tmp_path, capsys):
    runs = tmp_path / "runs"
    folders = _two_runs(runs)  # runs/none and runs/masked
    assert run_cli([*folders, "--n-resamples", "1000"]) == 0  # several: report/ in the folder holding them
    assert f"Wrote {runs / 'report' / 'report.md'}" in capsys.readouterr().out
    first = (runs / "report" / "report.json").read_bytes()
    assert run_cli([*folders, "--n-resamples", "2000"]) == 0  # a second report goes next to the first
    assert f"Wrote {runs / 'report-2' / 'report.md'}" in capsys.readouterr().out
    assert run_cli([runs, "--n-resamples", "1000"]) == 0  # one RUN_DIR: report/ inside it, numbered on
    assert f"Wrote {runs / 'report-3' / 'report.md'}" in capsys.readouterr().out
    assert (runs / "report" / "report.json").read_bytes() == first


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        run_cli(["--help"])
    options = capsys.readouterr().out.split("options:")[1]  # the usage line lists every flag: read past it
    entries = [e for e in re.split(r"\n  (?=-)", options) if e.strip()]
    for flag in ("--output-dir", "--seed", "--n-resamples", "--confidence", "--headline-k"):
        (entry,) = [e for e in entries if re.search(rf"(^|, ){flag}\b", e.splitlines()[0])]
        words = re.sub(r"-[-\w]+( [A-Z]+)?,?", " ", entry).split()  # the flag and its metavar removed
        assert len(words) >= 5, f"{flag} has no explanation: {entry!r}"


def two_models(tmp_path: Path):
    """The suite for MODEL and for /models/robust, which barely notices retrieval masking at K = 2."""
    folders = suite(tmp_path / "m1", weights=None)  # baseline written as a plain hf run
    folders += suite(tmp_path / "m2", model="/models/robust")
    for path in (tmp_path / "m2" / "retrieval2").rglob("samples_niah_*.jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in niah_rows(["c"] * 17 + ["h"])))
    return write_report(folders, tmp_path / "out", **FAST)


def test_plain_hf_runs_and_cross_model_ranking(tmp_path):
    """A plain hf baseline pairs with masked runs of the same model; two models are ranked, never cross-paired."""
    files = two_models(tmp_path)
    report = written(files)
    assert [row["model"] for row in report["cross_model"]] == [MODEL, "/models/robust"]
    first, second = report["cross_model"]
    assert first["dependence"] > second["dependence"]
    assert first["tasks"]["niah"]["contrast"]["n"] == 18
    assert first["dependence_basis"] == "long-context tasks"
    html = files.html.read_text()
    assert_well_formed(html)
    assert "Across models" in html


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


def test_newest_run_of_a_condition_wins(tmp_path):
    folders = _two_runs(tmp_path)
    write_run(
        tmp_path / "masked",
        {"niah": niah_rows(NONE)},
        date="2026-01-02T10-00-00.000001",
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
    )
    report = written(write_report(folders, tmp_path / "out", **FAST))
    assert report["models"][0]["comparisons"][0]["delta"] == 0.0


@pytest.mark.parametrize(
    "response, outcome",
    [
        ("eat a sandwich and sit in Dolores Park", "correct"),
        ("Eat a sandwich.", "incomplete"),
        ("His grey eyes shone and twinkled", "wrong_extraction"),
        ("What is the best thing to do", "wrong_extraction"),
        ("Ride a cable car to the bay", "hallucinated"),
        ("  ...  ", "empty"),
    ],
)
def test_failure_outcomes(response, outcome):
    prompt = f"{HAYSTACK} {NEEDLES[0][1]} {HAYSTACK}\nQuestion: {NEEDLES[0][2]}\nAnswer:"
    assert classify(response, [NEEDLES[0][3]], " ".join(words(prompt))) == outcome


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
    folders = _two_runs(tmp_path)
    write_run(
        tmp_path / "rerun",
        {"niah": niah_rows(NONE)},
        date="2026-01-02T10-00-00.000001",
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[5, 1], [6, 1]]},
    )
    with pytest.raises(ReportInputError, match=r"both retrieval@2 but masked different heads.*\(5,1\)"):
        write_report([*folders, tmp_path / "rerun"], tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


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


def test_variants_at_the_same_k_do_not_replace_each_other(tmp_path):
    folders = _two_runs(tmp_path)
    write_run(
        tmp_path / "zero",
        {"niah": niah_rows(NONE)},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]], "mode": "zero"},
    )
    model = written(write_report([*folders, tmp_path / "zero"], tmp_path / "out", **FAST))["models"][0]
    sweep = {(r["series"], r["k"]): r["delta"] for r in model["k_sweep"]}
    assert sweep[("retrieval", 2)] < 0 and sweep[("retrieval [zero]", 2)] == 0.0


def test_single_seed_findings_say_they_hold_for_the_drawn_set(tmp_path):
    report = written(write_report(suite(tmp_path), tmp_path / "out", headline_k=4, **FAST))
    niah = [s for s in report["models"][0]["statements"] if s.startswith("niah")]
    pooled = next(s for s in niah if "random@4 vs none" in s)
    contrast = next(s for s in niah if "retrieval@4 \u2212 random@4:" in s)
    for line in (pooled, contrast):
        assert line.endswith("for the drawn random set only (1 seed, fewer than 3).")


def test_a_task_the_model_cannot_do_is_called_so(tmp_path):
    """A task at 0 unmasked says nothing about retrieval heads, however the masked runs score."""
    masking = {"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]}
    runs = [
        write_run(
            tmp_path / "none",
            {"gsm8k_cot": gsm_rows([0] * 4, [0] * 4), "mmlu": mc_rows([1, 0], "anatomy")},
            masking={"heads_kind": "none"},
        ),
        write_run(
            tmp_path / "masked",
            {"gsm8k_cot": gsm_rows([0] * 4, [0] * 4), "mmlu": mc_rows([0, 0], "anatomy")},
            masking=masking,
        ),
    ]
    files = write_report(runs, tmp_path / "out", **FAST)
    statements = written(files)["models"][0]["statements"]
    floor = "the model scores 0 on it unmasked, so masking has nothing to remove here"
    assert sum(floor in s for s in statements if s.startswith("gsm8k_cot")) == 2  # one line for each filter
    assert not any(floor in s for s in statements if s.startswith("mmlu"))
    said = dict(sentence.split(": ", 1) for sentence in answers(files.report.models[0]))
    assert said["gsm8k_cot (flexible-extract)"].startswith("the model scores 0 on it unmasked, so it cannot tell")
    assert not said["mmlu"].startswith("the model scores 0")
    labels = [row["label"] for row in written(files)["models"][0]["forest"]]
    assert labels == [
        "gsm8k_cot (flexible-extract) \u00b7 exact_match (no random control: retrieval@2 vs none; scores 0 unmasked: "
        "cannot tell)",
        "mmlu \u00b7 acc (no random control: retrieval@2 vs none)",
    ]


def _interval_text(brief: dict) -> str:
    values = [format_value(brief[key], True, signed=True) for key in ("delta", "ci_low", "ci_high")]
    return f"{values[0]} [{values[1]}, {values[2]}]"


def test_cross_model_table_ranks_by_long_context_contrast_and_shows_its_interval(tmp_path):
    files = two_models(tmp_path)
    report = written(files)
    contrasts = {row["model"]: row["tasks"]["niah"]["contrast"] for row in report["cross_model"]}
    assert contrasts[MODEL]["delta"] < contrasts["/models/robust"]["delta"]  # more dependent on retrieval heads
    columns, rows = cross_model_table(files.report)
    assert [r["model"] for r in rows] == [MODEL, "/models/robust"]  # not the alphabetical order
    assert columns == ["gsm8k_cot", "mmlu", "niah (long context)"]
    for row in rows:
        niah = row["cells"][columns.index("niah (long context)")]
        assert niah["text"] == _interval_text(contrasts[row["model"]])
        assert [c["text"] for c in row["cells"][:2]] == ["\u2014", "\u2014"]  # no random control
    markdown = files.markdown.read_text()
    assert markdown.index(f"**{MODEL}**") < markdown.index("**/models/robust**")  # the answers in rank order
    assert [row.model for row in forest_rows(files.report)] == [MODEL] * 6 + ["/models/robust"] * 6  # 3 tasks x K 2, 4
    rule = markdown.index("Ranked by dependence on retrieval heads: minus the mean causal contrast")
    first = markdown.index(f"| 1 | {MODEL} | 2 |")
    assert rule < first < markdown.index("| 2 | /models/robust | 2 |")
    assert _interval_text(contrasts[MODEL]) in markdown[first:].splitlines()[0]
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
            c = _find(report, task, condition, row["metric"], row["filter"])
            assert c["in_family"] and c["k"] == model["headline_k"]
            assert row[part] == {
                "condition": condition,
                "reference": c["reference"],
                "delta": c["delta"],
                "ci_low": c["ci_low"],
                "ci_high": c["ci_high"],
                "p_holm": c["p_holm"],
            }
        assert row["significant"] == (row["effect"]["p_holm"] < 0.05)
        assert row["baseline"] == _find(report, task, "retrieval@2", row["metric"], row["filter"])["baseline"]
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


def flat_rows(outcomes: list[str]) -> list[dict]:
    """NIAH rows whose documents all sit at one context length and one depth."""
    rows = niah_rows(outcomes)
    for row in rows:
        row["doc"] |= {"length": 256, "depth": 50}
        row["doc_hash"] = _sha(json.dumps(row["doc"], sort_keys=True))
    return rows


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


def test_suite_summary_shows_the_leaderboard_within_the_terminal(built):
    _, files = built
    text = summary(files, 100)
    niah = next(row for row in written(files)["models"][0]["forest"] if row["task"] == "niah")
    assert _interval_text(niah["effect"]) in text
    leaderboard = text.split("Answers:")[0].splitlines()[3:]  # after the legend and the model's name
    assert leaderboard[0].startswith("task \u00b7 metric") and all(len(line) <= 100 for line in leaderboard)
