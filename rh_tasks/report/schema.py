"""The report's data model: everything report.json holds, as dataclasses.

:mod:`.analysis` builds a :class:`Report`, :mod:`.narrative` and :mod:`.render` read it, and :func:`to_json`
is the one place it becomes plain JSON. Conditions stay :class:`Condition` objects up to that edge, so no
step ever reads a kind, K or seed back out of a label.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from model_wrappers.condition import Condition

from . import stats
from .pairing import UNMASKED
from .runs import Run
from .stats import PairedResult, SetRank

SCHEMA = "rh-eval-report/5"  # 5: the family by design, answers over every K and window, runs[].engine


@dataclass(frozen=True)
class Settings:
    """The choices of whoever runs the report; they change the numbers, so report.json records them."""

    confidence: float = stats.CONFIDENCE
    n_resamples: int = stats.N_RESAMPLES
    seed: int = 0
    headline_k: int | None = None  # the leaderboard's K; default: the most random seeds (smallest K on ties)


@dataclass(frozen=True)
class Methods:
    """How every number is computed; fixed by rh-eval and stated in every report."""

    alpha: float = stats.ALPHA
    power: float = stats.POWER
    min_seeds: int = stats.MIN_SEEDS
    intervals: str = (
        "t intervals on the test's standard error: clustered (CR2) with Bell-McCaffrey degrees of freedom (G - 1 "
        "for equal clusters) for one condition against another; for pooled random seeds (at least "
        f"{stats.MIN_SEEDS}) and contrasts, the two-way standard error between seeds plus between clusters, with "
        "the fewer of S - 1 and the clusters' degrees of freedom; for scores in [0, 1] the variance gains "
        "(1 / (G + 2))^2 (Agresti & Min's pseudo-counts) and the interval stays within [-1, 1]"
    )
    tests: str = (
        "one condition against another: exact McNemar when every cluster holds one 0/1 item, else sign-flip "
        "on cluster sums (exact by enumeration or convolution, else Monte Carlo), or the interval's own t test "
        "when that is larger, so that every significant row's interval excludes 0; pooled random seeds and "
        "contrasts: the two-way t test, valid when both the head sets and the contexts are samples; two-sided. "
        "Beside each contrast: the retrieval set's rank among the random sets, with the exact one-sided rank "
        "p-value (1 + sets at least as damaging) / (S + 1)"
    )
    standard_error: str = "CRV1 clustered by shared context where the task records one (Miller 2024)"
    mde: str = "t quantiles with G - 1 degrees of freedom on the clustered standard error"
    family: str = (
        "the questions the design declares, per headline task (its primary metric, each filter) and setting (K, "
        "window, unit, mode, phase): the contrast Δ(retrieval) − Δ(random), and the controls against the unmasked "
        "run (the pooled random control, a window that keeps no head whole); a retrieval or listed set with no "
        "random control at its setting is tested against the unmasked run instead. Holm controls the family-wise "
        "error over them and Benjamini–Hochberg is given alongside. Every other comparison (a retrieval set "
        "against none where its contrast answers, each random seed alone, other metrics, exploratory tasks) is "
        "exploratory, marked †, and has no corrected p-value"
    )
    answers: str = (
        "each headline task is answered at every K (and window) the design ran, by its contrast (or, with no "
        "random control, the retrieval set against none): an effect shows at a K when it is significant after "
        "Holm correction. With one K the answer is that K's; with several it names the Ks where masking lowers "
        "or raises the score, as 'from K = k on' when they are the largest, 'up to K = k' when they are the "
        "smallest, the Ks where no effect shows (the interval includes 0) or the effect is not significant after "
        "Holm correction, and every K's estimate, interval and Holm p. The forest plot draws the same rows, "
        "filled where an effect shows"
    )


@dataclass(frozen=True)
class Arm:
    """Something compared against a reference on the same items: a condition, a pool of seeds, a contrast."""

    label: str
    kind: str  # retrieval | random | random_seed | explicit (a fixed set; every head windowed) | contrast
    k: int | None
    members: tuple[Condition, ...]  # averaged per item
    reference: tuple[Condition, ...] = (UNMASKED,)  # averaged per item, subtracted from members
    reference_label: str = "none"
    in_family: bool = True
    series: str = ""  # retrieval and random: the label without K, one line of a K sweep
    variants: int = 0  # how many of its conditions have a setting other than the default unit, mode and phase
    layer_matched: bool = False

    @property
    def sampled_sets(self) -> bool:
        """Pooled random seeds (and contrasts against them) are a sample of head sets, not fixed conditions."""
        return self.kind in ("random", "contrast")


@dataclass
class Comparison:
    """One arm against its reference, for one task, filter and metric."""

    task: str
    filter: str
    metric: str
    arm: Arm
    result: PairedResult
    in_family: bool  # in the multiple-testing family that Holm and Benjamini-Hochberg correct
    null: str = ""  # the null hypothesis of its test, in words
    rank: SetRank | None = None  # contrasts: the retrieval set among the random sets
    headline: bool = False  # a headline task's primary metric, pooled: what the answers, leaderboard and plots read
    # Set once every model's comparisons are known (the family spans models):
    p_holm: float | None = None
    p_bh: float | None = None
    min_attainable_p_holm: float | None = None


@dataclass
class FilterSummary:
    """One filter of a task: its design (items, clusters), unmasked score and minimum detectable effect."""

    n: int
    n_clusters: int
    unit: str  # item | cluster
    min_attainable_p: float
    baseline: float
    mde: float | None  # None when no effect of any size is detectable
    mde_basis: str
    min_attainable_p_holm: float | None = None  # set with the family's Holm correction


@dataclass(frozen=True)
class TaskSummary:
    task: str
    subtasks: list[str]
    version: object
    headline: bool
    metrics: list[str]
    primary_metric: str
    bounded: bool  # every score in [0, 1]: shown as points x100
    long_context: bool
    dropped_items: int
    filters: dict[str, FilterSummary]
    higher_is_better: bool = True  # False for a loss such as NLL, where damage raises the value


@dataclass(frozen=True)
class SweepPoint:
    """One K of one retrieval or pooled-random series, as the K-sweep figure draws it."""

    task: str
    filter: str
    metric: str
    kind: str
    k: int | None
    delta: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int
    n_seeds: int | None
    unit: str
    conditional: bool
    p_holm: float | None
    series: str


@dataclass(frozen=True)
class HeatmapPanel:
    condition: str  # the label of a condition or pooled random control
    values: list[list[float | None]]  # [depths][lengths]


@dataclass(frozen=True)
class Heatmap:
    task: str
    metric: str
    filter: str
    scale: int  # 100 for [0, 1] scores shown as points
    lengths: list[float]
    depths: list[float]
    panels: list[HeatmapPanel]


@dataclass(frozen=True)
class FailurePanel:
    condition: str
    n: int
    n_seeds: int | None
    counts: dict[str, int]  # failures.OUTCOMES -> responses


@dataclass(frozen=True)
class FailureBreakdown:
    task: str
    filter: str
    panels: list[FailurePanel]


@dataclass(frozen=True)
class HeadMap:
    head_scores: str
    k: int | None
    masked: list[Condition]  # the retrieval and random conditions at the headline K
    means: list[list[float]] | None  # [layers][heads]; None when the file has no score per query head


@dataclass(frozen=True)
class Estimate:
    """One comparison's Δ, interval and Holm p, as the forest plot draws it."""

    condition: str
    reference: str
    delta: float
    ci_low: float | None
    ci_high: float | None
    p_holm: float | None


