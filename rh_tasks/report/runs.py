"""Reading lm-eval output folders: which model ran, under which masking condition, and every per-item score.

Each ``results_<date>.json`` found under a folder (at any depth) is one run; its per-item rows are the
``samples_<task>_<date>.jsonl`` files beside it, written by ``lm_eval ... --output_path DIR --log_samples``.
A run without the ``rh_masking`` entry in its config (e.g. a plain ``hf`` run) is the unmasked condition, unless
it loaded a folder written by ``rh-eval export`` (see :mod:`.exported`).

Loading only reads what the files record. Judging it is left to later steps of their own: whether a run can
be trusted at all (:func:`refuse_untrusted`), and what each response did (:mod:`.failures`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from model_wrappers.condition import KINDS, Condition
from model_wrappers.export.record import ExportRecordError
from model_wrappers.lm.token_record import RECORD_FIELD, RESULTS_KEY
from rh_tasks.shared.samples import SampleFields

from .exported import exported_masking

logger = logging.getLogger(__name__)

_DATE = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?"
_RESULTS_FILE = re.compile(rf"^(?P<stem>.+)_(?P<date>{_DATE})\.json$")
_SAMPLES_FILE = re.compile(rf"^samples_(?P<task>.+)_(?P<date>{_DATE})\.jsonl$")
_RESULTS_KEYS = {"results", "versions", "config"}
_MODEL_ARG_KEYS = ("pretrained", "model", "path", "engine", "peft", "delta")  # lm-eval's own naming order


class ReportInputError(ValueError):
    """The run folders cannot be read or compared; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Item:
    """One (document, filter) row of a samples file, reduced to what the report needs."""

    doc_id: int
    filter: str
    doc_hash: str
    prompt_hash: str
    scores: dict[str, float]
    fields: SampleFields  # what the task wrote into the document for the report
    response: str  # the filtered response ("" for a non-text one)
    prompt: str  # the first request's context; rows with the same prompt_hash share one string
    outcome: str | None = None  # set by failures.classify_runs: one of failures.OUTCOMES, or None
    doc: dict | None = None  # kept only for a document that asked for a token record
    requests: tuple[tuple[str, str, float], ...] = ()  # and its (context, continuation, log-likelihood) requests


@dataclass
class TaskRun:
    name: str
    version: object
    n_shot: object
    metrics: list[str]  # numeric per-item metrics, in the task's order
    items: dict[tuple[int, str], Item]
    source: Path
    lower_is_better: frozenset[str] = frozenset()  # metrics the task declares lower-is-better (losses, NLL)


@dataclass(frozen=True)
class Audit:
    """The masking audit a run records in ``config.rh_masking.audit``: did every masked layer's hook run?"""

    clean: bool
    problems: tuple[str, ...]


@dataclass
class Run:
    path: Path
    date: str
    model: str
    weights_sha256: str | None
    hub_sha: str | None
    condition: Condition
    audit: Audit | None  # None: the run recorded no audit
    head_scores: str | None
    tasks: dict[str, TaskRun]
    groups: dict[str, list[str]] = field(default_factory=dict)
    kv_groups: tuple[int, int] | None = None  # a windowed run's (kept, all) KV groups of the model
    engine: str = ""  # what computed it: rh-masked's hooks, or the backend (hf, vllm) that ran an exported folder
    token_logprobs: dict = field(default_factory=dict)  # config.token_logprobs: task -> doc_id -> requests


def load_runs(folders: list[str | Path]) -> list[Run]:
    """Every run under the given folders; raises ReportInputError for a folder with nothing usable."""
    if not folders:
        raise ReportInputError(
            "No run folder given. Pass the folders written by lm_eval --output_path ... --log_samples."
        )
    prompts: dict[str, str] = {}  # prompt_hash -> prompt, so conditions share one copy of each long prompt
    runs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ReportInputError(f"{folder} is not a folder. Pass the folder given to lm_eval --output_path.")
        found = [_load_run(path, prompts) for path in _results_files(folder)]
        if not found:
            raise ReportInputError(
                f"{folder} holds no lm-eval results file (results_<date>.json). "
                "Pass the folder given to lm_eval --output_path, after the run has finished."
            )
        runs.extend(found)
    return runs


