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


def test_compare_paired_picks_the_test():
    independent = stats.compare_paired([1, 1, 1, 0], [0, 0, 1, 0])
    assert (independent.test, independent.unit, independent.n_clusters) == ("exact McNemar", "item", 4)
    assert independent.delta == pytest.approx(-0.5)
    assert independent.p_exact == pytest.approx(0.5)  # 2 lost, 0 gained: 2 / 4
    assert independent.min_attainable_p == pytest.approx(0.5)  # 2 discordant pairs: 2 / 2^2, not 2 / 2^4
    clustered = stats.compare_paired([1, 1, 1, 0], [0, 0, 1, 0], clusters=["a", "a", "b", "b"])
    assert clustered.test == "sign-flip on cluster sums (exact)" and clustered.unit == "cluster"
    assert clustered.p_value == 1.0  # one nonzero cluster sum (-2): both of its signs are as extreme
    assert (clustered.n_clusters, clustered.min_attainable_p) == (2, 1.0)  # the zero cluster does not count
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
    # the floor counts the 4 nonzero cluster sums the test uses, not all 6 contexts: 2 / 2^4
    assert (result.unit, result.n_clusters, result.min_attainable_p) == ("cluster", 6, pytest.approx(1 / 8))
    # t interval on the clustered SE: cluster means -1 -1 -1 0 0 +1, residuals about -1/3, so
    # SE^2 = sum(e_g^2) / (1 - 1/6) / 6^2 with e_g = mean_g + 1/3; 5 degrees of freedom
    e = np.array([-1, -1, -1, 0, 0, 1]) + 1 / 3
    se = math.sqrt(np.sum(e**2) / (5 / 6) / 36 + 1 / 8**2)  # + Agresti & Min's (1 / (G + 2))^2 for 0/1 scores
    half = scipy_stats.t.ppf(0.975, 5) * se
    assert (result.se_design, result.df) == (pytest.approx(se), 5)
    assert (result.ci_low, result.ci_high) == (-1.0, pytest.approx(-1 / 3 + half))  # within [-1, 1]
    assert -1 / 3 - half < -1 < 0 < result.ci_high
    # the same items taken as independent: McNemar on 18 lost, 6 gained, and an interval that excludes 0
    naive = stats.compare_paired(baseline, treated)
    assert naive.test == "exact McNemar"
    assert naive.p_exact == pytest.approx(2 * sum(math.comb(24, j) for j in range(7)) / 2**24)
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
    assert (pooled.unit, pooled.n_seeds, pooled.conditional, pooled.df) == ("seed and item", 5, False, 4)
    assert pooled.se_seeds == pytest.approx(0.1)  # SD of (0, 0, 0, 0, -0.5) / sqrt(5)
    # between items: seed-averaged differences -0.2 (20 items) and 0 (20), residuals -+0.1, CR2 leverage 1/40
    se = math.sqrt(0.1**2 + 40 * 0.1**2 / (1 - 1 / 40) / 40**2 + 1 / 42**2)
    assert pooled.se_design == pytest.approx(se)
    assert pooled.p_value == pytest.approx(2 * scipy_stats.t.sf(0.1 / se, 4))
    half = scipy_stats.t.ppf(0.975, 4) * se
    assert (pooled.ci_low, pooled.ci_high) == (pytest.approx(-0.1 - half), pytest.approx(-0.1 + half))
    assert pooled.p_exact is None and pooled.min_attainable_p == 0.0
    # treating the drawn sets as fixed (the items as the only sample) excludes 0: what the design cannot claim
    fixed = stats.compare_paired(none, seeds.mean(axis=0))
    assert fixed.ci_high < 0 and fixed.p_value < 0.01


