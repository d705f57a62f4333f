"""A suite's conditions on a serving engine: each masked condition exported, then evaluated by an lm-eval backend.

Under ``phase: all`` every condition is a checkpoint (:mod:`model_wrappers.export`), so the engine the suite
names evaluates it as it would any model, with no hook of rh-eval's in the loop. ``hf`` (or another lm-eval
backend) loads it in this process. ``vllm`` runs in an environment of its own (:mod:`rh_tasks.engines`): its
server is started on the folder, and lm-eval's stock ``local-completions`` backend evaluates it over HTTP, with
the requests tokenized here by the folder's tokenizer, as ``hf`` tokenizes them. Exports go to
``exports/<condition>/`` of the suite's folder, vLLM's logs to ``engine-logs/``. The unmasked condition is
exported too, as hard links to the source's weights, so that its folder names the model as the masked ones do;
the report reads each run as the condition its folder records.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from model_wrappers.condition import Condition
from model_wrappers.export.record import ExportRecordError, read_export_record

from .config import SuiteConfig

logger = logging.getLogger(__name__)

VLLM = "vllm"  # served out of process, from its own environment
_CLIENT = "local-completions"


def served_folder(config: SuiteConfig, condition: Condition, exports: Path) -> tuple[Path, dict]:
    """The checkpoint folder the backend loads for ``condition``, and the condition's record for the suite."""
    folder = exports / condition.name
    record = _reusable(folder, condition)
    if record is None:
        record = _export(config, condition, folder)
    engine = {"engine": config.engine} | ({"engine_args": config.engine_args} if config.engine_args else {})
    return folder, {**record["rh_masking"], **engine, "export": record["export"]}


def check_engine(config: SuiteConfig) -> None:
    """Fail before any export when the engine cannot run: vLLM's environment is missing."""
    if config.engine == VLLM:
        from rh_tasks.engines.environment import find

        find()


@contextlib.contextmanager
def backend(config: SuiteConfig, folder: Path, logs: Path) -> Iterator:
    """The suite's engine on ``folder``, as an lm-eval model, for as long as the block runs."""
    if config.engine != VLLM:
        yield load_backend(config, folder)
        return
    from rh_tasks.engines.environment import find
    from rh_tasks.engines.server import serving

    with serving(find(), folder, config.engine_args, logs / f"{folder.name}.log") as served:
        yield _completions_client(config, folder, served)


def load_backend(config: SuiteConfig, folder: Path):
    """The suite's lm-eval backend on ``folder``, with the suite's model arguments (weights come from the folder)."""
    from lm_eval.api.registry import get_model

    try:
        backend = get_model(config.engine)
    except (KeyError, ValueError) as err:
        raise ValueError(f"engine={config.engine!r} is not an lm-eval backend here ({err}).") from None
    arguments = {key: value for key, value in config.model_args.items() if key != "gguf_file"}
    return backend.create_from_arg_obj(
        {**arguments, **config.engine_args, "pretrained": str(folder)},
        {"batch_size": config.batch_size, "device": config.device},
    )


def _completions_client(config: SuiteConfig, folder: Path, served):
    """lm-eval's ``local-completions`` on a running server. Requests are tokenized here, by the folder's tokenizer
    (as ``hf`` does), and log-likelihoods read from the server's echoed prompt log-probabilities."""
    from lm_eval.api.registry import get_model

    client = get_model(_CLIENT)
    arguments = {
        "model": served.model,
        "base_url": served.url,
        "tokenizer": str(folder),
        "tokenizer_backend": "huggingface",
        "tokenized_requests": True,
        "max_length": served.max_model_len,
        "num_concurrent": served.data_parallel_size,  # one request in flight per engine replica
        "batch_size": config.batch_size,
    }
    _check_parameters(client, arguments)
    return client.create_from_arg_obj(arguments)


def _check_parameters(cls, arguments: dict) -> None:
    """``local-completions`` takes ``**kwargs`` and would swallow a renamed argument; refuse that loudly."""
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    missing = sorted(set(arguments) - accepted)
    if missing:
        raise RuntimeError(
            f"lm-eval's {_CLIENT} backend no longer takes {missing}; this rh-eval supports lm-eval 0.4.13."
        )


def _reusable(folder: Path, condition: Condition) -> dict | None:
    """The record of an earlier export of ``condition`` at ``folder``; anything else there is cleared."""
    try:
        record = read_export_record(folder) if folder.is_dir() else None
    except ExportRecordError:
        record = None
    if record is not None and _same(Condition.from_record(record["rh_masking"]), condition):
        return record
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _same(recorded: Condition, requested: Condition) -> bool:
    """A resolved condition is the requested one if everything it asks for agrees (a default K is resolved)."""
    fields = ("kind", "k", "seed", "match", "unit", "mode", "phase")
    return all(getattr(recorded, f) == getattr(requested, f) for f in fields if getattr(requested, f) is not None)


def _export(config: SuiteConfig, condition: Condition, folder: Path) -> dict:
    from model_wrappers.export.export import export_masked
    from model_wrappers.export.source import masked_source

    logger.info("Exporting %s to %s", condition.label, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    arguments = {"pretrained": config.pretrained, **config.model_args}
    return export_masked(masked_source(arguments, device=config.device, condition=condition), folder)
