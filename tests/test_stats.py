"""Paired statistics against hand-computed values and simulation."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rh_tasks import stats


def test_mcnemar_exact_hand_computed():
    # 1 item lost, 9 gained: P = 2 * (C(10,0) + C(10,1)) / 2^10
    baseline = [1] + [0] * 9 + [1] * 5
    treated = [0] + [1] * 9 + [1] * 5
    assert stats.mcnemar_exact(baseline, treated) == pytest.approx(2 * 11 / 1024)
    # 5 lost, none gained: P = 2 / 2^5; concordant pairs do not matter
    assert stats.mcnemar_exact([1] * 5 + [0] * 7, [0] * 12) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
    assert stats.mcnemar_exact([1, 0], [0, 1]) == 1.0


def test_sign_flip_exact_hand_computed():
    # all 8 sign patterns of (1, 2, 3): only +-(1, 2, 3) reach |sum| >= 6
    assert stats.sign_flip_pvalue([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    # (1, -2, 3, 4): |sum| >= 6 iff the positive subset sums to >= 8 or <= 2: 6 of 16 patterns
    assert stats.sign_flip_pvalue([1.0, -2.0, 3.0, 4.0]) == pytest.approx(6 / 16)
    # zeros change nothing
    assert stats.sign_flip_pvalue([0.0, 1.0, 0.0, -2.0, 3.0, 4.0, 0.0]) == pytest.approx(6 / 16)
    assert stats.sign_flip_pvalue([0.0, 0.0]) == 1.0


def test_sign_flip_monte_carlo_matches_enumeration():
    d = np.random.default_rng(3).normal(0.4, 1.0, size=14)  # 2^14 > 10000 resamples: Monte Carlo
    observed = abs(d.sum())
    signs = np.array(list(itertools.product([-1, 1], repeat=d.size)))
    exact = np.mean(np.abs(signs @ d) >= observed - 1e-12)
    assert stats.sign_flip_pvalue(d, seed=1) == pytest.approx(exact, abs=0.012)
    assert stats.sign_flip_pvalue(d, seed=1) == stats.sign_flip_pvalue(d, seed=1)


def test_sign_flip_monte_carlo_agrees_with_scipy_for_continuous_scores():
    d = np.random.default_rng(5).normal(0.15, 1.0, size=120)  # > 64 distinct magnitudes: one bit per item
    reference = scipy_stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=20_000, rng=np.random.default_rng(0)
    ).pvalue
    assert stats.sign_flip_pvalue(d, n_resamples=20_000, seed=2) == pytest.approx(reference, abs=0.015)


def test_holm_hand_worked():
    # sorted .005 .01 .03 .04 -> 4x, 3x, 2x, 1x = .02 .03 .06 .04 -> running max .02 .03 .06 .06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    assert stats.holm([]).size == 0


def test_benjamini_hochberg_hand_worked():
    # sorted p * m / rank = .02 .02 .04 .04, then running min from the top
    np.testing.assert_allclose(stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])


def test_clustered_standard_error_hand_computed():
    # residuals +.5 +.5 -.5 -.5; cluster sums +1, -1; SE^2 = 2/1 * 2 / 16
    se, groups = stats.clustered_standard_error([1, 1, 0, 0], ["a", "a", "b", "b"])
    assert (se, groups) == (pytest.approx(0.5), 2)
    # one item per cluster: equals the CLT standard error
    d = np.array([0.3, -1.2, 2.0, 0.7, 0.1])
    assert stats.clustered_standard_error(d, range(5))[0] == pytest.approx(stats.standard_error(d))
    assert math.isnan(stats.clustered_standard_error([1, 0], ["a", "a"])[0])


def test_minimum_detectable_effect():
    assert stats.minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)


def test_bootstrap_is_seeded_and_degenerate_safe():
    d = np.random.default_rng(0).normal(size=50)
    assert stats.bootstrap_mean_ci(d, seed=4) == stats.bootstrap_mean_ci(d, seed=4)
    assert stats.bootstrap_mean_ci([0.0] * 10) == (0.0, 0.0)
    with pytest.raises(ValueError):
        stats.bootstrap_mean_ci([])


def test_bootstrap_matches_naive_resampling():
    d = np.random.default_rng(1).choice([-1.0, 0.0, 1.0], p=[0.3, 0.5, 0.2], size=80)
    rng = np.random.default_rng(2)
    naive = d[rng.integers(0, d.size, size=(20_000, d.size))].mean(axis=1)
    low, high = stats.bootstrap_mean_ci(d, n_resamples=20_000, seed=3)
    assert low == pytest.approx(np.quantile(naive, 0.025), abs=0.013)
    assert high == pytest.approx(np.quantile(naive, 0.975), abs=0.013)


@pytest.mark.parametrize("kind", ["continuous", "binary"])
def test_bootstrap_ci_coverage(kind):
    """About 95% of intervals cover the true paired effect over 200 simulated experiments."""
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(200):
        if kind == "continuous":
            baseline = rng.normal(0.5, 0.2, size=60)
            treated = baseline - 0.1 + rng.normal(0, 0.25, size=60)
            truth = -0.1
        else:  # per item: lose with p=.3, gain with p=.1 -> true effect -0.2
            baseline = (rng.random(80) < 0.8).astype(float)
            u = rng.random(80)
            treated = np.where(baseline == 1, (u >= 0.375).astype(float), (u < 0.5).astype(float))
            truth = 0.8 * -0.375 + 0.2 * 0.5
        low, high = stats.bootstrap_mean_ci(treated - baseline, n_resamples=2000, seed=i)
        covered += low <= truth <= high
    assert 0.90 <= covered / 200 <= 0.985


def test_compare_paired_picks_the_test():
    binary = stats.compare_paired([1, 1, 1, 0], [0, 0, 1, 0], clusters=["a", "a", "b", "b"])
    assert binary.test == "mcnemar-exact"
    assert binary.delta == pytest.approx(-0.5)
    assert binary.p_value == pytest.approx(0.5)  # 2 lost, 0 gained: 2 / 4
    assert binary.n_clusters == 2
    continuous = stats.compare_paired([0.5, 1.0, 0.2], [0.0, 0.25, 0.2])
    assert continuous.test == "sign-flip"
    assert continuous.se_clustered is None
    with pytest.raises(ValueError):
        stats.compare_paired([1, 0], [1])
