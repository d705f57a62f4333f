"""On the embedded model, a suite's conditions evaluated together report what they report one by one.

Each masking mode under the paper's decode phase, and ``phase=all``; every suite holds a generation task (niah)
and a log-likelihood task (mmlu), so both paths of the shared-prefill engine run on real weights.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from rh_tasks.suite import differences, parse_suite, run_suite
from rh_tasks.suite.identity import LOGPROB_TOLERANCE, suite_conditions

SUITE = {
    "model": {"pretrained": None, "args": {"dtype": "float32"}},  # None: the embedded SmolLM2-135M-Instruct
    "tasks": [
        {
            "task": "niah",
            "limit": 2,
            "metadata": {"lengths": [256], "depths": [50], "needles": ["sf_sandwich", "owl_stamp"]},
        },
        {"task": "mmlu_anatomy", "limit": 2},  # 2 questions, 4 log-likelihoods each
    ],
    "conditions": {"retrieval": [5], "random": {"k": [5], "seeds": [0, 1]}},
}
CONDITIONS = ["none", "random-k5-seed0", "random-k5-seed1", "retrieval-k5"]


def _logprobs(samples: dict) -> list[float]:
    return [
        float(lp) for s in samples.values() if s["output_type"] == "multiple_choice" for lp, _ in s["filtered_resps"]
    ]


def _texts(samples: dict) -> list[str]:
    return [s["resps"][0][0] for s in samples.values() if s["output_type"] == "generate_until"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, phase", [("uniform", "decode"), ("zero", "decode"), ("mean", "decode"), ("uniform", "all")]
)
def test_conditions_together_report_what_they_report_one_by_one(tmp_path, mode, phase):
    config = parse_suite({**SUITE, "masking": {"mode": mode, "phase": phase}})
    together = run_suite(dataclasses.replace(config, output_dir=str(tmp_path / "together")), write_report=False)
    alone = run_suite(
        dataclasses.replace(config, output_dir=str(tmp_path / "one_by_one")), write_report=False, one_by_one=True
    )
    assert differences(together, alone) == []

    for out in (together, alone):
        records = {
            p.parent.name: json.loads(p.read_text())["rh_masking"] for p in out.glob("conditions/*/condition.json")
        }
        assert sorted(records) == CONDITIONS
        for name, masking in records.items():
            audit, layers = masking["audit"], {str(layer) for layer, _ in masking["heads"]}
            assert audit["clean"], (name, audit["problems"])
            assert set(audit["layers"]) == layers and (name == "none") == (not layers)
            assert all(counts["masked_positions"] > 0 for counts in audit["layers"].values())

    # The comparison is not vacuous: each head set moves the log-likelihoods far beyond the tolerance, and
    # masking the retrieval heads changes what the model copies from the context.
    results = {name: samples for name, (_, samples) in suite_conditions(together).items()}
    plain = _logprobs(results["none"])
    assert len(plain) == 8 and len(_texts(results["none"])) == 2
    for name in CONDITIONS[1:]:
        shift = max(abs(a - b) for a, b in zip(_logprobs(results[name]), plain))
        assert shift > 100 * LOGPROB_TOLERANCE, f"{name} barely changes the log-likelihoods ({shift:.2g})"
    assert _texts(results["retrieval-k5"]) != _texts(results["none"])
