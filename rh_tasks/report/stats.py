"""Paired statistics for "masked vs unmasked" comparisons, as pure functions on per-item score arrays.

Callers pair the items first (same document, same prompt); every array here is aligned item by item.
Conventions: ``delta = treated - baseline``; p-values are two-sided; random draws come from
``numpy.random.default_rng(seed)`` so a fixed seed reproduces every interval and Monte Carlo p-value.

The unit of inference is the unit of the design. Items that share a context (a needle and haystack, an
article) form a cluster: intervals resample whole clusters and tests flip the sign of whole cluster sums, so
G clusters can never give a p-value below 2 / 2^G however many items they hold. Random head sets (seeds) are
a sample of sets: with at least ``MIN_SEEDS`` of them, intervals resample seeds as well as clusters and the
test must reject both between seeds and between clusters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 3  # fewer head sets give no usable estimate of the spread between sets
_FEW_DISTINCT = 64  # up to this many distinct clusters, bootstrap via multinomial counts
_MAX_DRAW_CELLS = 2_000_000  # resamples are drawn in batches of at most this many numbers, to bound memory
_MAX_ENUMERATED = 16  # up to 2^16 sign patterns are enumerated one by one
_MAX_CONVOLUTION_CELLS = 50_000_000  # units x lattice span for the exact convolution
_MAX_DENOMINATOR = 1_000  # cluster sums that are multiples of 1/q for q up to this lie on a lattice
_TIE_TOLERANCE = 1e-9  # relative to the sum of |values|: far above rounding error, far below any real gap


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison; ``ci`` is the percentile bootstrap interval of ``delta`` at the design's unit.

    ``unit`` is what was resampled and sign-flipped: ``item``, ``cluster``, ``seed and item`` or ``seed and
    cluster``. ``conditional`` marks sampled head sets too few to estimate their spread: the result then holds
    for the drawn sets only. ``min_attainable_p`` is the smallest p-value the test could give on this design.
    """

    n: int
    n_clusters: int
    n_seeds: int | None
    unit: str
    conditional: bool
    baseline: float
    treated: float
    delta: float
    ci_low: float
    ci_high: float
    sd_diff: float
    se: float
    se_clustered: float | None
    se_seeds: float | None
    p_value: float
    p_clusters: float
    p_seeds: float | None
    test: str
    min_attainable_p: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def clustered(self) -> bool:
        """Items were grouped by shared context, so the clustered SE (not the item SE) is the one that applies."""
        return self.unit.endswith("cluster")


@dataclass(frozen=True)
class SignFlip:
    p_value: float
    method: str  # "exact" (enumeration or convolution) | "Monte Carlo, B flips": then p >= 1 / (B + 1)


def is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def min_attainable_p(units: int) -> float:
    """Smallest two-sided sign-flip p-value with ``units`` independent units: 2 / 2^units (1 for one unit)."""
    return 1.0 if units < 1 else min(1.0, 2.0 ** (1 - units))