@dataclass(frozen=True)
class ForestRow:
    """One headline task of one model at one K (and window) of its design: the answer to "does it depend on
    retrieval heads?" there.

    ``effect`` is the causal contrast retrieval − random, or retrieval against none when the suite has no random
    control at that K (``label`` says so).
    """

    model: str
    task: str
    filter: str
    metric: str
    k: int | None
    label: str
    bounded: bool
    baseline: float  # the unmasked score
    effect: Estimate
    retrieval: Estimate | None
    random: Estimate | None
    significant: bool  # effect's Holm p below alpha
    higher_is_better: bool = True  # False for a loss (NLL): drawn on an axis of its own
    window: int | None = None  # a windowed sweep's window, beside K


@dataclass(frozen=True)
class MemoryPoint:
    """A windowed condition (a pool of random seeds, or a contrast) of one task: the cache it would keep, its Δ."""

    task: str
    filter: str
    metric: str
    keep: str  # retrieval | random | none | explicit | contrast (retrieval kept − random kept)
    label: str
    window: int
    sink: int
    k: int | None
    kept_kv_groups: float  # mean over the arm's conditions (a contrast: its retrieval set's)
    kv_groups: int  # the model's
    kept_fraction: float  # of the full KV cache, KV groups x positions, averaged over the items' lengths
    mean_length: float  # the items' mean context length, in tokens
    equal_memory: bool  # every condition of the arm (and, for a contrast, its reference) keeps as many KV groups
    baseline: float  # the unmasked score
    comparison: Comparison


