"""Paired statistics against hand-computed values and simulation."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rh_tasks.report import stats


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


def test_minimum_detectable_effect_without_units_uses_z():
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
    independent = stats.compare_paired([1, 1, 1, 0], [0, 0, 1, 0])
    assert (independent.test, independent.unit, independent.n_clusters) == ("mcnemar-exact", "item", 4)
    assert independent.delta == pytest.approx(-0.5)
    assert independent.p_value == pytest.approx(0.5)  # 2 lost, 0 gained: 2 / 4
    assert independent.min_attainable_p == pytest.approx(1 / 8)
    clustered = stats.compare_paired([1, 1, 1, 0], [0, 0, 1, 0], clusters=["a", "a", "b", "b"])
    assert clustered.test == "sign-flip on cluster sums (exact)" and clustered.unit == "cluster"
    assert clustered.p_value == 1.0  # one nonzero cluster sum (-2): both of its signs are as extreme
    assert (clustered.n_clusters, clustered.min_attainable_p) == (2, 0.5)
    continuous = stats.compare_paired([0.5, 1.0, 0.2], [0.0, 0.25, 0.2])
    assert continuous.test == "sign-flip on items (exact)"
    assert continuous.se_clustered is None
    with pytest.raises(ValueError):
        stats.compare_paired([1, 0], [1])
    with pytest.raises(ValueError):
        stats.compare_paired(np.ones((2, 3)), np.ones((3, 3)))


def _whole_context_flips():
    """6 contexts x 6 items, all correct unmasked except the last context; masking loses 3 whole contexts,
    leaves 2 unchanged and gains the last one."""
    baseline = np.array([1.0] * 30 + [0.0] * 6)
    treated = np.array([0.0] * 18 + [1.0] * 12 + [1.0] * 6)
    return baseline, treated, np.repeat(np.arange(6), 6)


def test_cluster_flips_at_the_context_level():
    baseline, treated, contexts = _whole_context_flips()
    result = stats.compare_paired(baseline, treated, clusters=contexts, n_resamples=20_000)
    # cluster sums -6 -6 -6 0 0 +6: of the 16 sign patterns of the four nonzero sums, |sum| >= 12 for the
    # 2 with all signs equal and the 8 with one sign different: 10 / 16
    assert result.p_value == pytest.approx(0.625)
    assert result.delta == pytest.approx(-1 / 3)
    assert (result.unit, result.n_clusters, result.min_attainable_p) == ("cluster", 6, pytest.approx(1 / 32))
    assert result.ci_low < 0 < result.ci_high
    # the cluster bootstrap mean is (#gained - #lost) / 6 over multinomial(6; 1/6, 1/2, 1/3) draws of contexts
    support, mass = [], []
    for gained in range(7):
        for lost in range(7 - gained):
            support.append((gained - lost) / 6)
            mass.append(
                math.factorial(6)
                / math.factorial(gained)
                / math.factorial(lost)
                / math.factorial(6 - gained - lost)
                * (1 / 6) ** gained
                * (1 / 2) ** lost
                * (1 / 3) ** (6 - gained - lost)
            )
    order = np.argsort(support)
    cdf = np.cumsum(np.array(mass)[order])
    values = np.array(support)[order]
    exact_low, exact_high = values[np.searchsorted(cdf, 0.025)], values[np.searchsorted(cdf, 0.975)]
    assert result.ci_low == pytest.approx(exact_low, abs=1 / 6 + 1e-9)
    assert result.ci_high == pytest.approx(exact_high, abs=1 / 6 + 1e-9)
    # the same items taken as independent: McNemar on 18 lost, 6 gained, and an interval that excludes 0
    naive = stats.compare_paired(baseline, treated)
    assert naive.test == "mcnemar-exact"
    assert naive.p_value == pytest.approx(2 * sum(math.comb(24, j) for j in range(7)) / 2**24)
    assert naive.p_value == pytest.approx(0.0227, abs=1e-4)
    assert naive.ci_high < 0


def test_one_item_per_cluster_is_the_independent_design():
    baseline, treated, _ = _whole_context_flips()
    singletons = stats.compare_paired(baseline, treated, clusters=[f"c{i}" for i in range(36)])
    plain = stats.compare_paired(baseline, treated)
    assert (singletons.test, singletons.unit, singletons.p_value) == (plain.test, plain.unit, plain.p_value)
    assert singletons.se_clustered is None and singletons.n_clusters == 36


def test_sampled_seeds_one_breaks_half_the_items():
    """5 seeds: 4 change nothing, 1 breaks 20 of 40 items. Pooled delta -0.1; per-seed deltas 0 0 0 0 -0.5."""
    none = np.ones(40)
    seeds = np.ones((5, 40))
    seeds[4, :20] = 0
    pooled = stats.compare_paired(none, seeds, sampled_sets=True)
    assert pooled.delta == pytest.approx(-0.1)
    assert (pooled.unit, pooled.n_seeds, pooled.conditional) == ("seed and item", 5, False)
    assert pooled.p_seeds == 1.0  # a single nonzero seed: both of its signs are as extreme
    assert pooled.p_value == 1.0
    assert pooled.min_attainable_p == pytest.approx(1 / 16)  # 5 seeds: 2 / 2^5
    assert pooled.se_seeds == pytest.approx(0.1)  # SD of (0, 0, 0, 0, -0.5) / sqrt(5)
    # resamples without the bad seed (0.8^5 = 33% of them) give exactly 0, so the upper bound is 0; three or
    # more copies of it (5.8%) give about -0.3
    assert pooled.ci_high == 0.0
    assert -0.4 <= pooled.ci_low <= -0.2
    # treating the drawn sets as fixed (the items as the only sample) excludes 0: what the design cannot claim
    fixed = stats.compare_paired(none, seeds.mean(axis=0))
    assert fixed.ci_high < 0 and fixed.p_value < 1e-5


def test_sampled_seeds_contrast_agreeing_seeds():
    """Retrieval loses 30 of 40 items; each of 5 random seeds loses a different 2: the contrast is -0.7 on every
    seed, so the test between seeds gives its smallest value 2 / 2^5."""
    none = np.ones(40)
    retrieval = np.r_[np.zeros(30), np.ones(10)]
    seeds = np.ones((5, 40))
    for s in range(5):
        seeds[s, 30 + 2 * s : 32 + 2 * s] = 0
    contrast = stats.compare_paired(seeds, retrieval, sampled_sets=True)
    assert contrast.delta == pytest.approx(-0.75 + 0.05)
    assert contrast.p_seeds == pytest.approx(2 / 32)
    assert contrast.p_value == pytest.approx(2 / 32)  # between clusters it is far smaller
    assert contrast.p_clusters < 1e-6
    assert contrast.ci_high < 0
    assert stats.compare_paired(none, retrieval).p_value < 1e-6


def test_single_seed_is_conditional_on_the_drawn_set():
    none = np.ones(12)
    seed = np.r_[np.zeros(6), np.ones(6)]
    one = stats.compare_paired(none, seed[None, :], sampled_sets=True)
    assert (one.n_seeds, one.conditional, one.unit, one.p_seeds) == (1, True, "item", None)
    assert one.p_value == pytest.approx(2 / 64)  # McNemar: 6 lost, 0 gained
    two = stats.compare_paired(none, np.stack([seed, seed]), sampled_sets=True)
    assert (two.n_seeds, two.conditional, two.unit) == (2, True, "item")
    assert two.ci_high < 0  # the interval holds for these two sets only


def test_sign_flip_exact_convolution_for_many_lattice_units():
    # 30 units of +-1 (15 lost, 5 gained, 10 zero): the sign-flip test is the binomial test on the 20 nonzero
    d = np.r_[-np.ones(15), np.ones(5), np.zeros(10)]
    flip = stats.sign_flip(d)
    assert flip.method == "exact"
    assert flip.p_value == pytest.approx(scipy_stats.binomtest(5, 20, 0.5).pvalue)
    # multiples of 1/3 (0/1 scores averaged over 3 seeds), 18 units: convolution equals brute force
    rng = np.random.default_rng(4)
    thirds = rng.integers(-3, 4, size=18) / 3
    thirds[thirds == 0] = 1 / 3
    signs = (np.arange(2**18)[:, None] >> np.arange(18)) & 1
    brute = np.mean(np.abs((2 * signs - 1) @ thirds) >= abs(thirds.sum()) - 1e-9)
    assert stats.sign_flip(thirds).p_value == pytest.approx(brute, abs=1e-12)
    # no Monte Carlo floor: 40 units all negative give 2 / 2^40
    assert stats.sign_flip(-np.ones(40)).p_value == pytest.approx(2.0**-39)


def test_sign_flip_ties_judged_on_the_scale_of_the_terms():
    # the true sum is 0, so every pattern is as extreme; floating point leaves the observed sum at ~1e-17
    d = np.array([0.1, 0.2, -0.3] * 7)
    assert stats.sign_flip_pvalue(d[:3]) == 1.0
    assert stats.sign_flip_pvalue(d) == pytest.approx(1.0)
    continuous = np.r_[np.random.default_rng(0).normal(size=20), 0.0]
    continuous[-1] = -continuous[:-1].sum()
    assert stats.sign_flip_pvalue(continuous) == pytest.approx(1.0)


def test_monte_carlo_floor_is_reported():
    d = np.random.default_rng(2).uniform(0.5, 1.0, size=90) * np.pi  # continuous, all positive
    flip = stats.sign_flip(d, n_resamples=999)
    assert flip.method == "Monte Carlo, 999 flips" and flip.p_value == pytest.approx(1 / 1000)
    result = stats.compare_paired(np.zeros(90), d, n_resamples=999)
    assert result.min_attainable_p == pytest.approx(1 / 1000)


def test_minimum_detectable_effect_uses_t_at_g_minus_one():
    assert stats.minimum_detectable_effect(1.0, 6) == pytest.approx(2.570582 + 0.919544, abs=1e-5)
    assert stats.minimum_detectable_effect(1.0, 41) == pytest.approx(2.021075 + 0.850700, abs=1e-5)
    assert math.isinf(stats.minimum_detectable_effect(1.0, 5))  # 5 clusters: p >= 1/16 > 0.05
