"""Paired statistics for "masked vs unmasked" comparisons, as pure functions on per-item score arrays.

Callers pair the items first (same document, same prompt); every array here is aligned item by item.
Conventions: ``delta = treated - baseline``; p-values are two-sided; random draws come from
``numpy.random.default_rng(seed)`` so a fixed seed reproduces every interval and Monte Carlo p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
ALPHA = 0.05
POWER = 0.8
_FEW_DISTINCT = 64  # up to this many distinct differences, bootstrap via multinomial counts
_MAX_DRAW_CELLS = 2_000_000  # resamples are drawn in batches of at most this many numbers, to bound memory


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison; ``ci`` is the percentile bootstrap interval of ``delta``."""

    n: int
    baseline: float
    treated: float
    delta: float
    ci_low: float
    ci_high: float
    sd_diff: float
    se: float
    se_clustered: float | None
    n_clusters: int | None
    p_value: float
    test: str  # "mcnemar-exact" | "sign-flip"

    def to_dict(self) -> dict:
        return asdict(self)


def is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def bootstrap_mean_ci(
    diffs: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed=0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference (Efron & Tibshirani 1993, ch. 13).

    With few distinct differences (0/1 metrics have at most three) a resample of n items is drawn as multinomial
    counts over the distinct values: the same distribution at O(distinct values) per resample. Percentile rather
    than BCa because BCa's jackknife is O(n^2) and undefined when every item has the same difference.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one paired difference.")
    values, counts = np.unique(d, return_counts=True)
    if values.size == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    few = values.size <= _FEW_DISTINCT
    chunk = max(1, _MAX_DRAW_CELLS // (values.size if few else d.size))
    means = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        if few:
            means.append(rng.multinomial(d.size, counts / d.size, size=size) @ values / d.size)
        else:
            means.append(d[rng.integers(0, d.size, size=(size, d.size))].mean(axis=1))
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


def sign_flip_pvalue(diffs: Sequence[float], *, n_resamples: int = N_RESAMPLES, seed=0) -> float:
    """Two-sided sign-flip permutation test of mean difference = 0 (Fisher 1935; Good 2005, §3.6).

    Zero differences are dropped: flipping them changes nothing. When 2^n <= n_resamples, scipy enumerates
    every sign pattern exactly. Otherwise it is Monte Carlo, p = (1 + #{|sum*| >= |sum|}) / (1 + n_resamples),
    drawing for each distinct magnitude how many of its items keep their sign (a binomial): the same
    distribution as flipping items one by one, and far cheaper for discrete scores.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if d.size < 2:  # both sign patterns of a single difference are as extreme as the observed one
        return 1.0
    if 2**d.size <= n_resamples:
        exact = sps.permutation_test(
            (d,),
            lambda x, axis: np.sum(x, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
        )
        return float(min(1.0, exact.pvalue))
    magnitudes, counts = np.unique(np.abs(d), return_counts=True)
    if magnitudes.size > _FEW_DISTINCT:  # continuous scores: one random bit per item
        magnitudes, counts = np.abs(d), None
    total = float(np.abs(d).sum())  # sum with every sign kept; a resampled sum is 2 * kept - total
    observed = abs(d.sum()) * (1 - 1e-12)  # ties with the observed sum count as extreme despite rounding
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAW_CELLS // magnitudes.size)
    extreme = 0
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        if counts is None:
            bits = rng.integers(0, 256, size=(size, (magnitudes.size + 7) // 8), dtype=np.uint8)
            kept_sum = np.unpackbits(bits, axis=1, count=magnitudes.size) @ magnitudes
        else:
            kept_sum = rng.binomial(counts, 0.5, size=(size, magnitudes.size)) @ magnitudes
        extreme += int(np.sum(np.abs(2 * kept_sum - total) >= observed))
    return (1 + extreme) / (1 + n_resamples)


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


def minimum_detectable_effect(se: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided level-alpha test detects with the given power: (z_{1-a/2} + z_power) SE."""
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)


def compare_paired(
    baseline: Sequence[float],
    treated: Sequence[float],
    *,
    clusters: Sequence | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed=0,
) -> PairedResult:
    """Scores, delta with bootstrap CI, p-value and standard errors for one paired comparison.

    The test is exact McNemar when both arrays are 0/1, and the sign-flip test otherwise (e.g. ROUGE, or
    per-item averages over several random-head seeds).
    """
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(treated, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"compare_paired needs two equal-length non-empty 1-D arrays, got {a.shape} and {b.shape}.")
    d = b - a
    low, high = bootstrap_mean_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    if is_binary(a) and is_binary(b):
        test, p_value = "mcnemar-exact", mcnemar_exact(a, b)
    else:
        test, p_value = "sign-flip", sign_flip_pvalue(d, n_resamples=n_resamples, seed=seed)
    se = standard_error(d)
    se_clustered, n_clusters = (None, None) if clusters is None else clustered_standard_error(d, clusters)
    return PairedResult(
        n=int(d.size),
        baseline=float(a.mean()),
        treated=float(b.mean()),
        delta=float(d.mean()),
        ci_low=low,
        ci_high=high,
        sd_diff=float(np.std(d, ddof=1)) if d.size > 1 else float("nan"),
        se=se,
        se_clustered=se_clustered,
        n_clusters=n_clusters,
        p_value=p_value,
        test=test,
    )
