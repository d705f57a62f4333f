"""Whether two runs of a suite report the same: the promise of evaluating its conditions together.

Conditions evaluated together (one prefill per prompt, the conditions as rows of a batch) must give what
``--one-by-one`` gives: the same heads, prompts, generated text and per-item metrics. Log-likelihoods only have
to agree within ``LOGPROB_TOLERANCE``: a cached prefix continued in batch rows computes the same float32 sums as
one pass over the whole prompt, but in another order, so their last bits differ.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

LOGPROB_TOLERANCE = 1e-4  # absolute (nats) or relative; float32 rounding of a 49K-token log-softmax is ~1e-6
_LOGLIKELIHOOD_TYPES = {"loglikelihood", "loglikelihood_rolling", "multiple_choice"}
_SAMPLES_FILE = re.compile(r"^samples_(?P<task>.+)_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?\.jsonl$")
_ITEM_FIELDS = ("doc_hash", "prompt_hash", "target_hash")
_RESPONSES = ("resps", "filtered_resps")


def condition_samples(folder: Path) -> dict[tuple[str, int, str], dict]:
    """lm-eval's logged samples of one condition folder, by (task, doc_id, filter).

    Each sample gains ``output_type`` from its task's config in the results file beside it.
    """
    output_types = {}
    for path in folder.rglob("results_*.json"):
        configs = json.loads(path.read_text()).get("configs", {})
        output_types.update({task: config.get("output_type") for task, config in configs.items()})
    samples = {}
    for path in sorted(folder.rglob("samples_*.jsonl")):
        task = _SAMPLES_FILE.match(path.name)["task"]
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            samples[(task, sample["doc_id"], sample["filter"])] = {**sample, "output_type": output_types.get(task)}
    return samples


def suite_conditions(out: Path) -> dict[str, tuple[dict, dict]]:
    """Per condition of a suite output folder: its masking record (without the audit) and its samples."""
    found = {}
    for record in sorted((Path(out) / "conditions").glob("*/condition.json")):
        masking = json.loads(record.read_text())["rh_masking"]
        masking = {key: value for key, value in masking.items() if key != "audit"}
        found[record.parent.name] = (masking, condition_samples(record.parent))
    return found


def compare_samples(first: dict, second: dict, tolerance: float = LOGPROB_TOLERANCE, where: str = "") -> list[str]:
    """How two sets of :func:`condition_samples` differ, one line each; empty when they are the same."""
    lines = [f"{where}{key}: only in the {side}" for key, side in _one_sided(first, second)]
    for key in sorted(first.keys() & second.keys(), key=str):
        a, b = first[key], second[key]
        label = f"{where}{key[0]} doc {key[1]} ({key[2]})"
        for name in _ITEM_FIELDS + ("metrics",):
            if a.get(name) != b.get(name):
                lines.append(f"{label}: {name} {_short(a.get(name))} != {_short(b.get(name))}")
        for name in a.get("metrics") or []:
            if a.get(name) != b.get(name):
                lines.append(f"{label}: {name} {_short(a.get(name))} != {_short(b.get(name))}")
        numeric = a["output_type"] in _LOGLIKELIHOOD_TYPES
        for name in _RESPONSES:
            if not _same(a[name], b[name], tolerance if numeric else None):
                lines.append(f"{label}: {name} {_short(a[name])} != {_short(b[name])}")
    return lines


def differences(first: Path, second: Path, tolerance: float = LOGPROB_TOLERANCE) -> list[str]:
    """Every way two suite output folders disagree, one line each; empty when they report the same.

    Compared per condition: the masking record (heads, mode, phase, scores; not the audit, whose counts depend
    on how the forward passes were batched) and every item's hashes, metrics and responses.
    """
    ours, theirs = suite_conditions(first), suite_conditions(second)
    lines = [f"condition {name}: only in the {side}" for name, side in _one_sided(ours, theirs)]
    for name in sorted(ours.keys() & theirs.keys()):
        (masking, samples), (other_masking, other_samples) = ours[name], theirs[name]
        if masking != other_masking:
            lines.append(f"{name}: masking {_short(masking)} != {_short(other_masking)}")
        lines += compare_samples(samples, other_samples, tolerance, where=f"{name}/")
    return lines


def _one_sided(first: dict, second: dict) -> list[tuple]:
    return [(k, "first") for k in sorted(first.keys() - second.keys(), key=str)] + [
        (k, "second") for k in sorted(second.keys() - first.keys(), key=str)
    ]


def _same(a, b, tolerance: float | None) -> bool:
    """Equal, except that numbers (as lm-eval logs them, strings) of log-likelihood responses may differ slightly."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b))
    if a == b or tolerance is None:
        return a == b
    try:
        return math.isclose(float(a), float(b), rel_tol=tolerance, abs_tol=tolerance)
    except (TypeError, ValueError):
        return False


def _short(value, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
