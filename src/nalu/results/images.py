"""Figures as PNG images, drawn and encoded once for both the files on disk and TensorBoard."""

import io
from typing import Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary


class EventWriter(Protocol):
    """What writes summaries to an event file: a ``SummaryWriter``'s file writer."""

    def add_summary(self, summary: Summary, global_step: int | None = None) -> None: ...


def figure_png(figure: Figure, dpi: float | None = None) -> bytes:
    """``figure`` drawn (at ``dpi``, else its own) and encoded as PNG, RGB on its face colour."""
    if dpi is not None:
        figure.set_dpi(dpi)
    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):  # a figure not made by pyplot on Agg
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels, read from a PNG's header."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def add_png(writer: EventWriter, tag: str, png: bytes, step: int) -> None:
    """An image summary of an encoded PNG, what ``SummaryWriter.add_image`` writes without
    encoding it again."""
    width, height = png_size(png)
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
    writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
