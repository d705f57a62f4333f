"""Size, coverage and power of the report's tests and intervals, by simulation over the designs rh-eval allows.

A suite scores S random head sets (seeds) on every item, and items cluster into G contexts of 1 to 5 items. Both
the sets and the contexts are samples, so each simulated difference is set effect + context effect + set x
context interaction + item noise (crossed random effects), with scores that are continuous or 0/1:

- pooled random control: random set s against the unmasked run, Δ(s, i) = r_s(i) − none(i);
- contrast: the retrieval set against the random sets, Δ(s, i) = R(i) − r_s(i);
- fixed comparison: the retrieval set against the unmasked run, Δ(i) = R(i) − none(i) (contexts only).

Under each null the true mean difference is exactly 0 (0/1 scores come from probabilities that are symmetric
around their mean and never clipped); under the alternative it is ``--effect`` (0/1 scores: points/100;
continuous: in units of one difference's standard deviation). Each cell prints the rejection rate at nominal
5%, the lower coverage of the 95% interval under the null and the alternative, and the power at the effect
and at twice the effect (where 0/1 probabilities can clip at 1, so that effect is a little smaller than
stated). A size cell passes when its rate is at most 5% plus two Monte Carlo standard errors. Even a test
whose size is exactly 5% exceeds that in about 2% of cells by chance, so a cell above it is run again with
ten times the replications (a fresh, independent draw), and the second rate, against its own tighter bound,
decides; both are printed.

The pooled and contrast rows call ``stats.two_way`` (what ``compare_paired`` calls for them) on all
replications of a cell at once; the fixed rows call ``compare_paired`` itself, one replication at a time.

Two further designs (``--design``; the cells above are ``items``) score the teacher-forced negative log-likelihood
(NLL, nats) of gold solutions: unbounded and right-skewed, so the tests are told ``bounded=False``. Unmasked
per-token NLL is gamma (shape 0.7) around each question's mean-one lognormal difficulty: mean exactly 2 nats,
median 1, 2% of tokens above 10. Masking multiplies it by a factor of mean exactly 1 built from the same four
components (context = question, item = token): 1 + uniform shifts adding up to at most 0.9 (``symmetric``: the
differences are symmetric given the baseline, so the two conditions are exchangeable), or a lognormal
(``lognormal``: differences of mean 0 but skewed, as when a few head sets or questions are hit hard).

- ``token_classes``: the items are the tokens of one class and a question's tokens are a cluster of unequal
  size m: geometric with mean 3 (``geo3``), or with mean 12 where 20% of the G questions lack the class and do
  not appear (``geo12``). A cell draws its counts once, for its null, alternative and rerun alike, and prints
  how many questions have the class and the largest count. The estimate is the token-weighted mean difference,
  and the alternative multiplies the random sets' NLL (pooled) or the fixed set's (contrast, fixed) by
  1 + ``--effect`` (0.2 by default, a truth of 0.4 nats). The fixed rows run half the replications, as
  ``compare_paired`` takes milliseconds per replication on up to 80 clusters.
- ``interaction``: one value per question, the CoT solution's per-token NLL (mean 1 nat, gamma shape 3 across
  questions) minus the direct answer's (mean 2.5 nats, gamma shape 0.7: heavy-tailed), each with its own
  masking factor. Only the contrast, fixed set - random sets; the alternative multiplies the fixed set's CoT
  NLL by 1 + ``--effect`` (0.5 by default, a truth of 0.5 nats).

    python benchmarks/bench_calibration.py [--design items] [--replications 1000] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, replace

import numpy as np

from rh_tasks.report import stats

SEEDS = (3, 5, 10, 20)
CONTEXTS = (3, 8, 14, 26, 60)
ITEMS = ("1", "5", "1-5")  # items per context: fixed, or drawn from 1..5 once per cell
# Standard deviations (continuous) or half-widths of uniform probability shifts (0/1) of the set, context,
# set x context and item components; the 0/1 shifts add up to at most 0.3 around 0.5, so no probability clips.
COMPONENTS = {
    "sets dominate": (1.0, 0.25, 0.25, 0.5),
    "contexts dominate": (0.25, 1.0, 0.25, 0.5),
    "equal": (0.7, 0.7, 0.3, 0.5),
}
BINARY_SPREAD = 0.3  # for 0/1 scores the components' half-widths add up to this, around a probability of 0.5
TOKENS = {"geo3": (3.0, 0.0), "geo12": (12.0, 0.2)}  # tokens of a class per question: (mean, share lacking it)
NLL_MEAN, NLL_SHAPE, DIFFICULTY_SD = 2.0, 0.7, 0.5  # per-token NLL: gamma around a lognormal question difficulty
COT = (1.0, 3.0)  # the CoT solution's per-token NLL per question: (mean, gamma shape)
DIRECT = (2.5, 0.7)  # the direct answer's
SYMMETRIC_SPREAD = 0.9  # symmetric masking factors: the half-widths add up to this, so the factor stays in [0.1, 1.9]
LOG_SCALE = 0.6  # lognormal masking factors: the components' standard deviations on the log scale, times this


@dataclass(frozen=True)
class Cell:
    seeds: int
    contexts: int
    items: str
    scores: str
    components: str
    design: str = "items"
    counts: tuple[float, ...] = ()  # token design: tokens of the class in each question that has any


@dataclass(frozen=True)
class Design:
    """The grid of one design and the comparisons it makes."""

    seeds: tuple[int, ...]
    contexts: tuple[int, ...]
    items: tuple[str, ...]
    scores: tuple[str, ...]
    kinds: tuple[str, ...]
    effect: float  # the default alternative, in the design's unit
    fixed_share: float = 1.0  # of the replications, for fixed rows: compare_paired runs once per replication


NLL_SEEDS, QUESTIONS, MASKING = (3, 5, 10), (10, 20, 40, 80), ("symmetric", "lognormal")
DESIGNS = {
    "items": Design(SEEDS, CONTEXTS, ITEMS, ("0/1", "continuous"), ("pooled", "contrast", "fixed"), 0.2),
    "token_classes": Design(NLL_SEEDS, QUESTIONS, tuple(TOKENS), MASKING, ("pooled", "contrast", "fixed"), 0.2, 0.5),
    "interaction": Design(NLL_SEEDS, QUESTIONS, ("1",), MASKING, ("contrast",), 0.5),
}


def cluster_sizes(items: str, contexts: int, rng: np.random.Generator) -> np.ndarray:
    if items == "1-5":
        return rng.integers(1, 6, size=contexts).astype(float)
    return np.full(contexts, float(items))


@dataclass(frozen=True)
class Draw:
    """Replications of one cell: ``[reps, S, items]`` scores of the two sides, and the items' contexts."""

    baseline: np.ndarray  # [reps, 1, items]
    other: np.ndarray  # [reps, S, items]
    sizes: np.ndarray  # [G]
    index: np.ndarray  # [items] context of each item
    bounded: bool
    truth: float  # the true mean of the differences the comparison averages

    def sums(self, kind: str) -> np.ndarray:
        """``[reps, S, G]`` per-set cluster sums of the differences (the contrast subtracts the other way)."""
        delta = self.other - self.baseline if kind != "contrast" else self.baseline - self.other
        sums = np.zeros(delta.shape[:2] + (self.sizes.size,))
        np.add.at(sums, (slice(None), slice(None), self.index), delta)
        return sums


