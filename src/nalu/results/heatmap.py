"""Weight heatmaps as figures: a unit's matrices, one panel each, with a colour bar and every
row labelled (an output with its true and learned formula, or a hidden unit).

Rendering needs numpy and matplotlib alone, so that the worker processes that draw a
population's figures start in a fraction of a second (``nalu.results.recorder`` takes the
matrices out of the network)."""

import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from matplotlib import markers
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import offset_copy

from nalu.results.images import figure_png

# Inputs labelled on the x axis at most; wider matrices get a tick every few inputs.
MAX_COLUMN_TICKS = 25
# Row labels longer than this are cut (a stack's learned formula can run to 100 terms).
MAX_LABEL_CHARACTERS = 48
# Rows labelled one by one at most; a taller matrix (an MLP's hidden layer) gets a tick every
# few rows, and its panel a height of at most MAX_PANEL_INCHES.
MAX_ROW_LABELS = 64
MAX_PANEL_INCHES = 12.0
# At matplotlib's 100 dpi: 1,500 px, so that the colour bar and the read-back column stay in a
# 1,600-px browser window beside TensorBoard's margins.
MAX_FIGURE_INCHES = 15.0
# The layout, in inches. Labels are sized by their length in characters (of the 8-point font,
# the 7-point one below the panels): measuring every label, as a layout engine does, took half
# of a figure's time.
ROW_INCHES = 0.32
COLUMN_INCHES = 0.11
MIN_MATRIX_INCHES = (4.0, 0.4)
# A matrix of fewer columns than the figure's widest (a gate, a choice of heads) gets square
# cells, at least this wide: stretched to the others' width, one column reads as a band of many.
NARROW_MATRIX_INCHES = 1.2
# Above the read-back column: the formulas are the whole unit's, not the panel's matrix's.
READ_BACK_HEADING = "read back (the whole unit)"
CHARACTER_INCHES = 0.065
SMALL_CHARACTER_INCHES = 0.06
TICK_INCHES = 0.12
# matplotlib's default tick: 3.5 points long, its label 3.5 points beyond it.
TICK_POINTS = 3.5
TICK_PAD_POINTS = 3.5
TITLE_INCHES = 0.45
PANEL_TITLE_INCHES = 0.3
COLOUR_BAR_INCHES = (0.12, 0.15, 0.55)  # gap, bar, its tick labels
MARGIN_INCHES = 0.1


def _shorten(text: str) -> str:
    if len(text) <= MAX_LABEL_CHARACTERS:
        return text
    return text[: MAX_LABEL_CHARACTERS - 1] + "…"


def _label_inches(labels: Sequence[str], character_inches: float = CHARACTER_INCHES) -> float:
    """The room a column of tick labels takes beside its axis."""
    return TICK_INCHES + character_inches * max((len(label) for label in labels), default=0)


@dataclass(frozen=True)
class _Panel:
    """One matrix's panel: its labels, and its height in the figure."""

    name: str
    values: np.ndarray
    column_ticks: list[int]
    column_labels: list[str]
    row_ticks: range
    row_labels: list[str]
    learned_labels: list[str] | None

    @property
    def matrix_inches(self) -> float:
        rows = self.values.shape[0]
        return min(MAX_PANEL_INCHES, max(MIN_MATRIX_INCHES[1], ROW_INCHES * rows))

    @property
    def below_inches(self) -> float:
        return _label_inches(self.column_labels, SMALL_CHARACTER_INCHES)

    @property
    def inches(self) -> float:
        return PANEL_TITLE_INCHES + self.matrix_inches + self.below_inches