def cluster_sums(diffs: np.ndarray, clusters: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """``[sets, items]`` differences -> (``[sets, G]`` per-cluster sums, ``[G]`` cluster sizes).

    Without cluster labels every item is its own cluster.
    """
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    if clusters is None:
        return d.copy(), np.ones(d.shape[1])
    labels = np.asarray([str(c) for c in clusters])
    if labels.size != d.shape[1]:
        raise ValueError(f"{d.shape[1]} differences but {labels.size} cluster labels.")
    _, index = np.unique(labels, return_inverse=True)
    groups = int(index.max()) + 1
    sums = np.stack([np.bincount(index, weights=row, minlength=groups) for row in d])
    return sums, np.bincount(index, minlength=groups).astype(float)


def bootstrap_mean_ci(
    sums: Sequence[float] | np.ndarray,
    sizes: Sequence[float] | None = None,
    *,
    resample_sets: bool = False,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed=0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference, resampling whole clusters.

    ``sums`` are per-cluster sums of the differences (``[G]``, or ``[sets, G]`` for several head sets) and
    ``sizes`` the items per cluster (default 1: independent items). Each resample draws G clusters with
    replacement and takes the ratio of summed differences to summed items, so a cluster's items stay together
    (Field & Welsh 2007; Davison & Hinkley 1997, §3.8). With ``resample_sets`` the head sets are drawn with
    replacement too, independently of the clusters (the two-way "pigeonhole" bootstrap, Owen 2007); otherwise
    the sets are averaged first. Percentile rather than BCa: BCa's jackknife is undefined when every cluster
    has the same mean.
    """
    c = np.atleast_2d(np.asarray(sums, dtype=float))
    n = np.ones(c.shape[1]) if sizes is None else np.asarray(sizes, dtype=float)
    if c.size == 0 or n.size != c.shape[1]:
        raise ValueError("bootstrap_mean_ci needs at least one cluster and one size per cluster.")
    rng = np.random.default_rng(seed)
    sets = c.shape[0]
    if not resample_sets or sets == 1:
        c = c.mean(axis=0, keepdims=True)
        sets = 1
    groups = c.shape[1]
    distinct, counts = None, None
    if sets == 1:
        pairs, counts = np.unique(np.stack([c[0], n], axis=1), axis=0, return_counts=True)
        if pairs.shape[0] == 1 or np.ptp(pairs[:, 0] / pairs[:, 1]) == 0:
            value = float(c.sum() / n.sum())
            return value, value
        if pairs.shape[0] <= _FEW_DISTINCT:
            distinct = pairs
    width = distinct.shape[0] if distinct is not None else groups + sets
    chunk = max(1, _MAX_DRAW_CELLS // width)
    means = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        if distinct is not None:  # the same distribution, at O(distinct clusters) per resample
            drawn = rng.multinomial(groups, counts / groups, size=size)
            means.append((drawn @ distinct[:, 0]) / (drawn @ distinct[:, 1]))
            continue
        drawn = rng.integers(0, groups, size=(size, groups))  # [size, G] indices of the clusters drawn
        if sets == 1:
            means.append(c[0][drawn].sum(axis=1) / n[drawn].sum(axis=1))
        else:
            weights = rng.multinomial(sets, np.full(sets, 1 / sets), size=size) / sets  # [size, sets]
            per_cluster = weights @ c  # [size, G] each cluster's sum averaged over the drawn sets
            means.append(np.take_along_axis(per_cluster, drawn, axis=1).sum(axis=1) / n[drawn].sum(axis=1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(means), [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_exact(baseline: Sequence[float], treated: Sequence[float]) -> float:
    """Exact McNemar test (McNemar 1947): a two-sided binomial test on the discordant pairs only."""
    a = np.asarray(baseline)
    b = np.asarray(treated)
    lost = int(np.sum((a == 1) & (b == 0)))
    gained = int(np.sum((a == 0) & (b == 1)))
    if lost + gained == 0:
        return 1.0
    return float(sps.binomtest(lost, lost + gained, 0.5).pvalue)


def sign_flip(values: Sequence[float], *, n_resamples: int = N_RESAMPLES, seed=0) -> SignFlip:
    """Two-sided sign-flip test of mean = 0 on independent units (Fisher 1935; Good 2005, §3.6).

    The units are items, cluster sums or per-seed differences. Zeros are dropped: flipping them changes
    nothing. The p-value is exact when it can be: by enumerating every sign pattern (up to 2^16), or by an
    exact convolution when the values lie on a lattice (multiples of 1/q, as 0/1 scores and their averages over
    seeds do). Otherwise it is Monte Carlo, p = (1 + #{|sum*| >= |sum|}) / (1 + n_resamples), drawing for each
    distinct magnitude how many of its units keep their sign (a binomial). When every magnitude is the same
    (0/1 items, equal cluster sums) it is scipy's exact binomial test. Ties with the observed sum are
    judged within a tolerance relative to the sum of |values|, the scale of the rounding error.
    """
    d = np.asarray(values, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return SignFlip(1.0, "exact")
    magnitudes = np.abs(d)
    total = float(magnitudes.sum())
    observed = abs(float(d.sum()))
    if np.ptp(magnitudes) <= _TIE_TOLERANCE * magnitudes.max():  # equal magnitudes: a binomial test, via scipy
        return SignFlip(float(sps.binomtest(int(np.sum(d > 0)), d.size, 0.5).pvalue), "exact")
    if d.size <= _MAX_ENUMERATED:
        patterns = (np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1  # [2^units, units] kept signs
        sums = np.abs(2 * (patterns @ magnitudes) - total)
        return SignFlip(float(np.mean(sums >= observed - _TIE_TOLERANCE * total)), "exact")
    lattice = _lattice(magnitudes)
    if lattice is not None:
        return SignFlip(_convolution_pvalue(lattice, int(round(observed * lattice[1]))), "exact")
    values_, counts = np.unique(magnitudes, return_counts=True)
    if values_.size > _FEW_DISTINCT:  # continuous scores: one random bit per unit
        values_, counts = magnitudes, None
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAW_CELLS // values_.size)
    extreme = 0
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        if counts is None:
            bits = rng.integers(0, 256, size=(size, (values_.size + 7) // 8), dtype=np.uint8)
            kept = np.unpackbits(bits, axis=1, count=values_.size) @ values_
        else:
            kept = rng.binomial(counts, 0.5, size=(size, values_.size)) @ values_
        extreme += int(np.sum(np.abs(2 * kept - total) >= observed - _TIE_TOLERANCE * total))
    return SignFlip((1 + extreme) / (1 + n_resamples), f"Monte Carlo, {n_resamples} flips")


def _lattice(magnitudes: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(integer magnitudes, q) when every magnitude is a multiple of 1/q and the convolution is affordable."""
    q = 1
    for value in np.unique(magnitudes):
        fraction = Fraction(float(value)).limit_denominator(_MAX_DENOMINATOR)
        if abs(float(fraction) - value) > 1e-9 * max(1.0, value):
            return None
        q = math.lcm(q, fraction.denominator)
        if q > _MAX_DENOMINATOR:
            return None
    integers = np.rint(magnitudes * q).astype(np.int64)
    if integers.size * (int(integers.sum()) + 1) > _MAX_CONVOLUTION_CELLS:
        return None
    return integers, q


def _convolution_pvalue(lattice: tuple[np.ndarray, int], observed: int) -> float:
    """Exact P(|sum of randomly signed units| >= observed), by convolving the units' two-point laws."""
    integers, _ = lattice
    total = int(integers.sum())
    kept = np.zeros(total + 1)  # probability that the units keeping their sign sum to j
    kept[0] = 1.0
    for value in integers:
        shifted = np.zeros_like(kept)
        shifted[value:] = kept[: kept.size - value]
        kept = 0.5 * (kept + shifted)
    signed = np.abs(2 * np.arange(total + 1) - total)
    return float(min(1.0, kept[signed >= observed].sum()))


def sign_flip_pvalue(values: Sequence[float], *, n_resamples: int = N_RESAMPLES, seed=0) -> float:
    """The p-value of :func:`sign_flip`."""
    return sign_flip(values, n_resamples=n_resamples, seed=seed).p_value


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values: the k-th smallest is max_{j<=k} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini & Hochberg (1995) adjusted p-values (false discovery rate), via scipy."""
    p = np.asarray(pvalues, dtype=float)
    return p.copy() if p.size == 0 else sps.false_discovery_control(p, method="bh")


def standard_error(diffs: Sequence[float]) -> float:
    """CLT standard error of the mean, SD (ddof=1) / sqrt(n); NaN for a single item."""
    d = np.asarray(diffs, dtype=float)
    return float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")


def clustered_standard_error(diffs: Sequence[float], clusters: Sequence) -> tuple[float, int]:
    """Cluster-robust (CRV1) standard error of the mean, for items that share a context (Miller 2024, §2.2).

    SE^2 = G/(G-1) * sum_g (sum_{i in g} e_i)^2 / n^2 with e_i = d_i - mean(d) and G clusters; with one item
    per cluster it equals the CLT standard error. Returns (SE, G); SE is NaN with fewer than two clusters.
    """
    d = np.asarray(diffs, dtype=float)
    labels = np.asarray([str(c) for c in clusters])
    if labels.size != d.size:
        raise ValueError(f"{d.size} differences but {labels.size} cluster labels.")
    _, index = np.unique(labels, return_inverse=True)
    groups = int(index.max()) + 1 if d.size else 0
    if groups < 2:
        return float("nan"), groups
    sums = np.bincount(index, weights=d - d.mean())
    return float(np.sqrt(groups / (groups - 1) * np.sum(sums**2)) / d.size), groups


def minimum_detectable_effect(
    se: float, units: int | None = None, *, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Smallest true difference a two-sided level-alpha test detects with the given power.

    (t_{1-a/2} + t_{power}) SE with units - 1 degrees of freedom (G - 1 for G clusters, Cameron & Miller 2015),
    or z quantiles when ``units`` is None. Infinite when the units are too few for any test to reach alpha.
    """
    if units is None:
        return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)
    if units < 2 or min_attainable_p(units) > alpha:
        return float("inf")
    df = units - 1
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


def compare_paired(
    baseline: Sequence[float] | np.ndarray,
    treated: Sequence[float] | np.ndarray,
    *,
    clusters: Sequence | None = None,
    sampled_sets: bool = False,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed=0,
) -> PairedResult:
    """Scores, delta with bootstrap CI, p-value and standard errors for one paired comparison.

    ``baseline`` and ``treated`` are ``[items]`` or ``[sets, items]``: one side may hold one row per random
    head set (seed), with ``sampled_sets`` saying that those sets are a sample. The estimate averages the sets.

    - One set (or sets treated as fixed): the test flips cluster sums; it is exact McNemar when every cluster
      holds one item and the scores are 0/1 (the same test, via scipy's binomial test).
    - ``MIN_SEEDS`` or more sampled sets: the interval resamples sets and clusters, and the p-value is the
      larger of the sign-flip test between sets (per-set deltas) and between clusters (sums averaged over
      sets): an intersection-union test that holds only when the effect is clear across both samples.
    - Fewer sampled sets: clusters only, and ``conditional`` is set: the result holds for the drawn sets.
    """
    a = np.atleast_2d(np.asarray(baseline, dtype=float))
    b = np.atleast_2d(np.asarray(treated, dtype=float))
    if a.shape[1:] != b.shape[1:] or a.ndim != 2 or a.shape[1] == 0 or 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            "compare_paired needs [items] or [sets, items] arrays over the same non-empty items, with at most one "
            f"side holding several sets; got {np.shape(baseline)} and {np.shape(treated)}."
        )
    d = b - a  # [sets, items]
    sets = d.shape[0]
    items = d.mean(axis=0)  # per-item difference averaged over the sets
    sums, sizes = cluster_sums(d, clusters)
    groups = sizes.size
    clustered = bool(sizes.max() > 1)
    across_sets = sampled_sets and sets >= MIN_SEEDS
    floor = min_attainable_p(groups)
    if sets == 1 and not clustered and is_binary(a) and is_binary(b):
        test, p_clusters = "mcnemar-exact", mcnemar_exact(a[0], b[0])
    else:
        by_clusters = sign_flip(sums.mean(axis=0), n_resamples=n_resamples, seed=seed)
        test = f"sign-flip on {'cluster sums' if clustered else 'items'} ({by_clusters.method})"
        p_clusters = by_clusters.p_value
        if by_clusters.method != "exact":  # a Monte Carlo p-value cannot go below 1 / (B + 1)
            floor = max(floor, 1 / (1 + n_resamples))
    p_seeds, se_seeds = None, None
    per_set = d.mean(axis=1)
    if across_sets:
        by_sets = sign_flip(per_set, n_resamples=n_resamples, seed=seed)
        p_seeds = by_sets.p_value
        se_seeds = float(np.std(per_set, ddof=1) / np.sqrt(sets))
        test = f"max of sign-flip between seeds ({by_sets.method}) and {test}"
        floor = max(floor, min_attainable_p(sets))
    low, high = bootstrap_mean_ci(
        sums, sizes, resample_sets=across_sets, confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    unit = "cluster" if clustered else "item"
    return PairedResult(
        n=int(d.shape[1]),
        n_clusters=int(groups),
        n_seeds=sets if sampled_sets else None,
        unit=f"seed and {unit}" if across_sets else unit,
        conditional=sampled_sets and not across_sets,
        baseline=float(a.mean()),
        treated=float(b.mean()),
        delta=float(items.mean()),
        ci_low=low,
        ci_high=high,
        sd_diff=float(np.std(items, ddof=1)) if items.size > 1 else float("nan"),
        se=standard_error(items),
        se_clustered=clustered_standard_error(items, clusters)[0] if clustered else None,
        se_seeds=se_seeds,
        p_value=max(p_clusters, p_seeds) if p_seeds is not None else p_clusters,
        p_clusters=p_clusters,
        p_seeds=p_seeds,
        test=test,
        min_attainable_p=floor,
    )


def units_for_floor(tests: int = 1, *, alpha: float = ALPHA) -> int:
    """Fewest independent units (clusters or seeds) whose sign-flip test can reach alpha / tests: 2 / 2^G <= it."""
    return max(2, math.ceil(1 + math.log2(tests / alpha)))


def clusters_needed(
    effect: float, *, tests: int = 1, sd: float = math.sqrt(2) * 0.5, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Fewest clusters to detect ``effect`` with the given power at level alpha / tests (Bonferroni, Holm's
    first step), for cluster-mean differences with standard deviation ``sd``.

    The default SD, sqrt(2) x 0.5, is the worst case for [0, 1] scores with masked and unmasked outcomes
    independent. Also at least :func:`units_for_floor`, so that the exact test can reach the level at all.
    """
    if effect <= 0:
        raise ValueError(f"The effect to plan for must be positive, got {effect}.")
    level = alpha / tests
    groups = units_for_floor(tests, alpha=alpha)
    while (sps.t.ppf(1 - level / 2, groups - 1) + sps.t.ppf(power, groups - 1)) * sd / math.sqrt(groups) > effect:
        groups += 1
    return groups