def test_sampled_seeds_contrast_agreeing_seeds():
    """Retrieval loses 30 of 40 items; each of 5 random seeds loses a different 2: the contrast is -0.7 on every
    seed, so all of its spread is between items (-1 on 30 items, +0.2 on 10)."""
    none = np.ones(40)
    retrieval = np.r_[np.zeros(30), np.ones(10)]
    seeds = np.ones((5, 40))
    for s in range(5):
        seeds[s, 30 + 2 * s : 32 + 2 * s] = 0
    contrast = stats.compare_paired(seeds, retrieval, sampled_sets=True)
    assert contrast.delta == pytest.approx(-0.7)
    assert contrast.se_seeds == pytest.approx(0.0)
    se = math.sqrt((30 * 0.3**2 + 10 * 0.9**2) / (1 - 1 / 40) / 40**2 + 1 / 42**2)
    assert contrast.se_design == pytest.approx(se)
    assert contrast.p_value == pytest.approx(2 * scipy_stats.t.sf(0.7 / se, 4))
    assert contrast.ci_high < 0
    assert stats.compare_paired(none, retrieval).p_value < 1e-6


def test_two_way_hand_computed():
    """3 sets x 4 items of continuous differences: set means 0.2 0.4 0.0, item means 0.2 0.4 0.0 0.2."""
    d = np.array([[0.2, 0.4, 0.0, 0.2], [0.4, 0.6, 0.2, 0.4], [0.0, 0.2, -0.2, 0.0]])
    result = stats.compare_paired(np.zeros(4) - 5, d - 5, sampled_sets=True)  # scores outside [0, 1]: no floor
    # var(set means) / 3 = 0.04 / 3; items: residuals 0 .2 -.2 0, sum of squares 0.08 / (1 - 1/4) / 16
    assert result.se_design == pytest.approx(math.sqrt(0.04 / 3 + 0.08 / 0.75 / 16))  # sqrt(0.02)
    assert result.df == 2  # min(S - 1, G - 1)
    # with 2 degrees of freedom, P(|T| >= t) = 1 - t / sqrt(t^2 + 2); here t = sqrt(2)
    assert result.p_value == pytest.approx(1 - math.sqrt(2) / 2)
    half = 4.302653 * math.sqrt(0.02)
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.2 - half, abs=1e-6), pytest.approx(0.2 + half, abs=1e-6))


def test_cluster_degrees_of_freedom():
    assert stats.cluster_df(np.ones(8)) == pytest.approx(7)
    assert stats.cluster_df(np.full(5, 3.0)) == pytest.approx(4)
    # one large cluster carries most of the weight: fewer than G - 1 (Bell & McCaffrey), never below 1
    lopsided = stats.cluster_df(np.array([5.0, 1.0, 1.0]))
    assert 1 <= lopsided < 1.5
    assert stats.cluster_df(np.array([1.0, 2, 3, 4, 5, 1, 2, 3])) < 7
    # the O(G) traces equal tr(A)^2 / tr(A^2) of the explicit G x G matrix
    for sizes in np.random.default_rng(0).integers(1, 6, size=(5, 12)).astype(float):
        w = sizes / sizes.sum()
        residual = np.eye(12) - np.outer(np.ones(12), w)
        a = residual.T @ np.diag(w**2 / (1 - w)) @ residual
        assert stats.cluster_df(sizes) == pytest.approx(np.trace(a) ** 2 / np.trace(a @ a))
    assert stats.cluster_df(np.ones(14_042)) == 14_041  # a full MMLU run, without a 14k x 14k matrix


def test_single_seed_is_conditional_on_the_drawn_set():
    none = np.ones(12)
    seed = np.r_[np.zeros(6), np.ones(6)]
    one = stats.compare_paired(none, seed[None, :], sampled_sets=True)
    assert (one.n_seeds, one.conditional, one.unit, one.se_seeds) == (1, True, "item", None)
    assert one.p_value == pytest.approx(2 / 64)  # McNemar: 6 lost, 0 gained; its t test is smaller
    two = stats.compare_paired(none, np.stack([seed, seed]), sampled_sets=True)
    assert (two.n_seeds, two.conditional, two.unit) == (2, True, "item")
    assert two.ci_high < 0  # the interval holds for these two sets only


