"""Report figures as inline SVG strings, drawn with matplotlib's object API (no pyplot, no global backend).

Text is rendered as glyph paths and comments are stripped, so no label (e.g. a task name) reaches the HTML as
markup; ids are salted per figure so several SVGs can share one page.
"""

from __future__ import annotations

import io
import math
import re
import textwrap

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .cot_classes import ClassRow
from .failures import OUTCOMES
from .narrative import format_p, format_value, stars
from .schema import Estimate, FailureBreakdown, ForestRow, HeadMap, Heatmap, MemoryPoint, SweepPoint

# gkamradt/LLMTest_NeedleInAHaystack CreateVizFromLLMTesting.ipynb: red -> yellow -> green over 0-100.
GKAMRADT = LinearSegmentedColormap.from_list("gkamradt", ["#F0496E", "#EBB839", "#0CD79F"])
_OUTCOME_COLOURS = dict(zip(OUTCOMES, ("#0CD79F", "#EBB839", "#F0496E", "#7B61FF", "#9E9E9E")))
_SERIES_STYLE = {"retrieval": ("#C62828", "o"), "random": ("#1565C0", "s")}
_HEAD_MARK = {"retrieval": "black", "random": "white"}  # visible on viridis' bright and dark ends
_STRIPPED = re.compile(r"<!--.*?-->|<metadata>.*?</metadata>", re.DOTALL)  # comments echo text; metadata is noise
_PANELS_PER_ROW = 4
_LINE_STYLES = ("-", "--", ":", "-.")


def _svg(fig: Figure, salt: str) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return _STRIPPED.sub("", text[text.index("<svg") :])


def forest(rows: list[ForestRow], salt: str, several: bool | None = None) -> str:
    """The headline figure: per task (and model), the causal contrast with its interval, filled and starred when
    significant after Holm, the retrieval and random deltas it is made of, and the unmasked score as text.

    Scores and losses sit in panels of their own, each on its own axis: points beside nats would hide the nats.
    ``several`` names each row's model (default: when the rows come from several models).
    """
    several = len({r.model for r in rows}) > 1 if several is None else several
    ks = {r.k for r in rows}
    panels: dict[str, list[ForestRow]] = {}
    for row in rows:
        panels.setdefault(_forest_scale(row), []).append(row)
    sizes = [len(panel) for panel in panels.values()]
    fig = Figure(layout="constrained", figsize=(10.0, 1.3 + 0.5 * len(rows) + 0.7 * (len(panels) - 1)))
    grid = fig.subplots(len(panels), 2, width_ratios=[3, 2.6], height_ratios=sizes, squeeze=False)
    swept = {r.model for r in rows if sum(o.model == r.model and o.task == r.task for o in rows) > 1}
    for (ax, table), (scale, panel) in zip(grid, panels.items()):
        positions = np.arange(len(panel))[::-1]  # the first row on top
        ax.axvline(0, color="#555555", linewidth=0.8)
        for y, row in zip(positions, panel):
            for part, offset, kind in ((row.retrieval, 0.2, "retrieval"), (row.random, -0.2, "random")):
                if part is not None and part != row.effect:
                    colour, marker = _SERIES_STYLE[kind]
                    _whisker(ax, part, y + offset, row.bounded, colour=colour, marker=marker, size=4, filled=True)
            _whisker(ax, row.effect, y, row.bounded, colour="black", marker="D", size=7, filled=row.significant)
        ax.set_yticks(positions, [_forest_label(row, several, row.model in swept) for row in panel], fontsize=9)
        ax.set_ylim(-0.6, len(panel) - 0.4)
        ax.set_xlabel(scale, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="#DDDDDD", linewidth=0.6)
        ax.set_axisbelow(True)
        table.sharey(ax)
        _forest_table(table, panel, positions)
    grid[0][0].set_title(
        "\u0394 retrieval heads \u2212 \u0394 random heads" + (f" at K = {ks.pop()}" if len(ks) == 1 else ""),
        fontsize=9,
    )
    fig.legend(handles=_forest_legend(), loc="outside lower center", ncols=4, fontsize=7, frameon=False)
    return _svg(fig, salt)


def _forest_scale(row: ForestRow) -> str:
    """The axis a row belongs on: scores in points, losses (positive is damage), other scores as they are."""
    if row.bounded:
        return "\u0394 score, masked \u2212 unmasked (points)"
    if not row.higher_is_better:
        return f"\u0394 {row.metric}, masked \u2212 unmasked (a loss: positive is damage)"
    return "\u0394 score, masked \u2212 unmasked"


