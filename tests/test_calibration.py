"""The calibration benchmark's simulations: true nulls, and a few of its cells measured small and fast."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_calibration.py"
_SPEC = importlib.util.spec_from_file_location("bench_calibration", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_calibration"] = bench  # dataclasses look their module up while the class is built
_SPEC.loader.exec_module(bench)


@pytest.mark.parametrize("kind", ["pooled", "contrast", "fixed"])
@pytest.mark.parametrize("scores", ["0/1", "continuous"])
def test_simulated_nulls_have_mean_zero_and_effects_their_size(kind, scores):
    cell = bench.Cell(5, 14, "1-5", scores, "equal")
    rng = np.random.default_rng(1)
    for effect in (0.0, 0.2):
        draw = bench.simulate(cell, kind, effect, 4000, rng)
        mean = draw.sums(kind).sum(axis=-1).mean() / draw.sizes.sum()
        assert mean == pytest.approx(draw.truth, abs=0.01)
        if scores == "0/1":
            assert set(np.unique(draw.other)) <= {0.0, 1.0} and draw.bounded


def test_a_few_cells_hold_their_size_and_find_effects():
    rng = np.random.default_rng(2)
    for kind, cell in [
        ("pooled", bench.Cell(10, 26, "1", "0/1", "equal")),
        ("contrast", bench.Cell(10, 14, "5", "continuous", "sets dominate")),
        ("fixed", bench.Cell(1, 26, "1-5", "0/1", "contexts dominate")),
    ]:
        row = bench.measure(kind, cell, 0.2, 400, rng)
        assert not row.mark.endswith("SIZE"), row  # at most 5% + 2 MC SEs, after its rerun when above
        assert row.cover >= 0.9
        assert row.power_double > row.power > row.size and row.power_double > 0.25


def test_summary_reports_every_design_once():
    cell = bench.Cell(3, 8, "1", "0/1", "equal")
    rows = [bench.Row("pooled", cell, 0.04, 0.96, 0.3, 0.8, ""), bench.Row("pooled", cell, 0.05, 0.95, 0.5, 0.9, "")]
    table = bench.summary(rows)
    assert table[2] == "| pooled | 3 | 8 | 0.050 | 0.950 | 0.40 | 0.85 |"


@pytest.mark.parametrize(
    "design,kind",
    [
        ("token_classes", "pooled"),
        ("token_classes", "contrast"),
        ("token_classes", "fixed"),
        ("interaction", "contrast"),
    ],
)
@pytest.mark.parametrize("scores", ["symmetric", "lognormal"])
def test_simulated_nll_nulls_are_exact_for_skewed_scores(design, kind, scores):
    """Mean-one masking factors on a gamma NLL: the null's mean is 0 and the effect's is its truth, to Monte Carlo
    error (a lognormal factor without its -sigma^2 / 2 correction is off by about 0.2 nats or more)."""
    rng = np.random.default_rng(1)
    cell = bench.drawn(bench.Cell(5, 20, "geo12" if design == "token_classes" else "1", scores, "equal", design), rng)
    for effect in (0.0, 0.2):
        draw = bench.simulate(cell, kind, effect, 4000, rng)
        means = draw.sums(kind).sum(axis=-1).mean(axis=-1) / draw.sizes.sum()  # [reps]
        assert means.mean() == pytest.approx(draw.truth, abs=4 * means.std() / np.sqrt(means.size))
        assert not draw.bounded and (design == "interaction" or min(draw.baseline.min(), draw.other.min()) >= 0)


def test_a_few_nll_cells_hold_their_size_and_find_effects():
    rng = np.random.default_rng(3)
    for kind, cell, effect in [
        ("pooled", bench.Cell(10, 80, "geo3", "symmetric", "equal", "token_classes"), 0.2),
        ("contrast", bench.Cell(5, 40, "geo12", "symmetric", "sets dominate", "token_classes"), 0.2),
        ("fixed", bench.Cell(1, 40, "geo3", "symmetric", "contexts dominate", "token_classes"), 0.2),
        ("contrast", bench.Cell(10, 80, "1", "symmetric", "equal", "interaction"), 0.5),
    ]:
        row = bench.measure(kind, bench.drawn(cell, rng), effect, 400, rng)
        assert not row.mark.endswith("SIZE"), row
        assert row.cover >= 0.9
        assert row.power_double > row.power > row.size and row.power_double > 0.25
