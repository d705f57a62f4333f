"""The one place a suite builds its lm-eval tasks: the design check and every condition share each build."""

from __future__ import annotations

import json
import logging

from .config import SuiteConfig

logger = logging.getLogger(__name__)

# model_args that also name the tokenizer and context length the task builders must use
_MODEL_METADATA_KEYS = ("gguf_file", "tokenizer", "max_length", "revision", "trust_remote_code")


def task_metadata(config: SuiteConfig) -> dict:
    """Task metadata the model implies (tokenizer, context length); each task's own metadata is merged on top."""
    meta = {key: config.model_args[key] for key in _MODEL_METADATA_KEYS if key in config.model_args}
    return meta | ({"pretrained": config.pretrained} if config.pretrained else {})


class TaskCache:
    """Tasks built once per suite and reused by every condition, so documents are not rebuilt per condition.

    A condition changes only the masked heads, never the documents: those depend on the task, its metadata and
    the tokenizer, which the metadata names (``pretrained``, ``tokenizer``, ``gguf_file``, ...). The key is all of
    them, plus the few-shot count, which lm-eval writes into the task object. Reusing lm-eval's task objects is
    safe because every evaluation rebuilds a task's requests from its documents and reseeds its few-shot sampler.
    """

    def __init__(self) -> None:
        self._built: dict[tuple, tuple] = {}

    def load(self, task: str, metadata: dict, num_fewshot: int | None = None) -> tuple:
        """(TaskManager, [Task or Group]) for ``task`` built with ``metadata``, built on first use only."""
        key = (task, num_fewshot, json.dumps(metadata, sort_keys=True, default=str))
        if key in self._built:
            logger.info("%s: reusing the documents built earlier in this suite", task)
        return self._build(key, task, metadata)[0]

    def leaves(self, task: str, metadata: dict, num_fewshot: int | None = None) -> list:
        """The leaf tasks (the ones with documents) of ``task``, from the same build as :meth:`load`."""
        key = (task, num_fewshot, json.dumps(metadata, sort_keys=True, default=str))
        return self._build(key, task, metadata)[1]

    def _build(self, key: tuple, task: str, metadata: dict) -> tuple:
        if key not in self._built:
            from lm_eval.tasks import TaskManager

            from rh_tasks.plugin.registration import task_configs_dir

            manager = TaskManager(include_defaults=False, include_path=[str(task_configs_dir())], metadata=metadata)
            loaded = manager.load([task])
            top = loaded["groups"].get(task) or loaded["tasks"].get(task)
            leaves = list(loaded["tasks"].values())
            self._built[key] = ((manager, [top] if top is not None else leaves), leaves)
        return self._built[key]