def simulate(cell: Cell, kind: str, effect: float, reps: int, rng: np.random.Generator) -> Draw:
    """``reps`` replications of one comparison in one cell, with true mean difference ``Draw.truth``."""
    if cell.design == "token_classes":
        return simulate_tokens(cell, kind, effect, reps, rng)
    if cell.design == "interaction":
        return simulate_interaction(cell, kind, effect, reps, rng)
    return simulate_items(cell, kind, effect, reps, rng)


def simulate_items(cell: Cell, kind: str, effect: float, reps: int, rng: np.random.Generator) -> Draw:
    sizes = cluster_sizes(cell.items, cell.contexts, rng)
    index = np.repeat(np.arange(cell.contexts), sizes.astype(int))
    n_items = index.size
    sd_set, sd_ctx, sd_inter, sd_item = COMPONENTS[cell.components]
    sets = cell.seeds if kind != "fixed" else 1
    shape = (reps, sets, cell.contexts)
    if cell.scores == "continuous":
        total_sd = np.sqrt(sd_set**2 + sd_ctx**2 + sd_inter**2 + sd_item**2)
        other = (
            effect * total_sd
            + sd_set * rng.standard_normal((reps, sets, 1)) * (kind != "fixed")
            + sd_ctx * rng.standard_normal((reps, 1, cell.contexts))
            + sd_inter * rng.standard_normal(shape) * (kind != "fixed")
        )[..., index] + sd_item * rng.standard_normal((reps, sets, n_items))
        if kind == "contrast":
            other = -other
        return Draw(np.zeros((reps, 1, n_items)), other, sizes, index, False, effect * total_sd)
    scale = BINARY_SPREAD / (sd_set + sd_ctx + sd_inter)

    def shift(width, size):
        return rng.uniform(-width * scale, width * scale, size=size)

    context = shift(sd_ctx, (reps, 1, cell.contexts))
    base_p = (0.5 + context)[..., index]  # the unmasked (or, for the contrast, retrieval) probability
    if kind == "fixed":
        other_p = base_p + effect + shift(sd_inter, (reps, 1, cell.contexts))[..., index]
    else:
        other_p = (
            0.5 + context + shift(sd_set, (reps, sets, 1)) + shift(sd_inter, shape) + effect * (kind == "pooled")
        )[..., index]
        base_p = base_p - effect * (kind == "contrast")
    baseline = (rng.random((reps, 1, n_items)) < base_p).astype(float)
    other = (rng.random((reps, sets, n_items)) < other_p).astype(float)
    return Draw(baseline, other, sizes, index, True, -effect if kind == "contrast" else effect)