def test_no_zero_width_interval_where_the_design_cannot_know_the_effect():
    # one item (one cluster): no spread can be seen, so the interval is all a [0, 1] score allows
    one = stats.compare_paired([0.0], [0.0])
    assert (one.ci_low, one.ci_high, one.p_value) == (-1.0, 1.0, 1.0)
    pooled_one = stats.compare_paired([0.0], np.zeros((10, 1)), sampled_sets=True)
    assert (pooled_one.ci_low, pooled_one.ci_high, pooled_one.p_value) == (-1.0, 1.0, 1.0)
    # 8 needles, 2 seeds, nothing changed: an interval of width 2 t(7) / (8 + 2), not [0, 0]
    unchanged = stats.compare_paired(np.ones(8), np.ones((2, 8)), sampled_sets=True)
    half = scipy_stats.t.ppf(0.975, 7) / 10
    assert (unchanged.ci_low, unchanged.ci_high) == (pytest.approx(-half), pytest.approx(half))
    # 10 seeds on 57 unchanged questions: min(9, 56) degrees of freedom
    mmlu = stats.compare_paired(np.ones(57), np.ones((10, 57)), sampled_sets=True)
    assert mmlu.ci_high == pytest.approx(scipy_stats.t.ppf(0.975, 9) / 59)
    # unbounded scores that all move by exactly the same amount: no spread to scale an interval by, and no claim
    same = stats.compare_paired(np.full(5, 2.0), np.full((4, 5), 2.5), sampled_sets=True)
    assert math.isnan(same.ci_low) and math.isnan(same.ci_high) and same.p_value == 1.0
    # every cluster loses everything: not the single point [-1, -1]
    lost = stats.compare_paired(np.ones(26), np.zeros(26))
    assert lost.ci_low == -1.0 and -1.0 < lost.ci_high < -0.8


def test_interval_agrees_with_the_exact_test_when_contexts_are_few():
    # 3 contexts that all lose: the exact test gives 2 / 2^3 = 0.25, so the interval must reach 0
    result = stats.compare_paired(np.ones(9), np.zeros(9), clusters=np.repeat(np.arange(3), 3))
    assert result.p_exact == pytest.approx(0.25) and result.p_value == pytest.approx(0.25)
    assert result.ci_low == -1.0 and result.ci_high == 0.0


