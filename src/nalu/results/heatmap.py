"""Weight heatmaps as figures: a unit's matrices, one panel each, with a colour bar and every
row labelled (an output with its true and learned formula, or a hidden unit)."""

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from nalu.units.contract import effective_weights

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


def unit_matrices(network: nn.Module, prefix: str = "") -> dict[str, dict[str, Tensor]]:
    """``{unit path: {matrix name: [rows, columns]}}``: each unit's ``effective_weights()``
    (which speak for everything inside it, e.g. a NALU's two NACs) and each linear layer's."""
    if (own := effective_weights(network)) is not None:
        return {prefix or "network": own}
    if isinstance(network, nn.Linear):
        return {prefix or "network": {"weight": network.weight}}
    units: dict[str, dict[str, Tensor]] = {}
    for name, child in network.named_children():
        units.update(unit_matrices(child, f"{prefix}.{name}" if prefix else name))
    return units


def _shorten(text: str) -> str:
    if len(text) <= MAX_LABEL_CHARACTERS:
        return text
    return text[: MAX_LABEL_CHARACTERS - 1] + "…"


def weight_figure(
    title: str,
    matrices: dict[str, Tensor],
    truths: Sequence[str],
    learned: Sequence[tuple[str, bool]] | None = None,
    input_name: str = "x",
) -> Figure:
    """One panel per matrix, red positive and blue negative on a symmetric scale (at least
    [-1, 1], so {-1, 0, 1} weights keep their full colour) with its colour bar.

    A panel with one row per output labels row j ``y_j = truths[j]`` and, on its right,
    ``learned[j]``: the read-back formula, ✓ where it is the truth. Other rows are hidden units;
    columns are inputs ``x_i`` (``h_i`` for a unit that reads an earlier unit's outputs).
    """
    heights = [
        min(MAX_PANEL_INCHES, max(1.2, 0.32 * matrix.shape[0] + 0.9))
        for matrix in matrices.values()
    ]
    columns = max(matrix.shape[1] for matrix in matrices.values())
    label_width = 3.2 if learned else 1.2
    figure = Figure(
        figsize=(min(MAX_FIGURE_INCHES, 4.0 + label_width + 0.11 * columns), sum(heights) + 0.8),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    axes = figure.subplots(len(matrices), 1, height_ratios=heights, squeeze=False)[:, 0]
    for axis, (name, matrix) in zip(axes, matrices.items(), strict=True):
        values = matrix.detach().float().cpu()
        finite = values[torch.isfinite(values)]
        bound = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        image = axis.imshow(values.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        figure.colorbar(image, ax=axis, fraction=0.03, pad=0.01)
        axis.set_title(f"{name}  [{values.shape[0]}×{values.shape[1]}]", fontsize=9, loc="left")
        step = max(1, -(-values.shape[1] // MAX_COLUMN_TICKS))
        ticks = list(range(0, values.shape[1], step))
        axis.set_xticks(ticks, [f"{input_name}{i}" if values.shape[1] > 1 else "" for i in ticks])
        axis.tick_params(axis="x", labelsize=7, rotation=90)
        rows = values.shape[0]
        is_output_panel = rows == len(truths)
        labels = (
            [_shorten(f"y{j} = {truth}") for j, truth in enumerate(truths)]
            if is_output_panel
            else [f"h{j}" for j in range(rows)]
        )
        row_step = max(1, -(-rows // MAX_ROW_LABELS))
        axis.set_yticks(range(0, rows, row_step), labels[::row_step], fontsize=8)
        if is_output_panel and learned and row_step == 1:
            right = axis.secondary_yaxis("right")
            right.set_yticks(
                range(rows),
                [_shorten(f"{'✓' if ok else '✗'} {formula}") for formula, ok in learned],
                fontsize=8,
            )
    return figure


@dataclass(frozen=True)
class Heatmap:
    """A ``weight_figure`` to render, and its TensorBoard tag."""

    tag: str
    title: str
    matrices: dict[str, Tensor]
    truths: Sequence[str]
    learned: Sequence[tuple[str, bool]] | None = None
    input_name: str = "x"


# Fewer figures than this render in the calling process: a worker process starts in seconds.
PARALLEL_HEATMAPS = 6


def render_heatmap(heatmap: Heatmap) -> np.ndarray:
    """The figure as ``[3, height, width]`` uint8 RGB, what TensorBoard's ``add_image`` takes."""
    figure = weight_figure(
        heatmap.title, heatmap.matrices, heatmap.truths, heatmap.learned, heatmap.input_name
    )
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].transpose(2, 0, 1).copy()


def render_heatmaps(heatmaps: Sequence[Heatmap]) -> Iterator[np.ndarray]:
    """Every figure rendered (``render_heatmap``), in order, as the caller takes them: a
    population's dozens of figures in a process per CPU (matplotlib draws in Python, one figure a
    second or two), fewer here. Figures come one by one (each a few MB as pixels), so that a
    thousand members' never sit in memory at once."""
    workers = min(len(os.sched_getaffinity(0)), len(heatmaps))
    if len(heatmaps) < PARALLEL_HEATMAPS or workers < 2:
        yield from map(render_heatmap, heatmaps)
        return
    # Spawned, not forked: a fork of a process whose OpenMP threads are running can hang.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render_heatmap, heatmaps)