def masking(cell: Cell, sampled: bool, reps: int, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[reps, S or 1, items]`` multiplicative effects of masking, of mean exactly 1 so that a null is exact.

    Context and item components always; sampled sets (S of them) add the set and set x context ones.
    """
    sd_set, sd_ctx, sd_inter, sd_item = COMPONENTS[cell.components]
    sets = cell.seeds if sampled else 1
    groups = int(index[-1]) + 1
    parts = [(sd_ctx, (reps, 1, groups))]
    if sampled:
        parts += [(sd_set, (reps, sets, 1)), (sd_inter, (reps, sets, groups))]
    parts.append((sd_item, (reps, sets, index.size)))
    if cell.scores == "symmetric":
        half = SYMMETRIC_SPREAD / sum(COMPONENTS[cell.components])
        shifts = [rng.uniform(-width * half, width * half, size=shape) for width, shape in parts]
    else:
        shifts = [LOG_SCALE * sd * rng.standard_normal(shape) for sd, shape in parts]
    shift = sum(shifts[:-1])[..., index] + shifts[-1]  # question-level parts spread to their items, then the items'
    if cell.scores == "symmetric":
        return np.add(shift, 1.0, out=shift)
    variance = sum((LOG_SCALE * sd) ** 2 for sd, _ in parts)
    return np.exp(shift - variance / 2, out=shift)


def drawn(cell: Cell, rng: np.random.Generator) -> Cell:
    """A token cell with its token counts drawn, once, so that its null, alternative and rerun share them (a
    question without tokens of the class is not a cluster); other cells unchanged."""
    if cell.design != "token_classes":
        return cell
    mean, lacking = TOKENS[cell.items]
    counts = rng.geometric(1 / mean, size=cell.contexts) * (rng.random(cell.contexts) >= lacking)
    return replace(cell, counts=tuple(float(c) for c in counts if c > 0))


def simulate_tokens(cell: Cell, kind: str, effect: float, reps: int, rng: np.random.Generator) -> Draw:
    """Per-token NLL: none against a fixed set (``fixed``) or S random sets (``pooled``), or the fixed set
    against the random sets (``contrast``); the side the alternative acts on is multiplied by 1 + effect."""
    sizes = np.array(cell.counts)
    index = np.repeat(np.arange(sizes.size), sizes.astype(int))
    difficulty = np.exp(DIFFICULTY_SD * rng.standard_normal((reps, 1, sizes.size)) - DIFFICULTY_SD**2 / 2)
    none = NLL_MEAN * difficulty[..., index] * rng.gamma(NLL_SHAPE, 1 / NLL_SHAPE, size=(reps, 1, index.size))
    truth = effect * NLL_MEAN
    if kind == "fixed":
        return Draw(none, (1 + effect) * none * masking(cell, False, reps, index, rng), sizes, index, False, truth)
    sampled = none * masking(cell, True, reps, index, rng)
    if kind == "pooled":
        return Draw(none, np.multiply(sampled, 1 + effect, out=sampled), sizes, index, False, truth)
    retrieval = (1 + effect) * none * masking(cell, False, reps, index, rng)
    return Draw(retrieval, sampled, sizes, index, False, truth)


def simulate_interaction(cell: Cell, kind: str, effect: float, reps: int, rng: np.random.Generator) -> Draw:
    """Per question, CoT minus direct per-token NLL under the fixed set and under S random sets; the
    alternative multiplies the fixed set's CoT NLL by 1 + effect."""
    if kind != "contrast":
        raise ValueError(f"The interaction design measures the contrast only, not {kind}.")
    index = np.arange(cell.contexts)
    (cot_mean, cot_shape), (direct_mean, direct_shape) = COT, DIRECT
    cot = cot_mean * rng.gamma(cot_shape, 1 / cot_shape, size=(reps, 1, cell.contexts))
    direct = direct_mean * rng.gamma(direct_shape, 1 / direct_shape, size=(reps, 1, cell.contexts))

    def difference(sampled: bool, scale: float) -> np.ndarray:
        cot_masked = scale * cot * masking(cell, sampled, reps, index, rng)
        return cot_masked - direct * masking(cell, sampled, reps, index, rng)

    retrieval = difference(False, 1 + effect)
    return Draw(retrieval, difference(True, 1.0), np.ones(cell.contexts), index, False, effect * cot_mean)


def crossed(cell: Cell, kind: str, effect: float, reps: int, rng: np.random.Generator) -> tuple[float, float]:
    """(rejection rate at 5%, coverage of the 95% interval) of the two-way t over ``reps`` replications."""
    draw = simulate(cell, kind, effect, reps, rng)
    result = stats.two_way(draw.sums(kind), draw.sizes, bounded=draw.bounded)
    low, high = result.interval(0.95, draw.bounded)
    return float(np.mean(result.p_value() < 0.05)), float(np.mean((low <= draw.truth) & (draw.truth <= high)))


def fixed(cell: Cell, effect: float, reps: int, rng: np.random.Generator) -> tuple[float, float]:
    """The same through ``compare_paired`` for one fixed condition against another (exact test, t interval)."""
    draw = simulate(cell, "fixed", effect, reps, rng)
    bounded = None if cell.design == "items" else draw.bounded  # items: compare_paired infers it, as for its callers
    rejected = covered = 0
    for rep in range(reps):
        result = stats.compare_paired(
            draw.baseline[rep, 0], draw.other[rep, 0], clusters=draw.index, bounded=bounded, n_resamples=999, seed=rep
        )
        rejected += result.p_value < 0.05
        covered += result.ci_low <= draw.truth <= result.ci_high
    return rejected / reps, covered / reps


def checked(rate: float, reps: int, again) -> tuple[float, str]:
    """(the rate that decides, mark): a rate above 5% + 2 Monte Carlo SEs is decided by a 10x rerun."""
    if rate <= _limit(reps):
        return rate, ""
    rerun = again(10 * reps)
    return rerun, f"  {rate:.3f} at first, rerun {rerun:.4f}" + (" SIZE" if rerun > _limit(10 * reps) else "")


def _limit(reps: int) -> float:
    return 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)