def _results_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*.json")):
        if _RESULTS_FILE.match(path.name):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ReportInputError(f"Cannot read {path}: {err}. Remove it or rerun that condition.") from err
            if isinstance(data, dict) and _RESULTS_KEYS <= data.keys():
                files.append(path)
    return files


def _load_run(path: Path, prompts: dict[str, str]) -> Run:
    data = json.loads(path.read_text(encoding="utf-8"))
    date = _RESULTS_FILE.match(path.name)["date"]
    config = data["config"] if isinstance(data["config"], dict) else {}
    try:
        masking = config.get("rh_masking") or exported_masking(path, config.get("model_args"), data.get("date")) or {}
    except ExportRecordError as err:
        raise ReportInputError(str(err)) from None
    model = (
        masking.get("model") or _model_name(config.get("model_args")) or data.get("model_name") or config.get("model")
    )
    if not model:
        raise ReportInputError(f"{path} does not say which model ran (no model_args pretrained=...).")
    tasks = {}
    for samples in sorted(path.parent.glob(f"samples_*_{date}.jsonl")):
        match = _SAMPLES_FILE.match(samples.name)
        if match and match["date"] == date:
            name = match["task"]
            tasks[name] = _load_task(
                samples, name, data["versions"].get(name), data.get("n-shot", {}).get(name), prompts
            )
            declared = (data.get("higher_is_better") or {}).get(name) or {}
            tasks[name].lower_is_better = frozenset(m for m, higher in declared.items() if higher is False)
            tasks[name].metrics.sort(key=_declared_order(data.get("configs", {}).get(name, {})))
    if not tasks:
        raise ReportInputError(
            f"{path} has no per-item samples (samples_<task>_{date}.jsonl) beside it. "
            "Rerun that condition with lm_eval --log_samples."
        )
    return Run(
        path=path,
        date=date,
        model=str(model).rstrip("/"),
        weights_sha256=masking.get("model_sha256") or None,
        hub_sha=config.get("model_sha") or None,
        condition=Condition.from_record(masking),
        audit=_audit(masking.get("audit")),
        head_scores=_shown(masking.get("head_scores")),
        tasks=tasks,
        groups={g: list(s) for g, s in (data.get("group_subtasks") or {}).items() if s},
        kv_groups=_kv_groups(masking),
        token_logprobs=config.get(RESULTS_KEY) if isinstance(config.get(RESULTS_KEY), dict) else {},
        engine=_engine(config),
    )


def _engine(config: dict) -> str:
    """A suite records its engine; a stock ``lm_eval`` run names its backend (``--model``)."""
    recorded = config.get("engine") or ("rh-masked" if config.get("rh_masking") else config.get("model"))
    return str(recorded or "unknown")


def _kv_groups(masking: dict) -> tuple[int, int] | None:
    kept, every = masking.get("kept_kv_groups"), masking.get("kv_groups")
    return None if kept is None or every is None else (int(kept), int(every))


