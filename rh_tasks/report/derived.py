"""Measures the report derives from the runs of teacher-forced chain-of-thought tasks.

- **Token classes.** Each token of a gold solution is classed by :mod:`rh_tasks.gsm8k.token_classes` (a number
  copied from the question, from an earlier step, a new number, other text), and each class becomes a task of its
  own whose items are tokens and whose clusters are questions: its Δ is the change in NLL per token of that class,
  and its tests treat questions, not tokens, as independent. They need every condition's token record (rh-masked);
  they are exploratory, outside the corrected family.
- **Chain of thought against direct answers.** Per question, the CoT task's metrics minus its direct twin's, a task
  of its own. Its contrast is (Δ retrieval − Δ random) on chains of thought minus the same on direct answers,
  paired by question: the paper's claim that retrieval heads matter more for reasoning, in one number.

Each derived task is carried by a copy of the run that supplied its source, so that pairing, statistics and
rendering treat it as any other task.
"""

from __future__ import annotations

import dataclasses
import logging

from model_wrappers.condition import Condition
from model_wrappers.lm.token_record import sha256
from rh_tasks.gsm8k.teacher_forced_fields import CLASSED, CONTINUATION, TWINS
from rh_tasks.gsm8k.token_classes import CLASSES, classify_tokens
from rh_tasks.shared.samples import SampleFields

from .runs import Item, ReportInputError, Run, TaskRun
from .token_records import token_scores

logger = logging.getLogger(__name__)

MINUS = "\u2212"
TOKEN_METRIC = "nll_token"  # a class's tokens: NLL per token, as the task's own primary metric
TOKENS_PER_DOC = 1 << 20  # a token item's doc_id is doc_id x this + its position: one key per token


def class_task(task: str, token_class: str) -> str:
    return f"{task}[{token_class}]"


def interaction_task(cot: str, direct: str) -> str:
    return f"{cot} {MINUS} {direct}"


def is_interaction(task: str) -> bool:
    return task in {interaction_task(cot, direct) for cot, direct in TWINS.items()}


def derive(model: str, tasks: dict[str, dict[Condition, Run]]) -> tuple[dict[str, dict[Condition, Run]], set[str]]:
    """The derived tasks of one model's runs (task -> condition -> run), and which of them are exploratory."""
    derived: dict[str, dict[Condition, Run]] = {}
    exploratory: set[str] = set()
    for task in (t for t in CLASSED if t in tasks):
        classes = _token_classes(model, task, tasks[task])
        derived |= classes
        exploratory |= set(classes)
    for cot, direct in TWINS.items():
        if cot in tasks and direct in tasks:
            name = interaction_task(cot, direct)
            conditions = tasks[cot].keys() & tasks[direct].keys()
            derived[name] = {
                c: _carry(tasks[cot][c], name, _difference(tasks[cot][c], cot, tasks[direct][c], direct))
                for c in conditions
            }
    return derived, exploratory


def _token_classes(model: str, task: str, runs: dict[Condition, Run]) -> dict[str, dict[Condition, Run]]:
    missing = sorted(c.label for c, run in runs.items() if task not in run.token_logprobs)
    if missing:
        logger.warning(
            "%s: %s has no token record under %s (runs of rh-masked record one), so its token classes are left out.",
            model,
            task,
            ", ".join(missing),
        )
        return {}
    classes: dict[int, list[str]] = {}  # doc_id -> class of each token, the same under every condition
    derived: dict[str, dict[Condition, Run]] = {class_task(task, c): {} for c in CLASSES}
    for condition, run in runs.items():
        items: dict[str, dict[tuple[int, str], Item]] = {c: {} for c in CLASSES}
        for item in run.tasks[task].items.values():
            scores = token_scores(run, task, item)
            if scores is None:
                continue
            solution, spans = _in_solution(item, scores.spans)
            labels = classes.setdefault(item.doc_id, classify_tokens(item.doc["question"], solution, spans))
            if len(labels) != len(spans):
                raise ReportInputError(
                    f"{run.path}: doc_id {item.doc_id} of {task} has {len(spans)} tokens here and {len(labels)} "
                    "under another condition; the runs did not score the same text with the same tokenizer."
                )
            fields = SampleFields(cluster=f"question {item.doc_id}", length=None, depth=None, answers=())
            for position, (label, logprob) in enumerate(zip(labels, scores.logprobs)):
                key = (item.doc_id * TOKENS_PER_DOC + position, item.filter)
                items[label][key] = dataclasses.replace(
                    item, doc_id=key[0], scores={TOKEN_METRIC: -float(logprob)}, fields=fields, doc=None, requests=()
                )
        source = run.tasks[task]
        for label in CLASSES:
            name = class_task(task, label)
            part = TaskRun(
                name,
                source.version,
                source.n_shot,
                [TOKEN_METRIC],
                items[label],
                source.source,
                frozenset({TOKEN_METRIC}),
            )
            derived[name][condition] = _carry(run, name, part)
    return {name: runs for name, runs in derived.items() if all(r.tasks[name].items for r in runs.values())}


def _in_solution(item: Item, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
    """The solution text and the token spans within it (the continuation adds its delimiter before it)."""
    solution = item.doc[CONTINUATION]
    offset = len(item.requests[0][1]) - len(solution)
    return solution, [(max(0, a - offset), max(0, b - offset)) for a, b in spans]


def _difference(cot_run: Run, cot: str, direct_run: Run, direct: str) -> TaskRun:
    """Per question present in both, every shared metric of the CoT task minus the direct task's."""
    first, second = cot_run.tasks[cot], direct_run.tasks[direct]
    metrics = [m for m in first.metrics if m in second.metrics]
    items = {}
    for key in first.items.keys() & second.items.keys():
        a, b = first.items[key], second.items[key]
        if a.doc is not None and b.doc is not None and a.doc.get("question") != b.doc.get("question"):
            raise ReportInputError(
                f"{cot} and {direct} ask different questions under doc_id {key[0]} ({first.source}, "
                f"{second.source}); run both tasks on the same GSM8K data and --limit."
            )
        items[key] = dataclasses.replace(
            a,
            doc_hash=sha256(a.doc_hash + b.doc_hash),
            prompt_hash=sha256(a.prompt_hash + b.prompt_hash),
            scores={m: a.scores[m] - b.scores[m] for m in metrics if m in a.scores and m in b.scores},
            doc=None,
            requests=(),
        )
    name = interaction_task(cot, direct)
    return TaskRun(
        name,
        (first.version, second.version),
        (first.n_shot, second.n_shot),
        metrics,
        items,
        first.source,
        first.lower_is_better & second.lower_is_better,
    )


def _carry(run: Run, name: str, task: TaskRun) -> Run:
    """A copy of ``run`` that holds only the derived task."""
    return dataclasses.replace(run, tasks={name: task})