def _whisker(ax, part: Estimate, y: float, bounded: bool, *, colour: str, marker: str, size: float, filled: bool):
    scale = 100 if bounded else 1
    if part.ci_low is not None and part.ci_high is not None:
        ax.plot([part.ci_low * scale, part.ci_high * scale], [y, y], color=colour, linewidth=1.4 if size > 5 else 0.9)
    ax.plot(
        part.delta * scale,
        y,
        marker=marker,
        markersize=size,
        color=colour,
        markerfacecolor=colour if filled else "white",
        markeredgewidth=1.2,
        linestyle="none",
    )


def _forest_label(row: ForestRow, several: bool, swept: bool) -> str:
    """The row's label; with several models, the model's name (and its K, unless its rows name one K each)."""
    name = textwrap.fill(row.label, 32)
    if not several:
        return name
    return f"{row.model.rstrip('/').rsplit('/', 1)[-1]}" + ("" if swept else f", K = {row.k}") + f"\n{name}"


def _forest_table(ax, rows: list[ForestRow], positions: np.ndarray) -> None:
    """Text columns beside the forest: unmasked score, the plotted effect with its interval, Holm p."""
    ax.axis("off")
    columns = (0.0, 0.22, 0.87)
    transform = ax.get_yaxis_transform()  # x in axes fractions, y in rows
    top = len(rows) - 0.4
    for x, header in zip(columns, ("unmasked", "\u0394 [CI]", "Holm p")):
        ax.text(x, top, header, transform=transform, fontsize=9, fontweight="bold", va="bottom")
    for y, row in zip(positions, rows):
        e = row.effect
        interval = (
            f"{_signed(e.delta, row.bounded)} [{_signed(e.ci_low, row.bounded)}, {_signed(e.ci_high, row.bounded)}]"
        )
        cells = (format_value(row.baseline, row.bounded), interval + stars(e.p_holm), format_p(e.p_holm))
        for x, text in zip(columns, cells):
            weight = "bold" if row.significant and x == columns[1] else "normal"
            ax.text(x, y, text, transform=transform, fontsize=9, va="center", fontweight=weight)


def _signed(value: float | None, bounded: bool) -> str:
    return format_value(value, bounded, signed=True)


def _forest_legend() -> list[Line2D]:
    def mark(label, marker, colour, filled, size):
        face = colour if filled else "white"
        return Line2D([], [], marker=marker, color=colour, markerfacecolor=face, markersize=size, label=label)

    return [
        mark("contrast, significant after Holm", "D", "black", True, 6),
        mark("contrast, not significant", "D", "black", False, 6),
        mark("\u0394 retrieval heads vs none", "o", _SERIES_STYLE["retrieval"][0], True, 4),
        mark("\u0394 random heads vs none", "s", _SERIES_STYLE["random"][0], True, 4),
    ]


def heatmap(grid: Heatmap, salt: str) -> str:
    """Depth x length score grids, one panel per condition, in gkamradt's colour scale."""
    panels = grid.panels
    columns = min(len(panels), _PANELS_PER_ROW)
    rows = math.ceil(len(panels) / columns)
    lengths, depths = grid.lengths, grid.depths
    fig = Figure(
        layout="constrained",
        figsize=(0.6 + columns * max(2.6, 0.45 * len(lengths)), 0.6 + rows * max(2.4, 0.3 * len(depths))),
    )
    axes = fig.subplots(rows, columns, squeeze=False)
    limits = (0, 100) if grid.scale == 100 else (None, None)
    cmap = GKAMRADT.with_extremes(bad="#DDDDDD")
    image = None
    for number, (ax, panel) in enumerate(zip(axes.flat, panels)):
        values = np.array([[np.nan if v is None else v for v in row] for row in panel.values], dtype=float)
        image = ax.imshow(values, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto", interpolation="nearest")
        ax.set_title(panel.condition, fontsize=9)
        ax.set_xticks(range(len(lengths)), [f"{l:g}" for l in lengths], fontsize=7, rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=7)
        ax.set_xlabel("Context length (tokens)", fontsize=8)
        if number % columns == 0:
            ax.set_ylabel("Depth (%)", fontsize=8)
        if values.size <= 80:
            for (r, c), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, shrink=0.8, label=grid.metric)
    return _svg(fig, salt)