@dataclass(frozen=True)
class Row:
    kind: str
    cell: Cell
    size: float
    cover: float
    power: float
    power_double: float  # at twice the effect
    mark: str

    def line(self) -> str:
        c, seeds = self.cell, "-" if self.kind == "fixed" else str(self.cell.seeds)
        components = "contexts only" if self.kind == "fixed" else c.components
        return (
            f"{self.kind:<9}{seeds:>3}{c.contexts:>4}{c.items:>5} {c.scores:<11}{components:<18}"
            f"{self.size:>7.3f}{self.cover:>7.3f}{self.power:>7.3f}{self.power_double:>7.3f}{self.mark}"
            + (f"  [{len(c.counts)} questions with the class, largest {max(c.counts):g} tokens]" if c.counts else "")
        )


def measure(kind: str, cell: Cell, effect: float, reps: int, rng: np.random.Generator) -> Row:
    """Size (rerun when above the bound), the lowest coverage, and power at the effect and twice it, for one cell."""
    if kind == "fixed":
        run = lambda e, n: fixed(cell, e, n, rng)  # noqa: E731
    else:
        run = lambda e, n: crossed(cell, kind, e, n, rng)  # noqa: E731
    size, cover = run(0.0, reps)
    power, cover_alt = run(effect, reps)
    power_double = run(2 * effect, reps)[0]
    size, mark = checked(size, reps, lambda n: run(0.0, n)[0])
    return Row(kind, cell, size, min(cover, cover_alt), power, power_double, mark)


