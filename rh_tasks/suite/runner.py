"""Runs every condition of a suite through lm-eval in-process, resumably, then writes the report.

Layout of the output folder::

    suite.json                      resolved config, its hash, library versions
    timing.json                     wall time of the last run, and where the shared prefill spent it
    conditions/<name>/              lm-eval's own results_*.json and samples_*.jsonl, plus condition.json
    report/report.{md,json,html}

A condition is written into a hidden ``.partial-<name>`` folder and renamed when complete, so an interrupted run
leaves nothing that looks finished; a rerun skips complete conditions and redoes the rest.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from model_wrappers.condition import MEMORY_GB, Condition
from model_wrappers.files import atomic_write_text, writable_folder
from rh_tasks.shared.versions import versions

from .config import SuiteConfig
from .tasks import TaskCache, task_metadata
from .terminal import suite_output

if TYPE_CHECKING:
    from rh_tasks.report import ReportFiles

    from .plan import TaskDesign

logger = logging.getLogger(__name__)


class SuiteStateError(RuntimeError):
    """The output folder holds a different experiment, or cannot be written."""


PACKAGES = ("rh-eval", "lm_eval", "torch", "transformers")  # whose versions a suite records


def _write_json(path: Path, content: dict) -> None:
    atomic_write_text(path, json.dumps(content, indent=2, default=str))


def _claim_suite_folder(config: SuiteConfig, out: Path, force: bool) -> None:
    """Refuse to mix two experiments in one folder unless forced."""
    writable_folder(out)
    state = out / "suite.json"
    if state.exists():
        previous = json.loads(state.read_text()).get("config_hash")
        if previous != config.digest():
            if not force:
                raise SuiteStateError(
                    f"{out} holds results of a different suite config (hash {previous}, this one {config.digest()}). "
                    "Use another output_dir, or pass --force to discard the old conditions."
                )
            logger.warning("Discarding the conditions of a different config in %s (--force)", out)
            shutil.rmtree(out / "conditions", ignore_errors=True)
    _write_json(state, {"config_hash": config.digest(), "config": asdict(config), "versions": versions(*PACKAGES)})


def _is_complete(folder: Path, config: SuiteConfig) -> bool:
    record = folder / "condition.json"
    return record.is_file() and json.loads(record.read_text()).get("config_hash") == config.digest()


def _run_condition(
    lm, config: SuiteConfig, condition: Condition, folder: Path, tasks: TaskCache, bar: tqdm, served=None
) -> None:
    """Evaluate every task under ``condition``. A ``served`` run is ``(checkpoint folder, rh_masking record)``: the
    results name the folder, which is how the report finds the condition the folder records."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    model_args, record = ({"pretrained": str(served[0])}, served[1]) if served else (None, None)
    partial = folder.with_name(f".partial-{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    for spec in config.tasks:
        bar.set_postfix_str(f"{condition.name}: {spec.task}")
        manager, built = tasks.load(spec.task, task_metadata(config) | spec.metadata, spec.num_fewshot)
        tracker = EvaluationTracker(output_path=str(partial))
        results = simple_evaluate(
            model=lm,
            tasks=built,
            task_manager=manager,
            limit=spec.limit,
            num_fewshot=spec.num_fewshot,
            log_samples=True,
            apply_chat_template=config.apply_chat_template,
            evaluation_tracker=tracker,
            model_args=model_args,
        )
        samples = results.pop("samples")
        results["config"]["engine"] = config.engine or "rh-masked"  # the backend's name alone may not tell it
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    _write_json(
        partial / "condition.json",
        {
            "condition": condition.name,
            "config_hash": config.digest(),
            "rh_masking": record or lm.get_model_info()["rh_masking"],
            "seconds": round(time.perf_counter() - start, 1),
            "versions": versions(*PACKAGES),
        },
    )
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(partial, folder)


@contextlib.contextmanager
def _environment_read_once():
    """lm-eval records the environment (``pip list``, git, the CPU) in every results file, about a second each;
    the conditions of one suite run share their environment, so it is read once and written into each."""
    from lm_eval import evaluator

    original = getattr(evaluator, "add_env_info", None)
    if original is None:  # a release that records it elsewhere: nothing to share
        yield
        return
    recorded: dict = {}

    def add_env_info(storage: dict) -> None:
        if not recorded:
            original(recorded)
        storage.update(copy.deepcopy(recorded))

    evaluator.add_env_info = add_env_info
    try:
        yield
    finally:
        evaluator.add_env_info = original


def warn_about_design(config: SuiteConfig, designs: list[TaskDesign]) -> None:
    """Say before any compute when a task's design cannot reach significance after Holm correction."""
    from .plan import check_design, describe

    for problem, sentence in describe(check_design(config, designs)):
        (logger.warning if problem else logger.info)("Design check: %s", sentence)


def run_suite(
    config: SuiteConfig,
    *,
    force: bool = False,
    write_report: bool = True,
    one_by_one: bool = False,
    memory_gb: float = MEMORY_GB,
    verbose: bool = False,
) -> Path:
    """Run the conditions that are not complete yet; return the output folder.

    By default the pending conditions are evaluated together (:meth:`RHMaskedLM.plan_conditions`): each prompt
    is prefilled once for all of them, and their rows are batched within ``memory_gb``. ``one_by_one`` computes
    every condition on its own, for comparison and debugging; the results are the same.

    One progress bar counts condition-items (conditions x each task's items) as they are computed. Unless
    ``verbose``, lm-eval's INFO lines are held back and each of its warnings shows once (:mod:`.terminal`).
    """
    out = Path(config.output_dir)
    _claim_suite_folder(config, out, force)
    conditions_dir = out / "conditions"
    pending = [c for c in config.conditions if not _is_complete(conditions_dir / c.name, config)]
    done = len(config.conditions) - len(pending)
    if done:
        logger.info("Resuming: %d of %d conditions are complete and match the config", done, len(config.conditions))
    if pending:
        with suite_output(verbose):
            timing = _run_pending(config, pending, conditions_dir, one_by_one=one_by_one, memory_gb=memory_gb)
        _write_json(out / "timing.json", timing)
    if write_report:
        write_suite_report(out)
    return out


def write_suite_report(out: Path) -> ReportFiles:
    """The report of a suite's conditions, in ``report/`` of its output folder."""
    from rh_tasks.report import write_report

    return write_report([str(out / "conditions")], out / "report")


def _run_pending(
    config: SuiteConfig, pending: list[Condition], conditions_dir: Path, *, one_by_one: bool, memory_gb: float
) -> dict:
    """Evaluate the pending conditions under one progress bar; return their timing."""
    from model_wrappers.lm.rh_masked import RHMaskedLM

    from .plan import task_designs

    tasks = TaskCache()
    designs = task_designs(config, tasks)
    warn_about_design(config, designs)
    if config.engine is not None:
        return _run_served(config, pending, conditions_dir, tasks, _items(designs))
    lm = RHMaskedLM(
        pretrained=config.pretrained, batch_size=config.batch_size, device=config.device, **config.model_args
    )
    if one_by_one:
        for condition in pending:  # every head set is resolved, and so validated, before any evaluation
            lm.remask(condition)
    else:
        lm.plan_conditions({condition.name: condition for condition in pending}, memory_gb)
    start = time.perf_counter()
    total = len(pending) * _items(designs)
    with tqdm(total=total, desc=f"{len(pending)} conditions", unit="item", dynamic_ncols=True) as bar:
        with lm.progress(bar.update), _environment_read_once():
            for condition in pending:
                if one_by_one:
                    lm.remask(condition)
                else:
                    lm.use_condition(condition.name)
                _run_condition(lm, config, condition, conditions_dir / condition.name, tasks, bar)
    timing = {"conditions": len(pending), "one_by_one": one_by_one, "seconds": time.perf_counter() - start}
    if not one_by_one:
        timing["shared_prefill"] = asdict(lm.shared_timing())
    return timing


def _items(designs: list[TaskDesign]) -> int:
    """Documents each condition evaluates (a derived task is evaluated by none)."""
    return sum(design.items for design in designs if not design.derived)


def _run_served(config: SuiteConfig, pending: list[Condition], conditions_dir: Path, tasks: TaskCache, items: int):
    """Evaluate each pending condition on the suite's engine: exported, then loaded by the named backend."""
    from .served import backend, check_engine, served_folder

    check_engine(config)
    start = time.perf_counter()
    exports, logs = conditions_dir.parent / "exports", conditions_dir.parent / "engine-logs"
    with tqdm(total=len(pending) * items, desc=f"{len(pending)} conditions", unit="item", dynamic_ncols=True) as bar:
        with _environment_read_once():
            for condition in pending:
                folder, record = served_folder(config, condition, exports)
                with backend(config, folder, logs) as lm:
                    _run_condition(lm, config, condition, conditions_dir / condition.name, tasks, bar, (folder, record))
                bar.update(items)
    return {"conditions": len(pending), "engine": config.engine, "seconds": time.perf_counter() - start}