def head_map(head_map: HeadMap, salt: str) -> str:
    """Layer x head retrieval scores; the masked heads of the retrieval and of the random conditions marked."""
    means = np.array(head_map.means, dtype=float)
    kinds = [
        ("retrieval", [c for c in head_map.masked if c.kind == "retrieval"]),
        ("random", [c for c in head_map.masked if c.kind == "random"]),
    ]
    kinds = [(kind, masked) for kind, masked in kinds if masked]
    layers, heads = means.shape
    fig = Figure(layout="constrained", figsize=(0.8 + len(kinds) * max(3.0, 0.3 * heads), max(3.0, 0.18 * layers + 1)))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    image = None
    for ax, (kind, masked) in zip(axes, kinds):
        image = ax.imshow(means, cmap="viridis", vmin=0, aspect="auto", interpolation="nearest")
        counts: dict[tuple[int, int], int] = {}
        for condition in masked:
            for layer, head in condition.heads:
                counts[(layer, head)] = counts.get((layer, head), 0) + 1
        if counts:
            xs, ys = [h for _, h in counts], [l for l, _ in counts]
            ax.scatter(
                xs,
                ys,
                s=[18 + 10 * c for c in counts.values()],
                marker=_SERIES_STYLE[kind][1],
                facecolors="none",
                edgecolors=_HEAD_MARK[kind],
                linewidths=1.6,
            )
        title = masked[0].pool_label
        ax.set_title(title + (f" ({len(masked)} seeds)" if kind == "random" else ""), fontsize=9)
        ax.set_xlabel("Head", fontsize=8)
        ax.set_ylabel("Layer", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, label="mean retrieval score")
    return _svg(fig, salt)


