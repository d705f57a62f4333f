"""The chain-of-thought section: where masking hurts a teacher-forced solution, token class by token class.

Rows come from the derived class tasks (:mod:`.derived`) at the model's headline K: each class's tokens and
questions, its unmasked NLL per token, and the change under the retrieval set, under the pooled random sets and
under each random set alone, with the contrast between them. These rows are exploratory (outside the corrected
family). After them come the whole solution, the direct answers and chain of thought minus direct answers, whose
comparisons are in the family: the last is the paper's claim in one number.
"""

from __future__ import annotations

from dataclasses import dataclass

from rh_tasks.gsm8k.teacher_forced_fields import CLASSED, TWINS
from rh_tasks.gsm8k.token_classes import CLASSES, TITLES

from .derived import TOKEN_METRIC, class_task, interaction_task
from .schema import Comparison, ModelReport, TaskSummary

COLUMNS = ["task", "tokens of", "tokens", "questions", "unmasked", "Δ retrieval", "Δ random", "contrast", "p (Holm p)"]
NOTE = (
    "NLL per token (nats), teacher-forced, of each class of gold-solution tokens (numbers copied from the question, "
    "from an earlier step, new numbers, other text), of the whole solution, of the direct answers, and of chain "
    "of thought minus direct answers per question. Δ is masked minus unmasked on the same tokens: positive is "
    "damage. Questions are the clusters and random head sets a sample: two-way t test for the pooled random sets "
    "and the contrast, sign-flip over questions for the retrieval set alone. Token classes are exploratory (no "
    "Holm correction); the last three rows are in the corrected family."
)


@dataclass(frozen=True)
class ClassRow:
    task: str
    title: str
    tokens: int | None  # a class's tokens; None for a whole task
    questions: int
    baseline: float  # unmasked NLL per token
    retrieval: Comparison | None
    random: Comparison | None
    contrast: Comparison | None
    seeds: list[Comparison]  # each random set alone


def class_rows(model: ModelReport) -> list[ClassRow]:
    """Per classed task present in the report: one row per token class, then its whole-task rows."""
    summaries = {t.task: t for t in model.tasks}
    rows = []
    for task in (t for t in CLASSED if class_task(t, CLASSES[0]) in summaries or t in summaries):
        for token_class in CLASSES:
            if (summary := summaries.get(class_task(task, token_class))) is not None:
                rows.append(_row(model, summary, task, TITLES[token_class], tokens=True))
        wholes = [(task, "whole solution"), (TWINS.get(task), "direct answer")]
        wholes.append((interaction_task(task, TWINS[task]) if task in TWINS else None, "chain of thought − direct"))
        rows += [_row(model, summaries[name], name, title) for name, title in wholes if name in summaries]
    return rows


def _row(model: ModelReport, summary: TaskSummary, task: str, title: str, tokens: bool = False) -> ClassRow:
    f = next(iter(summary.filters))
    metric = TOKEN_METRIC if tokens else summary.primary_metric
    picks: dict[str, list[Comparison]] = {}
    for c in model.comparisons:
        if (c.task, c.filter, c.metric) == (summary.task, f, metric) and c.arm.k == model.headline_k:
            picks.setdefault(c.arm.kind, []).append(c)
    first = {kind: sorted(found, key=lambda c: (c.arm.variants, c.arm.label))[0] for kind, found in picks.items()}
    design = summary.filters[f]
    return ClassRow(
        task=task,
        title=title,
        tokens=design.n if tokens else None,
        questions=design.n_clusters,
        baseline=design.baseline,
        retrieval=first.get("retrieval"),
        random=first.get("random"),
        contrast=first.get("contrast"),
        seeds=sorted(picks.get("random_seed", []), key=lambda c: c.arm.label),
    )
