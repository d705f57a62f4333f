"""GSM8K test questions for ``gsm8k_cot`` and ``gsm8k_direct``, from the packaged copy or, on request, the hub.

lm-eval's built-in ``gsm8k_cot`` reads ``openai/gsm8k`` from the Hugging Face hub, which fails offline and can
change under a pinned result. Our copy of the task reads the official test file shipped with the package
(sha256-checked) and keeps the hub as an explicit choice: ``--metadata '{"source": "hub"}'``.
"""

from __future__ import annotations

import logging

from rh_tasks.shared.options import check_option_names
from rh_tasks.shared.task_data import TASK_DATA

logger = logging.getLogger(__name__)

PACKAGED_TEST = "gsm8k/test.jsonl.gz"
HUB_DATASET = ("openai/gsm8k", "main")
SOURCES = ("packaged", "hub")


def load_test(source: str = "packaged"):
    """The 1,319 GSM8K test problems as a ``datasets.Dataset`` with ``question`` and ``answer`` columns."""
    import datasets

    if source == "packaged":
        return datasets.Dataset.from_list(TASK_DATA.read_jsonl(PACKAGED_TEST))
    if source == "hub":
        return datasets.load_dataset(*HUB_DATASET, split="test")
    raise ValueError(f"GSM8K source={source!r} is not one of {SOURCES}; use 'packaged' (default, offline) or 'hub'.")


def describe_source(source: str) -> str:
    if source == "hub":
        return f"{HUB_DATASET[0]} ({HUB_DATASET[1]}) from the Hugging Face hub"
    return f"the packaged GSM8K test set {TASK_DATA.folder / PACKAGED_TEST} (sha256 checked)"


def cot_dataset(source: str = "packaged", **_metadata) -> dict:
    """``custom_dataset`` hook of ``gsm8k_cot``; the task shares its name with lm-eval's built-in, so say which runs."""
    check_option_names("gsm8k_cot", _metadata, ("source",))
    test = load_test(source)
    # A warning, so that it shows: lm-eval's CLI prints only its own loggers below that level.
    logger.warning(
        "gsm8k_cot: rh-eval's copy of lm-eval's gsm8k_cot is active (same prompts and scoring); data: %s.",
        describe_source(source),
    )
    return {"test": test}


def direct_dataset(source: str = "packaged", **_metadata) -> dict:
    """``custom_dataset`` hook of ``gsm8k_direct``: the same questions as ``gsm8k_cot``."""
    check_option_names("gsm8k_direct", _metadata, ("source",))
    test = load_test(source)
    logger.info("gsm8k_direct: data: %s.", describe_source(source))
    return {"test": test}