@dataclass
class ModelReport:
    model: str
    runs: list[Path]
    conditions: list[Condition]
    headline_k: int | None
    tasks: list[TaskSummary]
    comparisons: list[Comparison]
    k_sweep: list[SweepPoint]
    heatmaps: list[Heatmap]
    failures: list[FailureBreakdown]
    head_map: HeadMap | None
    statements: list[str] = field(default_factory=list)  # written once the family's corrections are known
    answers: list[str] = field(default_factory=list)  # one per headline task, over every K; written with them
    forest: list[ForestRow] = field(default_factory=list)  # set with the statements
    skipped_figures: list[str] = field(default_factory=list)  # figures the design leaves nothing to show in
    memory: list[MemoryPoint] = field(default_factory=list)  # windowed conditions' kept share of the KV cache


@dataclass(frozen=True)
class CrossModelTask:
    metric: str
    filter: str
    baseline: float
    long_context: bool
    bounded: bool
    higher_is_better: bool
    retrieval: Comparison | None
    random: Comparison | None
    contrast: Comparison | None


@dataclass(frozen=True)
class CrossModelRow:
    model: str
    headline_k: int | None
    tasks: dict[str, CrossModelTask]
    dependence: float | None  # the mean causal contrast signed as damage (minus it for scores, as it is for losses)
    dependence_basis: str
    rank: int


@dataclass(frozen=True)
class Report:
    settings: Settings
    methods: Methods
    family_size: int
    runs: list[Run]
    models: list[ModelReport]
    cross_model: list[CrossModelRow]


# ---- the JSON edge ------------------------------------------------------------------------------------------

_BRIEF = ("delta", "ci_low", "ci_high", "n", "n_clusters", "n_seeds", "unit", "conditional")


def to_json(report: Report) -> dict:
    """report.json: plain lists, dicts, strings and numbers; undefined statistics (NaN) become null."""
    return _plain(
        {
            "schema": SCHEMA,
            "settings": {
                **dataclasses.asdict(report.settings),
                **dataclasses.asdict(report.methods),
                "family_size": report.family_size,
            },
            "runs": [
                {
                    "path": r.path,
                    "model": r.model,
                    "condition": r.condition,
                    "engine": r.engine,
                    "tasks": sorted(r.tasks),
                }
                for r in report.runs
            ],
            "models": report.models,
            "cross_model": report.cross_model,
        }
    )


def _plain(value):
    if isinstance(value, Condition):  # wherever a condition is named, by its label
        return value.label
    if isinstance(value, Comparison):
        return _plain(_comparison(value))
    if isinstance(value, ModelReport):
        return _fields(value) | {"conditions": [_plain(_condition(c)) for c in value.conditions]}
    if isinstance(value, HeadMap):
        masked = [{"condition": c, "kind": c.kind, "heads": c.heads} for c in value.masked]
        return _fields(value) | {"masked": _plain(masked)}
    if isinstance(value, MemoryPoint):
        return {k: v for k, v in _fields(value).items() if k != "comparison"} | _plain(_brief(value.comparison))
    if isinstance(value, CrossModelTask):
        briefs = {kind: _brief(getattr(value, kind)) for kind in ("retrieval", "random", "contrast")}
        return _fields(value) | _plain(briefs)
    if dataclasses.is_dataclass(value):
        return _fields(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN
        return None
    return value


def _fields(value) -> dict:
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}


def _condition(c: Condition) -> dict:
    keys = ("kind", "k", "seed", "match", "unit", "mode", "phase", "heads")
    windowed = {} if c.window is None else {"window": c.window, "sink": c.sink}
    return {"label": c.label} | {key: getattr(c, key) for key in keys} | windowed


def _comparison(c: Comparison) -> dict:
    arm = c.arm
    return {
        "task": c.task,
        "filter": c.filter,
        "metric": c.metric,
        "condition": arm.label,
        "kind": arm.kind,
        "k": arm.k,
        "reference": arm.reference_label,
        **c.result.to_dict(),
        "null": c.null,
        "rank": None if c.rank is None else dataclasses.asdict(c.rank),
        "in_family": c.in_family,
        "headline": c.headline,
        "p_holm": c.p_holm,
        "p_bh": c.p_bh,
        "min_attainable_p_holm": c.min_attainable_p_holm,
    }


def _brief(c: Comparison | None) -> dict | None:
    if c is None:
        return None
    return {"condition": c.arm.label} | {key: getattr(c.result, key) for key in _BRIEF} | {"p_holm": c.p_holm}