def k_sweep(rows: list[SweepPoint], bounded: dict[str, bool], salt: str) -> str:
    """Δ against K with CIs, one panel per task; retrieval and pooled-random series side by side."""
    panels: dict[tuple[str, str, str], list[SweepPoint]] = {}
    for row in rows:
        panels.setdefault((row.task, row.filter, row.metric), []).append(row)
    columns = min(len(panels), 3)
    fig = Figure(layout="constrained", figsize=(0.6 + 3.6 * columns, 0.4 + 2.9 * math.ceil(len(panels) / columns)))
    axes = fig.subplots(math.ceil(len(panels) / columns), columns, squeeze=False)
    for ax, ((task, f, metric), series_rows) in zip(axes.flat, panels.items()):
        scale = 100 if bounded.get(task) else 1
        ax.axhline(0, color="#555555", linewidth=0.8)
        variants: dict[str, int] = {}  # unit, mode or phase variants of one kind get their own line style
        for series in sorted({r.series for r in series_rows}):
            points = sorted((r for r in series_rows if r.series == series), key=lambda r: r.k)
            kind = points[0].kind
            colour, marker = _SERIES_STYLE.get(kind, ("#444444", "^"))
            variant = variants[kind] = variants.get(kind, -1) + 1
            ks = np.array([p.k for p in points], dtype=float)
            delta = np.array([p.delta for p in points]) * scale
            errors = np.array([[p.delta - p.ci_low, p.ci_high - p.delta] for p in points]).T * scale
            offset = (0.04 + 0.05 * variant) * (1 if kind == "random" else -1)
            ax.errorbar(
                ks * (1 + offset),
                delta,
                yerr=errors,
                color=colour,
                marker=marker,
                capsize=3,
                label=series,
                linewidth=1.2,
                linestyle=_LINE_STYLES[variant % len(_LINE_STYLES)],
                markersize=4,
            )
        ax.set_xscale("log", base=2)
        ks_all = sorted({r.k for r in series_rows})
        ax.set_xticks(ks_all, [str(k) for k in ks_all])
        ax.set_title(task + (f" ({f})" if f != "none" else ""), fontsize=9)
        ax.set_xlabel("K (heads masked)", fontsize=8)
        ax.set_ylabel(f"\u0394 {metric}" + (" (points)" if scale == 100 else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return _svg(fig, salt)


_KEEP_STYLE = {  # the kept set of a windowed condition -> colour, marker, legend name
    "retrieval": ("#C62828", "o", "retrieval kept"),
    "random": ("#1565C0", "s", "random kept"),
    "none": ("#616161", "^", "none kept"),
    "explicit": ("#6A1B9A", "D", "listed heads kept"),
}


def memory(points: list[MemoryPoint], bounded: dict[str, bool], salt: str) -> str:
    """Score against the kept share of the KV cache, one panel per task (its first filter): a line per kept set
    and window, with intervals, and the unmasked score as the full cache."""
    panels: dict[str, list[MemoryPoint]] = {}
    for p in points:
        if p.keep != "contrast":
            panels.setdefault(p.task, []).append(p)
    columns = min(len(panels), 2)
    fig = Figure(layout="constrained", figsize=(0.6 + 4.6 * columns, 0.4 + 3.2 * math.ceil(len(panels) / columns)))
    axes = fig.subplots(math.ceil(len(panels) / columns), columns, squeeze=False)
    for ax, (task, task_points) in zip(axes.flat, panels.items()):
        first = task_points[0].filter
        task_points = [p for p in task_points if p.filter == first]
        scale = 100 if bounded.get(task) else 1
        ax.axhline(task_points[0].baseline * scale, color="#555555", linewidth=0.8, linestyle="--", label="full cache")
        windows = sorted({p.window for p in task_points})
        for (keep, window), series in _memory_series(task_points).items():
            colour, marker, name = _KEEP_STYLE[keep]
            x = np.array([p.kept_fraction for p in series]) * 100
            score = np.array([p.baseline + p.comparison.result.delta for p in series])
            low = np.array([p.baseline + p.comparison.result.ci_low for p in series], dtype=float)
            high = np.array([p.baseline + p.comparison.result.ci_high for p in series], dtype=float)
            if scale == 100:  # a score in [0, 1] cannot leave it, whatever the interval of its Δ
                low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
            errors = np.nan_to_num(np.array([score - low, high - score])) * scale
            score = score * scale
            ax.errorbar(
                x,
                score,
                yerr=errors,
                color=colour,
                marker=marker,
                capsize=3,
                linewidth=1.2,
                markersize=4,
                linestyle=_LINE_STYLES[windows.index(window) % len(_LINE_STYLES)],
                label=f"{name}, window {window}",
            )
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.set_title(task + (f" ({first})" if first != "none" else ""), fontsize=9)
        ax.set_xlabel("kept share of the KV cache (KV groups × positions)", fontsize=8)
        ax.set_ylabel(task_points[0].metric + (" (points)" if scale == 100 else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return _svg(fig, salt)


def _memory_series(points: list[MemoryPoint]) -> dict[tuple[str, int], list[MemoryPoint]]:
    series: dict[tuple[str, int], list[MemoryPoint]] = {}
    for p in sorted(points, key=lambda p: (p.window, p.kept_fraction)):
        series.setdefault((p.keep, p.window), []).append(p)
    return series


def failure_bars(breakdown: FailureBreakdown, salt: str) -> str:
    """Share of each failure outcome per condition, as stacked horizontal bars."""
    panels = breakdown.panels
    fig = Figure(layout="constrained", figsize=(6.5, 0.8 + 0.35 * len(panels)))
    ax = fig.subplots()
    left = np.zeros(len(panels))
    positions = np.arange(len(panels))[::-1]
    for outcome in OUTCOMES:
        share = np.array([p.counts[outcome] / p.n if p.n else 0.0 for p in panels]) * 100
        ax.barh(positions, share, left=left, color=_OUTCOME_COLOURS[outcome], label=outcome.replace("_", " "))
        left += share
    ax.set_yticks(positions, [p.condition for p in panels], fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of responses", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncols=len(OUTCOMES), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _svg(fig, salt)


def token_classes(rows: list[ClassRow], k: int | None, salt: str) -> str:
    """ΔNLL per token by token class: the retrieval set and the pooled random sets with their intervals, and each
    random set alone as a dot, so a reader sees whether the retrieval set falls outside the random sets' spread."""
    fig = Figure(layout="constrained", figsize=(1.6 + 1.7 * len(rows), 3.6))
    ax = fig.subplots()
    ax.axhline(0, color="#555555", linewidth=0.8)
    for x, row in enumerate(rows):
        for part, offset, kind in ((row.retrieval, -0.12, "retrieval"), (row.random, 0.12, "random")):
            if part is None:
                continue
            colour, marker = _SERIES_STYLE[kind]
            r = part.result
            if r.ci_low is not None and r.ci_high is not None:
                ax.plot([x + offset] * 2, [r.ci_low, r.ci_high], color=colour, linewidth=1.4)
            ax.plot(x + offset, r.delta, marker=marker, color=colour, markersize=6, linestyle="none")
        seeds = [c.result.delta for c in row.seeds]
        ax.plot([x + 0.3] * len(seeds), seeds, "o", color=_SERIES_STYLE["random"][0], markersize=3, alpha=0.6)
    names = [textwrap.fill(row.title + ("" if row.tokens is None else f" ({row.tokens} tokens)"), 18) for row in rows]
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set_ylabel("\u0394 NLL per token (nats), masked \u2212 unmasked", fontsize=8)
    ax.axvline(sum(row.tokens is not None for row in rows) - 0.5, color="#BBBBBB", linewidth=0.8, linestyle=":")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(
        "Teacher-forced chain of thought: where masking hurts" + (f", K = {k}" if k is not None else ""), fontsize=9
    )
    legend = [
        Line2D([], [], marker="o", color=_SERIES_STYLE["retrieval"][0], label="retrieval heads"),
        Line2D([], [], marker="s", color=_SERIES_STYLE["random"][0], label="random heads, pooled"),
        Line2D(
            [], [], marker="o", linestyle="none", color=_SERIES_STYLE["random"][0], markersize=3, label="one random set"
        ),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    return _svg(fig, salt)