def _shown(path: str | None) -> str | None:
    """A recorded file path relative to the working directory when it lies inside it, so a report written in a
    project folder names the project's files, not the machine's layout."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def _model_name(model_args) -> str | None:
    if isinstance(model_args, str):
        model_args = dict(part.split("=", 1) for part in model_args.split(",") if "=" in part)
    if isinstance(model_args, dict):
        return next((str(model_args[k]) for k in _MODEL_ARG_KEYS if model_args.get(k)), None)
    return None


def _audit(record) -> Audit | None:
    if not isinstance(record, dict):
        return None
    return Audit(clean=record.get("clean") is True, problems=tuple(map(str, record.get("problems") or ())))


def refuse_untrusted(runs: list[Run]) -> None:
    """Raise ReportInputError for the first run whose condition is unknown or whose masking cannot be trusted."""
    for run in runs:
        kind = run.condition.kind
        if kind not in KINDS:
            raise ReportInputError(f"{run.path}: rh_masking.heads_kind={kind!r} is not one of {', '.join(KINDS)}.")
        if kind == "none" and run.condition.window is None:
            continue
        if run.audit is None or not run.audit.clean:
            why = "; ".join(run.audit.problems or ["it is not clean"]) if run.audit else "it has none"
            raise ReportInputError(
                f"{run.path}: a masked condition must carry a clean masking audit (config.rh_masking.audit), but "
                f"{why}. Its heads may not have been masked: rerun that condition with this rh-eval."
            )
        if kind in ("retrieval", "random") and run.condition.k is None:
            raise ReportInputError(f"{run.path}: a {kind} condition must record k in rh_masking.")
        if run.condition.window is not None and run.kv_groups is None:
            raise ReportInputError(
                f"{run.path}: a windowed condition must record kept_kv_groups and kv_groups in rh_masking, the "
                "memory it would keep. Rerun that condition with this rh-eval."
            )


def _load_task(path: Path, name: str, version, n_shot, prompts: dict[str, str]) -> TaskRun:
    items: dict[tuple[int, str], Item] = {}
    metrics: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (int(row["doc_id"]), str(row.get("filter", "none")))
                doc_hash, prompt_hash = row["doc_hash"], row["prompt_hash"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ReportInputError(
                    f"{path}:{number} is not an lm-eval sample row ({err!r}); the file may be truncated. "
                    "Rerun that condition."
                ) from err
            if key in items:
                raise ReportInputError(
                    f"{path} has two rows for doc_id {key[0]} with filter {key[1]!r}; rerun that condition."
                )
            scores = _scores(row)
            metrics.extend(m for m in scores if m not in metrics)
            recorded = isinstance(row.get("doc"), dict) and bool(row["doc"].get(RECORD_FIELD))
            items[key] = Item(
                doc_id=key[0],
                filter=key[1],
                doc_hash=doc_hash,
                prompt_hash=prompt_hash,
                scores=scores,
                fields=SampleFields.read(row.get("doc")),
                response=_response(row),
                prompt=prompts.setdefault(prompt_hash, _prompt(row)),
                doc=row["doc"] if recorded else None,
                requests=_loglikelihood_requests(row, path, number) if recorded else (),
            )
    if not items:
        raise ReportInputError(f"{path} is empty; rerun that condition with --log_samples.")
    return TaskRun(name=name, version=version, n_shot=n_shot, metrics=metrics, items=items, source=path)


def _declared_order(config: dict):
    """Sort key putting metrics in the order the task's ``metric_list`` declares; its first is the headline."""
    declared = [m.get("metric") for m in config.get("metric_list") or [] if isinstance(m, dict)]
    return lambda name: declared.index(name) if name in declared else len(declared)


def _scores(row: dict) -> dict[str, float]:
    """Per-item numeric metrics; corpus-level ones (stored as tuples for later aggregation) are skipped."""
    names = row.get("metrics") or []
    scores = {}
    for name in names:
        value = row.get(name)
        if isinstance(value, (bool, int, float)) and math.isfinite(value):
            scores[name] = float(value)
    return scores


def _prompt(row: dict) -> str:
    arguments = row.get("arguments") or {}
    first = arguments.get("gen_args_0", {}) if isinstance(arguments, dict) else {}
    prompt = first.get("arg_0", "") if isinstance(first, dict) else ""
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def _response(row: dict) -> str:
    response = row.get("filtered_resps")
    while isinstance(response, list) and response:
        response = response[0]
    return response if isinstance(response, str) else ""


def _loglikelihood_requests(row: dict, path: Path, number: int) -> tuple[tuple[str, str, float], ...]:
    """A log-likelihood row's requests as (context, continuation, log-likelihood), in request order."""
    arguments, responses = row.get("arguments") or {}, row.get("resps") or []
    try:
        return tuple(
            (arguments[f"gen_args_{i}"]["arg_0"], arguments[f"gen_args_{i}"]["arg_1"], float(response[0][0]))
            for i, response in enumerate(responses)
        )
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ReportInputError(
            f"{path}:{number} asks for a token record but its requests cannot be read ({err!r}). Rerun that condition."
        ) from err
