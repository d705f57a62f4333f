"""The suite file: one YAML that describes a whole causal experiment, validated strictly.

Unknown keys are errors, because a misspelt key that is silently ignored produces a different experiment from
the one the user wrote down.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from model_wrappers.condition import ARGUMENTS, SINK, Condition, ConditionError, check_choice


class SuiteConfigError(ValueError):
    """The suite file is malformed; the message names the key and the fix."""


@dataclass(frozen=True)
class TaskSpec:
    task: str
    limit: int | float | None = None
    metadata: dict = field(default_factory=dict)
    num_fewshot: int | None = None


@dataclass(frozen=True)
class SuiteConfig:
    tasks: tuple[TaskSpec, ...]
    conditions: tuple[Condition, ...]
    pretrained: str | None = None
    model_args: dict = field(default_factory=dict)
    head_scores: str | None = None
    mode: str = "uniform"
    phase: str = "all"
    unit: str = "head"
    match: str | None = None
    apply_chat_template: bool = True
    output_dir: str = "runs/suite"
    batch_size: int = 1
    device: str = "cpu"
    engine: str | None = None  # an lm-eval backend that runs exported checkpoints; None: rh-masked's hooks
    engine_args: dict = field(default_factory=dict)  # vllm: flags of vllm serve; other engines: backend arguments

    def digest(self) -> str:
        """Hash of everything that changes results; the output folder does not."""
        content = {key: value for key, value in asdict(self).items() if key != "output_dir"}
        if self.engine is None:  # suites written before engines existed keep their hash
            del content["engine"]
        if not self.engine_args:  # and so do engine suites written before engine arguments existed
            del content["engine_args"]
        # masking conditions hash as they always have, so that suites written earlier still resume; windows add theirs
        content["conditions"] = [
            {"heads": c.kind, "k": c.k, "seed": c.seed}
            | ({} if c.window is None else {"window": c.window, "sink": c.sink, "match": c.match})
            for c in self.conditions
        ]
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


_TOP_KEYS = {
    "model",
    "tasks",
    "masking",
    "conditions",
    "apply_chat_template",
    "output_dir",
    "batch_size",
    "device",
    "engine",
    "engine_args",
}
_MODEL_KEYS = {"pretrained", "args", "head_scores"}
_TASK_KEYS = {"task", "limit", "metadata", "num_fewshot"}
_MASKING_KEYS = {"mode", "phase", "unit"}
_CONDITION_KEYS = {"retrieval", "random", "windows"}
_RANDOM_KEYS = {"k", "seeds", "match"}
_WINDOW_KEYS = {"window", "sink", "keep", "k", "seeds", "match"}
_KEEP = ("none", "retrieval", "random")


def _check_keys(where: str, mapping, allowed: set[str]) -> dict:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise SuiteConfigError(f"{where} must be a mapping, got {type(mapping).__name__}.")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise SuiteConfigError(f"Unknown key(s) {unknown} in {where}; allowed: {', '.join(sorted(allowed))}.")
    return mapping


def _positive_ints(where: str, values) -> list[int]:
    values = [values] if isinstance(values, int) else values
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    ):
        raise SuiteConfigError(f"{where} must be a positive integer or a list of them, got {values!r}.")
    return values


def _check_choice(where: str, name: str, value) -> None:
    try:
        check_choice(name, value)
    except ConditionError as err:
        raise SuiteConfigError(f"{where}: {err}") from None


def _check_engine(source: str, config: SuiteConfig) -> None:
    if not isinstance(config.engine_args, dict):
        raise SuiteConfigError(f"{source}: engine_args must be a mapping, e.g. {{data_parallel_size: 2}}.")
    if config.engine is None:
        if config.engine_args:
            raise SuiteConfigError(f"{source}: engine_args needs an engine; set engine (vllm, hf) or drop them.")
        return
    if not isinstance(config.engine, str) or not config.engine.strip() or config.engine == "rh-masked":
        raise SuiteConfigError(
            f"{source}: engine={config.engine!r} must name an lm-eval backend that loads a checkpoint folder, such "
            "as hf or vllm; leave it out to mask with rh-masked's hooks."
        )
    if config.phase != "all":
        raise SuiteConfigError(
            f"{source}: engine={config.engine} runs exported checkpoints, and phase={config.phase} cannot be "
            "written into weights; use masking.phase: all, or leave engine out."
        )
    if any(condition.window is not None for condition in config.conditions):
        raise SuiteConfigError(
            f"{source}: engine={config.engine} runs exported checkpoints, and a window restricts which positions a "
            "head reads, which no weight edit can do; leave engine out to run conditions.windows with rh-masked."
        )


def parse_suite(data: dict, source: str = "suite") -> SuiteConfig:
    data = _check_keys(source, data, _TOP_KEYS)
    model = _check_keys(f"{source}: model", data.get("model"), _MODEL_KEYS)
    masking = _check_keys(f"{source}: masking", data.get("masking"), _MASKING_KEYS)
    conditions = _check_keys(f"{source}: conditions", data.get("conditions"), _CONDITION_KEYS)

    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise SuiteConfigError(
            f"{source}: tasks must be a non-empty list of {{task: NAME, limit: N, metadata: {{...}}}}."
        )
    tasks = []
    for i, entry in enumerate(raw_tasks):
        entry = {"task": entry} if isinstance(entry, str) else entry
        entry = _check_keys(f"{source}: tasks[{i}]", entry, _TASK_KEYS)
        if not isinstance(entry.get("task"), str):
            raise SuiteConfigError(f"{source}: tasks[{i}] needs a task name.")
        if not isinstance(entry.get("metadata", {}), dict):
            raise SuiteConfigError(f"{source}: tasks[{i}].metadata must be a mapping.")
        tasks.append(TaskSpec(**entry))

    if "windows" in conditions and {"retrieval", "random"} & set(conditions):
        raise SuiteConfigError(
            f"{source}: conditions.windows cannot share a suite with masked conditions (retrieval, random): one run "
            "evaluates its conditions together, and masks and windows cannot share a batch. Write two suites."
        )
    random_spec = _check_keys(f"{source}: conditions.random", conditions.get("random"), _RANDOM_KEYS)
    retrieval_ks = (
        _positive_ints(f"{source}: conditions.retrieval", conditions["retrieval"]) if "retrieval" in conditions else []
    )
    random_ks, seeds = [], []
    if random_spec:
        random_ks = _positive_ints(f"{source}: conditions.random.k", random_spec.get("k"))
        seeds = _seeds(f"{source}: conditions.random.seeds", random_spec.get("seeds", [0]))

    config = SuiteConfig(
        tasks=tuple(tasks),
        conditions=(),
        pretrained=model.get("pretrained"),
        model_args=dict(model.get("args") or {}),
        head_scores=model.get("head_scores"),
        mode=masking.get("mode", "uniform"),
        phase=masking.get("phase", "all"),
        unit=masking.get("unit", "head"),
        match=random_spec.get("match") if random_spec else None,
        apply_chat_template=data.get("apply_chat_template", True),
        output_dir=str(data.get("output_dir", "runs/suite")),
        batch_size=data.get("batch_size", 1),
        device=data.get("device", "cpu"),
        engine=data.get("engine"),
        engine_args=data.get("engine_args") or {},
    )
    for where, name in (("masking.mode", "mode"), ("masking.phase", "phase"), ("masking.unit", "unit")):
        _check_choice(f"{source}: {where}", name, getattr(config, name))
    _check_choice(f"{source}: conditions.random.match", "match", config.match)
    shared = dict(head_scores=config.head_scores, mode=config.mode, phase=config.phase, unit=config.unit)
    expanded = [Condition()]
    expanded += [Condition.parse(heads="retrieval", k=k, **shared) for k in retrieval_ks]
    expanded += [
        Condition.parse(heads="random", k=k, seed=seed, match=config.match, **shared)
        for k in random_ks
        for seed in seeds
    ]
    if "windows" in conditions:
        expanded += _windows(f"{source}: conditions.windows", conditions["windows"], config)
    config = replace(config, conditions=tuple(expanded))
    _check_engine(source, config)
    if not isinstance(config.apply_chat_template, bool):
        raise SuiteConfigError(f"{source}: apply_chat_template must be true or false.")
    _positive_ints(f"{source}: batch_size", config.batch_size)
    reserved = {*ARGUMENTS, "pretrained"} & set(config.model_args)
    if reserved:
        raise SuiteConfigError(
            f"{source}: model.args may not set {sorted(reserved)}; the suite sets them per condition."
        )
    return config


def _seeds(where: str, seeds) -> list[int]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SuiteConfigError(f"{where} must be a list of integers, got {seeds!r}.")
    return seeds


def _windows(where: str, spec, config: SuiteConfig) -> list[Condition]:
    """``conditions.windows``: every window with every kept set, as ``window=W,keep=...`` conditions.

    ``keep: none`` windows every head; ``retrieval`` and ``random`` keep K heads (or KV groups under
    ``masking.unit: kv_group``) at each ``k``, random once per seed.
    """
    spec = _check_keys(where, spec, _WINDOW_KEYS)
    if config.mode != "uniform":
        raise SuiteConfigError(f"{where}: masking.mode={config.mode} is meaningless for windows; drop it.")
    windows = _positive_ints(f"{where}.window", spec.get("window"))
    sink = spec.get("sink", SINK)
    if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
        raise SuiteConfigError(
            f"{where}.sink must be one integer >= 0 (first tokens every window keeps), got {sink!r}."
        )
    keep = spec.get("keep", ["none"])
    keep = [keep] if isinstance(keep, str) else keep
    if not isinstance(keep, list) or not keep or not set(keep) <= set(_KEEP) or len(set(keep)) < len(keep):
        raise SuiteConfigError(f"{where}.keep must list some of {', '.join(_KEEP)} once each, got {keep!r}.")
    chosen = [kind for kind in keep if kind != "none"]
    ks = _positive_ints(f"{where}.k", spec.get("k")) if chosen or "k" in spec else []
    if not chosen and ks:
        raise SuiteConfigError(
            f"{where}.k is meaningless with keep: [none]; keep retrieval or random heads, or drop k."
        )
    if ("seeds" in spec or "match" in spec) and "random" not in keep:
        raise SuiteConfigError(f"{where}: seeds and match apply only to keep: random.")
    seeds = _seeds(f"{where}.seeds", spec.get("seeds", [0]))
    match = spec.get("match")
    _check_choice(f"{where}.match", "match", match)
    shared = dict(head_scores=config.head_scores, phase=config.phase, unit=config.unit, sink=sink)
    expanded = []
    for window in windows:
        expanded += [Condition.parse(window=window, **shared)] if "none" in keep else []
        for k in ks:
            expanded += [Condition.parse(window=window, keep="retrieval", k=k, **shared)] if "retrieval" in keep else []
            expanded += [
                Condition.parse(window=window, keep="random", k=k, seed=seed, match=match, **shared)
                for seed in (seeds if "random" in keep else [])
            ]
    return expanded


def load_suite(path: str | Path) -> SuiteConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SuiteConfigError(f"Cannot read suite file {path}: {err.strerror}.") from err
    except yaml.YAMLError as err:
        raise SuiteConfigError(f"{path} is not valid YAML: {err}") from err
    return parse_suite(data, source=str(path))