@pytest.mark.parametrize("sampled", [False, True])
def test_a_significant_row_always_has_an_interval_that_excludes_zero(sampled):
    rng = np.random.default_rng(8)
    for _ in range(300):
        items, sets = int(rng.integers(3, 30)), 5 if sampled else 1
        clusters = rng.integers(0, max(2, items // 2), size=items)
        baseline = (rng.random(items) < rng.uniform(0.2, 0.9)).astype(float)
        treated = (rng.random((sets, items)) < rng.uniform(0.1, 0.9)).astype(float)
        r = stats.compare_paired(baseline, treated if sampled else treated[0], clusters=clusters, sampled_sets=sampled)
        assert (r.p_value < 0.05) == (not r.ci_low <= 0 <= r.ci_high), r


def test_sums_within_rounding_of_zero_are_zero():
    # each context's differences 0.1 + 0.2 - 0.3 add up to ~1e-17, not a tiny effect with a sign
    baseline = np.tile([0.5, 0.5, 0.5], 10)
    treated = np.tile([0.6, 0.7, 0.2], 10)
    result = stats.compare_paired(baseline, treated, clusters=np.repeat(np.arange(10), 3))
    assert result.p_exact == 1.0 and result.p_value == 1.0
    assert result.min_attainable_p == 1.0  # no cluster enters the test


def test_rank_among_sets_hand_computed():
    # the fixed set lowers the score more than 3 of 5 sets; one ties (at least as damaging), one does less
    rank = stats.rank_among_sets([-0.1, -0.2, 0.0, 0.05, -0.3])
    assert (rank.beaten, rank.sets, rank.p_value) == (3, 5, pytest.approx(3 / 6))
    assert stats.rank_among_sets(-np.ones(10)).p_value == pytest.approx(1 / 11)
    assert stats.seeds_for_rank(0.05) == 19 and stats.seeds_for_rank(0.01) == 99


def _crossed_null(rng, reps, seeds, contexts, components, effect=0.0):
    """``[reps, S, G]`` sums of set + context + interaction + noise, one item per context, true mean ``effect``."""
    set_sd, context_sd, inter_sd = components
    return (
        effect
        + set_sd * rng.standard_normal((reps, seeds, 1))
        + context_sd * rng.standard_normal((reps, 1, contexts))
        + inter_sd * rng.standard_normal((reps, seeds, contexts))
    )


@pytest.mark.parametrize(
    "seeds,contexts,components", [(10, 14, (1.0, 1.0, 0.5)), (20, 26, (1.0, 1.0, 0.5)), (10, 14, (0.3, 1.0, 0.3))]
)
def test_two_way_test_holds_its_size_under_crossed_nulls(seeds, contexts, components):
    """The designs where the larger of two sign-flip p-values rejected 8.9%, 11.5% and 7.3% of true nulls."""
    rng = np.random.default_rng(seeds * contexts)
    reps = 4000
    sums = _crossed_null(rng, reps, seeds, contexts, components)
    result = stats.two_way(sums, np.ones(contexts), bounded=False)
    size = np.mean(result.p_value() < 0.05)
    assert size <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)
    low, high = result.interval()
    assert np.mean((low <= 0) & (0 <= high)) >= 0.94
    # and it is not valid by never rejecting: an effect of 4 true standard errors of the mean is found
    set_sd, context_sd, inter_sd = components
    se = math.sqrt(set_sd**2 / seeds + context_sd**2 / contexts + inter_sd**2 / (seeds * contexts))
    alternative = stats.two_way(
        _crossed_null(rng, reps, seeds, contexts, components, 4 * se), np.ones(contexts), bounded=False
    )
    assert np.mean(alternative.p_value() < 0.05) >= 0.8


def test_two_way_matches_compare_paired():
    rng = np.random.default_rng(3)
    baseline = rng.random(12)
    treated = rng.random((6, 12))
    clusters = np.repeat(np.arange(4), 3)
    r = stats.compare_paired(baseline, treated, clusters=clusters, sampled_sets=True)
    sums = (treated - baseline).reshape(6, 4, 3).sum(axis=-1)
    direct = stats.two_way(sums, np.full(4, 3.0), bounded=True)
    assert (r.delta, r.se_design, r.df) == (pytest.approx(float(direct.delta)), pytest.approx(float(direct.se)), 3)
    assert r.p_value == pytest.approx(float(direct.p_value()))


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


def test_unbounded_scores_that_happen_to_lie_in_zero_one_get_no_zero_one_handling():
    """Per-token NLL of easy tokens, all under 1 nat: 3 questions of 2 tokens."""
    baseline = [0.05, 0.9, 0.1, 0.2, 0.95, 0.3]
    treated = [0.95, 0.85, 0.9, 0.6, 0.05, 0.1]
    questions = [0, 0, 1, 1, 2, 2]
    nll = stats.compare_paired(baseline, treated, clusters=questions, bounded=False)
    # cluster sums 0.85 1.2 -1.1, delta 0.95 / 6; CR2: sum of e_g^2 / (1 - 2/6) / 6^2, and no (1 / (G + 2))^2
    delta = 0.95 / 6
    e = np.array([0.85, 1.2, -1.1]) - 2 * delta
    se = math.sqrt(np.sum(e**2) / (2 / 3) / 36)
    half = scipy_stats.t.ppf(0.975, 2) * se
    assert (nll.delta, nll.se_design, nll.df) == (pytest.approx(delta), pytest.approx(se), 2)
    assert (nll.ci_low, nll.ci_high) == (pytest.approx(delta - half), pytest.approx(delta + half))
    assert nll.ci_low < -1 and nll.ci_high > 1  # not clipped to what a difference of [0, 1] scores allows
    # left to infer, the same values pass for [0, 1] scores
    inferred = stats.compare_paired(baseline, treated, clusters=questions)
    assert inferred.se_design == pytest.approx(math.sqrt(se**2 + 1 / 5**2))
    assert (inferred.ci_low, inferred.ci_high) == (-1.0, 1.0)