def _panel(
    name: str,
    values: np.ndarray,
    truths: Sequence[str],
    learned: Sequence[tuple[str, bool]] | None,
    input_name: str,
    column_names: Sequence[str] | None = None,
) -> _Panel:
    rows, columns = values.shape
    step = max(1, -(-columns // MAX_COLUMN_TICKS))
    column_ticks = list(range(0, columns, step))
    if column_names is not None:
        column_labels = [column_names[i] for i in column_ticks]
    else:
        column_labels = [f"{input_name}{i}" if columns > 1 else "" for i in column_ticks]
    is_output_panel = rows == len(truths)
    labels = (
        [_shorten(f"y{j} = {truth}") for j, truth in enumerate(truths)]
        if is_output_panel
        else [f"h{j}" for j in range(rows)]
    )
    row_step = max(1, -(-rows // MAX_ROW_LABELS))
    return _Panel(
        name,
        values,
        column_ticks,
        column_labels,
        range(0, rows, row_step),
        labels[::row_step],
        [_shorten(f"{'✓' if ok else '✗'} {formula}") for formula, ok in learned]
        if is_output_panel and learned and row_step == 1
        else None,
    )


# Where each side's labels go: the point on the axes' edge (x or y in axes coordinates, the
# other in data coordinates), the direction away from it, the tick marker and the alignment.
_SIDES = {
    "below": ((0.0, -1.0), markers.TICKDOWN, {"rotation": 90, "ha": "center", "va": "top"}),
    "left": ((-1.0, 0.0), markers.TICKLEFT, {"ha": "right", "va": "center"}),
    "right": ((1.0, 0.0), markers.TICKRIGHT, {"ha": "left", "va": "center"}),
}


def _label(
    axis: Axes, side: str, positions: Sequence[int], labels: Sequence[str], fontsize: float
) -> None:
    """Tick marks and labels on one ``side`` of a panel (``below``, ``left``, ``right``: the
    texts' gid), drawn as one marker line and plain texts: matplotlib's own ticks (two lines and
    two texts each, laid out on every draw) took half of a figure's time."""
    (dx, dy), marker, alignment = _SIDES[side]
    if side == "below":
        transform, edge = axis.get_xaxis_transform(), [(p, 0.0) for p in positions]
    else:
        transform = axis.get_yaxis_transform()
        edge = [(1.0 if side == "right" else 0.0, p) for p in positions]
    axis.plot(
        [x for x, _ in edge],
        [y for _, y in edge],
        transform=transform,
        linestyle="",
        marker=marker,
        markersize=TICK_POINTS,
        color="black",
        clip_on=False,
    )
    away = TICK_POINTS + TICK_PAD_POINTS
    shifted = offset_copy(transform, fig=axis.figure, x=dx * away, y=dy * away, units="points")
    for (x, y), label in zip(edge, labels, strict=True):
        if label:
            axis.text(x, y, label, transform=shifted, fontsize=fontsize, gid=side, **alignment)


# Beside the title of a panel with outlined cells (``weight_figure``'s ``operands``).
OPERAND_NOTE = "□ the truth's operands"


def _outline(axis: Axes, cells: np.ndarray) -> None:
    """A black outline around each true cell of ``cells``, drawn as one collection."""
    outlines = [
        Rectangle((i - 0.5, j - 0.5), 1, 1) for j, i in zip(*np.nonzero(cells), strict=True)
    ]
    axis.add_collection(
        PatchCollection(
            outlines, facecolor="none", edgecolor="black", linewidth=0.9, gid="operands"
        )
    )


def weight_figure(
    title: str,
    matrices: dict[str, np.ndarray],
    truths: Sequence[str],
    learned: Sequence[tuple[str, bool]] | None = None,
    input_name: str = "x",
    column_names: Mapping[str, Sequence[str]] | None = None,
    operands: np.ndarray | None = None,
) -> Figure:
    """One panel per matrix, red positive and blue negative on a symmetric scale (at least
    [-1, 1], so {-1, 0, 1} weights keep their full colour) with its colour bar.

    ``operands`` (``[outputs, inputs]``, true where output j's truth reads input i) outlines
    those cells in every panel whose rows are the outputs and whose columns the inputs: a
    learned weight inside its outline sits on an operand, one outside it on another input.

    A panel with one row per output labels row j ``y_j = truths[j]``; the last such panel has on
    its right ``learned[j]``, the whole unit's read-back formula, ✓ where it is the truth (once:
    one head's or one path's matrix does not compute it alone). Other rows are hidden units;
    columns are inputs ``x_i`` (``h_i`` for a unit that reads an earlier unit's outputs), or
    the labels ``column_names`` gives a matrix (a selection's choice: its heads).
    """
    named = column_names or {}
    panels = [
        _panel(
            name,
            np.asarray(matrix, dtype=np.float32),
            truths,
            learned,
            input_name,
            named.get(name),
        )
        for name, matrix in matrices.items()
    ]
    read_back = max((k for k, panel in enumerate(panels) if panel.learned_labels), default=-1)
    panels = [
        panel if k == read_back else replace(panel, learned_labels=None)
        for k, panel in enumerate(panels)
    ]
    left = MARGIN_INCHES + max(_label_inches(panel.row_labels) for panel in panels)
    learned_inches = max(
        (
            _label_inches([*panel.learned_labels, READ_BACK_HEADING])
            for panel in panels
            if panel.learned_labels
        ),
        default=0.0,
    )
    right = learned_inches + sum(COLOUR_BAR_INCHES) + MARGIN_INCHES
    columns = max(panel.values.shape[1] for panel in panels)
    matrix_width = max(
        MIN_MATRIX_INCHES[0], min(COLUMN_INCHES * columns, MAX_FIGURE_INCHES - left - right)
    )
    widths = [
        matrix_width
        if panel.values.shape[1] == columns
        else min(matrix_width, max(NARROW_MATRIX_INCHES, ROW_INCHES * panel.values.shape[1]))
        for panel in panels
    ]
    # The read-back column stands beside its own panel, which may be a narrow one.
    drawn_width = max(
        panel_width + (learned_inches if panel.learned_labels else 0.0)
        for panel_width, panel in zip(widths, panels, strict=True)
    )
    width = left + drawn_width + sum(COLOUR_BAR_INCHES) + MARGIN_INCHES
    height = TITLE_INCHES + sum(panel.inches for panel in panels) + MARGIN_INCHES
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    figure.suptitle(title, y=1 - 0.12 / height, va="top")
    top = height - TITLE_INCHES
    gap, bar, _ = COLOUR_BAR_INCHES
    for panel, panel_width in zip(panels, widths, strict=True):
        bottom = top - PANEL_TITLE_INCHES - panel.matrix_inches
        box = [left / width, bottom / height, panel_width / width, panel.matrix_inches / height]
        axis = figure.add_axes(box, xticks=[], yticks=[])
        finite = panel.values[np.isfinite(panel.values)]
        bound = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        image = axis.imshow(panel.values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        rows, columns = panel.values.shape
        outlined = (
            operands is not None
            and panel.values.shape == operands.shape
            and panel.name not in named
        )
        if outlined:
            _outline(axis, operands)
        outline_note = f"  {OPERAND_NOTE}" if outlined else ""
        axis.set_title(f"{panel.name}  [{rows}×{columns}]{outline_note}", fontsize=9, loc="left")
        _label(axis, "below", panel.column_ticks, panel.column_labels, fontsize=7)
        _label(axis, "left", panel.row_ticks, panel.row_labels, fontsize=8)
        if panel.learned_labels:
            _label(axis, "right", range(rows), panel.learned_labels, fontsize=8)
            away = TICK_POINTS + TICK_PAD_POINTS
            heading = offset_copy(axis.transAxes, fig=figure, x=away, y=2, units="points")
            axis.text(
                1.0, 1.0, READ_BACK_HEADING, transform=heading, fontsize=8, ha="left",
                va="bottom", style="italic", gid="read-back heading",
            )  # fmt: skip
        bar_left = left + drawn_width + gap
        colour_bar = figure.add_axes(
            [bar_left / width, bottom / height, bar / width, panel.matrix_inches / height]
        )
        figure.colorbar(image, cax=colour_bar)
        top = bottom - panel.below_inches
    return figure


@dataclass(frozen=True)
class Heatmap:
    """A ``weight_figure`` to render, and its TensorBoard tag."""

    tag: str
    title: str
    matrices: dict[str, np.ndarray]
    truths: Sequence[str]
    learned: Sequence[tuple[str, bool]] | None = None
    input_name: str = "x"
    column_names: Mapping[str, Sequence[str]] | None = None
    operands: np.ndarray | None = None


# Fewer figures than this render in the calling process: a worker takes about a second to start.
PARALLEL_HEATMAPS = 6


def render_heatmap(heatmap: Heatmap) -> bytes:
    """The figure as a PNG (``nalu.results.images.figure_png``)."""
    return figure_png(
        weight_figure(
            heatmap.title,
            heatmap.matrices,
            heatmap.truths,
            heatmap.learned,
            heatmap.input_name,
            heatmap.column_names,
            heatmap.operands,
        )
    )


def render_heatmaps(heatmaps: Sequence[Heatmap]) -> Iterator[bytes]:
    """Every figure rendered (``render_heatmap``), in order, as the caller takes them: a
    population's dozens of figures in a process per CPU (matplotlib draws in Python, a few
    tenths of a second a figure), fewer here. Figures come one by one, so that a thousand
    members' never sit in memory at once."""
    workers = min(len(os.sched_getaffinity(0)), len(heatmaps))
    if len(heatmaps) < PARALLEL_HEATMAPS or workers < 2:
        yield from map(render_heatmap, heatmaps)
        return
    # Spawned, not forked: a fork of a process whose OpenMP threads are running can hang.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render_heatmap, heatmaps)
