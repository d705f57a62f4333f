"""Paired statistics for "masked vs unmasked" comparisons, as pure functions on per-item score arrays.

Callers pair the items first (same document, same prompt); every array here is aligned item by item.
Conventions: ``delta = treated - baseline``; p-values are two-sided unless named otherwise; Monte Carlo draws
come from ``numpy.random.default_rng(seed)`` so a fixed seed reproduces every p-value.

The unit of inference is the unit of the design. Items that share a context (a needle and haystack, an
article) form a cluster, and random head sets (seeds) are a sample of sets. Two kinds of comparison follow:

- **One fixed condition against another** (retrieval heads against none, one seed alone): the only sample is
  the contexts. The test is exact: McNemar on independent 0/1 items, else a sign-flip test on cluster sums,
  valid under the null that the two conditions are exchangeable within each context.
- **A pooled random control or a contrast against it**: the claim is about new contexts *and* new random
  sets, so both are samples and the differences are crossed random effects (set + context + interaction).
  No permutation of one factor is valid for that null, and the larger of two one-factor p-values is not
  either. The test is a t statistic on the two-way standard error, SE^2 = SE^2(between seeds) + SE^2(between
  clusters), with the degrees of freedom of the smaller sample: each term also carries the interaction, so the
  sum counts them twice and errs on the conservative side (Cameron, Gelbach & Miller 2011's two-way variance
  without the subtracted intersection, which can go negative). Its size, coverage and power over the designs
  rh-eval allows are measured by ``benchmarks/bench_calibration.py``.

Every interval is a t interval on the same standard error and degrees of freedom as its test (G - 1 for G
equal clusters when the sets are fixed), so it is valid with few clusters where the percentile bootstrap is
too narrow. For scores in [0, 1] the variance gains (1 / (G + 2))^2, the Agresti & Min (2005) adjustment's value
when nothing changed, so a design that cannot see any spread still gets an honest width.
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
_FEW_DISTINCT = 64  # up to this many distinct magnitudes, Monte Carlo flips draw one binomial per magnitude
_MAX_DRAW_CELLS = 2_000_000  # flips are drawn in batches of at most this many numbers, to bound memory
_MAX_ENUMERATED = 16  # up to 2^16 sign patterns are enumerated one by one
_MAX_CONVOLUTION_CELLS = 50_000_000  # units x lattice span for the exact convolution
_MAX_DENOMINATOR = 1_000  # cluster sums that are multiples of 1/q for q up to this lie on a lattice
_TIE_TOLERANCE = 1e-9  # relative to the sum of |terms|: far above rounding error, far below any real gap


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison: ``delta`` with its t interval (``se_design``, ``df``) and its test's p-value.

    ``unit`` is what the statistics treat as independent: ``item``, ``cluster``, ``seed and item`` or ``seed
    and cluster``. ``conditional`` marks sampled head sets too few to estimate their spread: the result then
    holds for the drawn sets only. For a fixed comparison ``p_value`` is the larger of the exact test's
    ``p_exact`` and the interval's own t test ``p_t``; a pooled comparison's ``p_value`` is ``p_t``. Either way
    the interval excludes 0 exactly when ``p_value`` < 1 - confidence. ``min_attainable_p`` is the smallest
    p-value the test could give on these data: 2 / 2^U for a sign-flip test over the U units that are not 0
    (the discordant pairs for McNemar), and 0 for the t test.
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
    se_design: float
    df: float
    sd_diff: float
    se: float
    se_clustered: float | None
    se_seeds: float | None
    p_value: float
    p_exact: float | None
    p_t: float
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


@dataclass(frozen=True)
class TwoWay:
    """Estimate, standard error and degrees of freedom of a mean over head sets and clusters (arrays when
    several designs are computed at once, as the calibration benchmark does)."""

    delta: np.ndarray
    se: np.ndarray
    df: np.ndarray
    se_seeds: np.ndarray  # 0 with one set

    def p_value(self) -> np.ndarray:
        """Two-sided t test of delta = 0; 1 where the design gives no standard error."""
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2 * sps.t.sf(np.abs(self.delta) / self.se, self.df)
        return np.where(np.isfinite(p), p, 1.0)

    def interval(self, confidence: float = CONFIDENCE, bounded: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """t interval; clipped to [-1, 1] for scores in [0, 1], and all of it where no SE exists."""
        half = sps.t.ppf(0.5 + confidence / 2, self.df) * self.se
        low, high = self.delta - half, self.delta + half
        if bounded:
            low = np.where(np.isfinite(low), np.maximum(low, -1.0), -1.0)
            high = np.where(np.isfinite(high), np.minimum(high, 1.0), 1.0)
        return low, high


@dataclass(frozen=True)
class SetRank:
    """Where one fixed head set falls among S sampled sets, by how much each lowers the score."""

    beaten: int  # sampled sets the fixed set lowers the score more than
    sets: int
    p_value: float  # one-sided exact rank p, (1 + #{sampled sets at least as damaging}) / (S + 1)


def is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def is_bounded(*arrays: np.ndarray) -> bool:
    """Scores in [0, 1], so every paired difference lies in [-1, 1]."""
    return all(bool(np.all((a >= 0) & (a <= 1))) for a in arrays)


def min_attainable_p(units: int) -> float:
    """Smallest two-sided sign-flip p-value with ``units`` independent units: 2 / 2^units (1 for one unit)."""
    return 1.0 if units < 1 else min(1.0, 2.0 ** (1 - units))


def snap_zeros(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Sums within rounding error of 0 (relative to the sum of |terms| they came from) become exactly 0, so a
    cluster whose differences cancel is a zero, not a tiny effect with a sign."""
    return np.where(np.abs(values) <= _TIE_TOLERANCE * scale, 0.0, values)


