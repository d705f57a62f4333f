"""Synthetic lm-eval output folders in lm-eval's exact on-disk format, and readers of the reports made from them."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

from rh_tasks.report import write_report
from rh_tasks.report.narrative import format_value

MODEL = "models/tiny-llama"
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


def sha(text: str) -> str:
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
        "doc_hash": sha(json.dumps(doc, sort_keys=True)),
        "prompt_hash": sha(prompt),
        "target_hash": sha(str(doc.get("answer", ""))),
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
        "date": datetime.strptime(date, "%Y-%m-%dT%H-%M-%S.%f").replace(tzinfo=timezone.utc).timestamp(),
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


def written(files) -> dict:
    """The report.json a report wrote, as any reader of it sees it."""
    return json.loads(files.json.read_text())


def find_comparison(report, task, condition, metric=None, filter_name=None):
    model = report["models"][0]
    for c in model["comparisons"]:
        if (
            (c["task"], c["condition"]) == (task, condition)
            and metric in (None, c["metric"])
            and filter_name in (None, c["filter"])
        ):
            return c
    raise AssertionError(f"no comparison {task} {condition}")


def two_runs(tmp_path, **changes):
    base = write_run(tmp_path / "none", {"niah": niah_rows(NONE)}, masking={"heads_kind": "none"})
    other = write_run(
        tmp_path / "masked",
        {"niah": changes.pop("rows", niah_rows(RETRIEVAL[2]))},
        masking={"heads_kind": "retrieval", "k": 2, "heads": [[0, 1], [1, 1]]},
        **changes,
    )
    return [base, other]


def two_models(tmp_path: Path):
    """The suite for MODEL and for models/robust, which barely notices retrieval masking at K = 2."""
    folders = suite(tmp_path / "m1", weights=None)  # baseline written as a plain hf run
    folders += suite(tmp_path / "m2", model="models/robust")
    for path in (tmp_path / "m2" / "retrieval2").rglob("samples_niah_*.jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in niah_rows(["c"] * 17 + ["h"])))
    return write_report(folders, tmp_path / "out", **FAST)


def interval_text(brief: dict) -> str:
    values = [format_value(brief[key], True, signed=True) for key in ("delta", "ci_low", "ci_high")]
    return f"{values[0]} [{values[1]}, {values[2]}]"


def flat_rows(outcomes: list[str]) -> list[dict]:
    """NIAH rows whose documents all sit at one context length and one depth."""
    rows = niah_rows(outcomes)
    for row in rows:
        row["doc"] |= {"length": 256, "depth": 50}
        row["doc_hash"] = sha(json.dumps(row["doc"], sort_keys=True))
    return rows