def summary(rows: list[Row]) -> list[str]:
    """Markdown table per test and seeds x contexts: worst size, lowest coverage and median power over the rest."""
    lines = [
        "| test | S | G | largest size | lowest coverage | median power | median power at 2x |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r.kind, r.cell.seeds, r.cell.contexts) for r in rows}, key=lambda k: (k[0] != "pooled", k))
    for kind, seeds, contexts in keys:
        mine = [r for r in rows if (r.kind, r.cell.seeds, r.cell.contexts) == (kind, seeds, contexts)]
        lines.append(
            f"| {kind} | {seeds if kind != 'fixed' else '-'} | {contexts} | {max(r.size for r in mine):.3f} | "
            f"{min(r.cover for r in mine):.3f} | {np.median([r.power for r in mine]):.2f} | "
            f"{np.median([r.power_double for r in mine]):.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replications", type=int, default=1000, help="replications per cell and hypothesis")
    parser.add_argument("--effect", type=float, help="the alternative's effect (0.2; 0.5 for the interaction)")
    parser.add_argument("--design", choices=DESIGNS, default="items", help="what the items and scores are")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few cells only (seconds)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    reps = args.replications
    started = time.perf_counter()
    design = DESIGNS[args.design]
    effect = design.effect if args.effect is None else args.effect
    fixed_reps = round(design.fixed_share * reps)
    grid = itertools.product(design.seeds, design.contexts, design.items, design.scores, COMPONENTS)
    cells = [Cell(s, g, m, scores, comp, args.design) for s, g, m, scores, comp in grid]
    if args.quick:  # about 12 cells; a stride that is a multiple of the inner factors' period would fix them
        step = len(cells) // 12
        cells = cells[:: step + (step % (len(design.items) * len(design.scores) * len(COMPONENTS)) == 0)]
    cells = [drawn(cell, rng) for cell in cells]
    print(f"{reps} replications per cell; a size passes at <= {_limit(reps):.3f}; effect {effect}")
    if fixed_reps != reps:
        print(f"fixed rows: {fixed_reps} replications; a size passes at <= {_limit(fixed_reps):.3f}")
    print(
        f"{'test':<9}{'S':>3}{'G':>4}{'m':>5} {'scores':<11}{'components':<18}"
        f"{'size':>7}{'cover':>7}{'power':>7}{'at 2x':>7}"
    )
    rows = []
    jobs = [(kind, cell) for cell in cells for kind in design.kinds if kind != "fixed"]
    if "fixed" in design.kinds:
        fixed_cells = sorted({(c.contexts, c.items, c.scores) for c in cells})
        jobs += [
            ("fixed", drawn(Cell(1, g, m, scores, "contexts dominate", args.design), rng))
            for g, m, scores in fixed_cells
        ]
    for kind, cell in jobs:
        rows.append(measure(kind, cell, effect, fixed_reps if kind == "fixed" else reps, rng))
        print(rows[-1].line(), flush=True)
    print()
    print("\n".join(summary(rows)))
    print()
    for kind in design.kinds:
        mine = [r for r in rows if r.kind == kind]
        covered = [r.cover for r in mine if r.cell.contexts >= 8 and (kind == "fixed" or r.cell.seeds >= 5)]
        print(
            f"{kind}: largest size {max(r.size for r in mine):.3f}; lowest coverage (G >= 8, S >= 5) "
            f"{min(covered, default=float('nan')):.3f}"
        )
    failures = sum(r.mark.endswith("SIZE") for r in rows)
    print(f"{failures} size cells fail (after their rerun); {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
