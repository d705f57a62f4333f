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
