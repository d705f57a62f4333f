"""MMLU subjects for the ``mmlu`` group, from the packaged Hendrycks CSVs or, on request, the hub.

Docs have the schema of the hub's ``cais/mmlu`` (``question``, ``subject``, ``choices``, ``answer`` as an index),
so lm-eval's built-in MMLU template renders them unchanged. ``per_subject`` keeps a fixed, seeded number of test
questions in every subject: a small run that still covers all 57 subjects equally.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from functools import cache

from rh_tasks.shared.options import check_option_names
from rh_tasks.shared.task_data import TASK_DATA

logger = logging.getLogger(__name__)

HUB_DATASET = "cais/mmlu"
SOURCES = ("packaged", "hub")
LETTERS = "ABCD"


def packaged_file(subject: str, split: str) -> str:
    return f"mmlu/{split}/{subject}_{split}.csv.gz"


def subjects() -> list[str]:
    """The 57 subjects, read from the packaged manifest."""
    prefix, suffix = "mmlu/test/", "_test.csv.gz"
    return sorted(name[len(prefix) : -len(suffix)] for name in TASK_DATA.manifest() if name.startswith(prefix))


def read_split(subject: str, split: str) -> list[dict]:
    """Rows of a headerless Hendrycks CSV (question, A, B, C, D, answer letter) as ``cais/mmlu`` docs."""
    if subject not in subjects():
        raise ValueError(f"Unknown MMLU subject {subject!r}; known subjects: {', '.join(subjects())}.")
    docs = []
    for row in csv.reader(io.StringIO(TASK_DATA.read_text(packaged_file(subject, split)), newline="")):
        question, *choices, letter = row
        docs.append({"question": question, "subject": subject, "choices": choices, "answer": LETTERS.index(letter)})
    return docs


def balanced_subset(docs: list[dict], per_subject: int, seed: int, subject: str) -> list[dict]:
    """``per_subject`` docs drawn with a seed per subject, in their original order."""
    if isinstance(per_subject, bool) or not isinstance(per_subject, int) or per_subject < 1:
        raise ValueError(f"MMLU per_subject={per_subject!r} must be a positive integer (questions per subject).")
    if per_subject > len(docs):
        raise ValueError(
            f"MMLU per_subject={per_subject} exceeds the {len(docs)} test questions of {subject}; "
            "use at most 100 (the smallest subject) for a balanced subset, or leave per_subject unset for all."
        )
    keep = sorted(random.Random(f"{seed}:{subject}").sample(range(len(docs)), per_subject))
    return [docs[i] for i in keep]


@cache
def _announce(source: str) -> None:
    """One line per run, not per subject: our ``mmlu`` shares its names with lm-eval's built-in group.

    A warning, so that it shows: lm-eval's CLI prints only its own loggers below that level.
    """
    where = (
        f"{HUB_DATASET} from the Hugging Face hub"
        if source == "hub"
        else "the packaged Hendrycks CSVs (sha256 checked)"
    )
    logger.warning("mmlu: rh-eval's copy of lm-eval's mmlu is active (same prompts and scoring); data: %s.", where)


def subject_dataset(
    subject: str, source: str = "packaged", per_subject=None, subset_seed: int = 1234, **_metadata
) -> dict:
    """``custom_dataset`` hook of each ``mmlu_<subject>`` task: its test split and the 5-question dev split.

    The seed is ``subset_seed``, not ``seed``: lm-eval merges model_args (rh-masked has its own seed) into metadata.
    """
    import datasets

    check_option_names("mmlu", _metadata, ("source", "per_subject", "subset_seed"))
    if source == "packaged":
        test = read_split(subject, "test")
        dev = datasets.Dataset.from_list(read_split(subject, "dev"))
    elif source == "hub":
        hub = datasets.load_dataset(HUB_DATASET, subject)
        test, dev = hub["test"].to_list(), hub["dev"]
    else:
        raise ValueError(f"MMLU source={source!r} is not one of {SOURCES}; use 'packaged' (default, offline) or 'hub'.")
    if per_subject is not None:
        test = balanced_subset(test, per_subject, subset_seed, subject)
    _announce(source)
    return {"test": datasets.Dataset.from_list(test), "dev": dev}