def cluster_sums(diffs: np.ndarray, clusters: Sequence | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[sets, items]`` differences -> (``[sets, G]`` per-cluster sums, ``[sets, G]`` sums of |differences|,
    ``[G]`` cluster sizes). Without cluster labels every item is its own cluster."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    if clusters is None:
        return d.copy(), np.abs(d), np.ones(d.shape[1])
    labels = np.asarray([str(c) for c in clusters])
    if labels.size != d.shape[1]:
        raise ValueError(f"{d.shape[1]} differences but {labels.size} cluster labels.")
    _, index = np.unique(labels, return_inverse=True)
    groups = int(index.max()) + 1
    sums = np.stack([np.bincount(index, weights=row, minlength=groups) for row in d])
    scale = np.stack([np.bincount(index, weights=np.abs(row), minlength=groups) for row in d])
    return snap_zeros(sums, scale), scale, np.bincount(index, minlength=groups).astype(float)


def two_way(sums: np.ndarray, sizes: np.ndarray, *, bounded: bool) -> TwoWay:
    """The mean difference over ``[..., S, G]`` per-set cluster sums, with its two-way standard error.

    SE^2 = var(set means) / S + the CR2 variance of the set-averaged cluster sums (Bell & McCaffrey 2002):
    sum_g e_g^2 / (1 - n_g / N) / N^2, which is CRV1's with equal clusters and does not shrink when a few large
    clusters dominate. Degrees of freedom: the fewer of S - 1 and the clusters' Bell-McCaffrey degrees of
    freedom (:func:`cluster_df`, G - 1 for equal clusters), since the smaller sample bounds what is known about
    the spread. Satterthwaite's combination was tried and rejects up to 10% of true nulls with 3 seeds: a set
    variance estimated on 2 degrees of freedom is often small by chance, and the degrees of freedom then jump.
    For scores in [0, 1] the variance gains (1 / (G + 2))^2, what Agresti & Min's (2005) pseudo-counts give when
    nothing changed: a t test on a few cluster means that are nearly all +-1 (one 0/1 item per context) is
    otherwise too liberal (7% at G = 8), and a design that saw no change still gets an honest width. With one
    cluster, or unbounded scores without any spread, there is no SE (NaN). With one set it is the clustered t.
    """
    s = np.asarray(sums, dtype=float)
    n = np.asarray(sizes, dtype=float)
    sets, groups = s.shape[-2:]
    total = n.sum()
    per_set = s.sum(axis=-1) / total  # [..., S]
    delta = per_set.mean(axis=-1)
    residual = s.mean(axis=-2) - delta[..., None] * n  # [..., G]
    if groups < 2:
        nan = np.full(delta.shape, np.nan)
        return TwoWay(delta, nan, nan, nan)
    v_clusters = np.sum(residual**2 / (1 - n / total), axis=-1) / total**2  # CR2: each cluster's leverage
    v_seeds = per_set.var(axis=-1, ddof=1) / sets if sets > 1 else np.zeros(delta.shape)
    variance = v_seeds + v_clusters
    if bounded:  # Agresti & Min's pseudo-counts: half a pair lost and half gained, over G + 2 units
        variance = variance + (1 / (groups + 2)) ** 2
    else:  # no spread at all in unbounded scores: nothing to scale an interval by
        variance = np.where(variance > 0, variance, np.nan)
    df = np.full(delta.shape, min(float(sets - 1), cluster_df(n)) if sets > 1 else cluster_df(n))
    return TwoWay(delta, np.sqrt(variance), df, np.sqrt(v_seeds))


def cluster_df(sizes: np.ndarray) -> float:
    """Bell & McCaffrey's (2002) degrees of freedom for the CR2 variance of an item-weighted mean of clusters.

    With cluster means iid, the variance estimate is a quadratic form y'Ay in them, so Satterthwaite's match of
    its first two moments gives tr(A)^2 / tr(A^2): G - 1 for equal clusters, fewer when sizes are unequal and a
    few clusters carry most of the weight (Imbens & Kolesár 2016). A = (I - w1')D(I - 1w') with D = diag(d),
    d_g = w_g^2 / (1 - w_g), is D plus a rank-2 term U C U' (U = [w, d]), so both traces cost O(G), not the
    O(G^2) memory of the matrix itself (a full MMLU run has 14,042 independent items).
    """
    w = np.asarray(sizes, dtype=float) / float(np.sum(sizes))
    if w.size < 2:
        return float("nan")
    d = w**2 / (1 - w)
    u = np.stack([w, d], axis=1)  # [G, 2]
    c = np.array([[d.sum(), -1.0], [-1.0, 0.0]])
    trace = d.sum() + np.trace(c @ (u.T @ u))
    trace_sq = (
        np.sum(d**2) + 2 * np.trace(c @ (u.T @ (d[:, None] * u))) + np.trace(np.linalg.matrix_power(c @ (u.T @ u), 2))
    )
    return round(float(trace**2 / trace_sq), 9)  # G - 1 exactly for equal clusters


def rank_among_sets(fixed_minus_sampled: Sequence[float]) -> SetRank:
    """Rank of a fixed head set among sampled ones, from each set's mean of (fixed - sampled) on the same items.

    Under the null that the fixed set is one more draw from the sampled sets' distribution, its rank is
    uniform, so (1 + #{sets at least as damaging}) / (S + 1) is an exact one-sided p-value (Phipson & Smyth
    2010). It cannot go below 1 / (S + 1): 19 sets for 0.05.
    """
    d = np.asarray(fixed_minus_sampled, dtype=float)
    tie = _TIE_TOLERANCE * max(1.0, float(np.abs(d).max(initial=0.0)))
    beaten = int(np.sum(d < -tie))
    return SetRank(beaten, int(d.size), (1 + d.size - beaten) / (d.size + 1))


def seeds_for_rank(alpha: float = ALPHA) -> int:
    """Fewest sampled sets whose rank test can give a one-sided p of alpha: 1 / (S + 1) <= alpha."""
    return math.ceil(1 / alpha - 1 - 1e-9)


def critical_t(tests: int, df: float, alpha: float = ALPHA) -> float:
    """How many standard errors from 0 a two-sided t test with ``df`` degrees of freedom needs at Holm's first
    step over ``tests`` tests (alpha / tests); the normal quantile when ``df`` is infinite."""
    level = 1 - alpha / max(tests, 1) / 2
    return float(sps.norm.ppf(level) if math.isinf(df) else sps.t.ppf(level, df))


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
    bounded: bool | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed=0,
) -> PairedResult:
    """Scores, delta with its interval, p-value and standard errors for one paired comparison.

    ``baseline`` and ``treated`` are ``[items]`` or ``[sets, items]``: one side may hold one row per random
    head set (seed), with ``sampled_sets`` saying that those sets are a sample. The estimate averages the sets.
    ``bounded`` says if scores are [0, 1] by nature; None infers it from the values, wrong for an NLL that is under 1.

    - ``MIN_SEEDS`` or more sampled sets: the two-way t test and interval (:func:`two_way`), valid for the
      null that the mean difference over new sets and new contexts is 0.
    - One set, or fewer sampled sets than that (``conditional``: the result holds for the drawn sets only):
      the exact test, McNemar when every cluster holds one 0/1 item, else a sign-flip test on the cluster
      sums, with the clustered t interval. The p-value is the larger of the exact test's and the interval's
      own t test's, and an interval that excludes 0 where the exact test does not reject is extended to 0
      (with 3 contexts that all lose, [-100, 0] points rather than a width that claims p < 0.05 beside
      p = 0.25): so a significant row's interval always excludes 0, and an interval that excludes 0 always
      belongs to a significant row.
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
    bounded = is_bounded(a, b) if bounded is None else bounded
    sums, scale, sizes = cluster_sums(d, clusters)
    groups = sizes.size
    clustered = bool(sizes.max() > 1)
    unit = "cluster" if clustered else "item"
    across_sets = sampled_sets and sets >= MIN_SEEDS
    averaged = snap_zeros(sums.mean(axis=0), scale.mean(axis=0))  # [G] cluster sums averaged over the sets
    estimate = two_way(sums if across_sets else averaged[None, :], sizes, bounded=bounded)
    low, high = estimate.interval(confidence, bounded)
    p_t = float(estimate.p_value())
    if across_sets:
        p_exact, p_value = None, p_t
        floor = 0.0 if groups > 1 else 1.0
        test = f"t on the two-way SE between seeds and {unit}s ({float(estimate.df):g} df)"
    else:
        if sets == 1 and not clustered and is_binary(a) and is_binary(b):
            p_exact, test = mcnemar_exact(a[0], b[0]), "exact McNemar"
            floor = min_attainable_p(int(np.sum(a[0] != b[0])))  # only discordant pairs enter
        else:
            flip = sign_flip(averaged, n_resamples=n_resamples, seed=seed)
            p_exact, test = flip.p_value, f"sign-flip on {'cluster sums' if clustered else 'items'} ({flip.method})"
            floor = min_attainable_p(int(np.count_nonzero(averaged)))  # zero units are dropped by the test
            if flip.method != "exact":  # a Monte Carlo p-value cannot go below 1 / (B + 1)
                floor = max(floor, 1 / (1 + n_resamples))
        p_value = max(p_exact, p_t)
        if p_exact >= 1 - confidence and not low <= 0 <= high:  # the interval must not claim what the test does not
            low, high = min(low, 0.0), max(high, 0.0)
    return PairedResult(
        n=int(d.shape[1]),
        n_clusters=int(groups),
        n_seeds=sets if sampled_sets else None,
        unit=f"seed and {unit}" if across_sets else unit,
        conditional=sampled_sets and not across_sets,
        baseline=float(a.mean()),
        treated=float(b.mean()),
        delta=float(estimate.delta),
        ci_low=float(low),
        ci_high=float(high),
        se_design=float(estimate.se),
        df=float(estimate.df),
        sd_diff=float(np.std(items, ddof=1)) if items.size > 1 else float("nan"),
        se=standard_error(items),
        se_clustered=clustered_standard_error(items, clusters)[0] if clustered else None,
        se_seeds=float(estimate.se_seeds) if across_sets else None,
        p_value=p_value,
        p_exact=p_exact,
        p_t=p_t,
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
