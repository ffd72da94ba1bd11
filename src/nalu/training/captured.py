"""Chunks of optimizer steps captured once as CUDA graphs and replayed.

A small network's optimizer step is a few dozen kernels of a few microseconds each; launched one
by one from Python, the launches cost more than the work. ``CapturedChunks`` runs a chunk's
steps (a function of no arguments that reads and writes only tensors that stay at one address)
eagerly once on a side stream, so that compilation, the optimizer's state and the allocator's
blocks exist, then captures it as a CUDA graph per shape of chunk (its number of steps and batch
size) and from then on replays it: one launch for the whole chunk (PyTorch's "whole-network
capture", ``torch.cuda.graphs``). Off CUDA it just runs the function.
"""

from collections.abc import Callable, Hashable

import torch


class CapturedChunks:
    """Runs chunk functions on ``device``: each ``key`` (a chunk's shape) captured the first time
    it comes after the warm-up, replayed from then on."""

    def __init__(self, device: torch.device) -> None:
        self.capturing = device.type == "cuda"
        self.graphs: dict[Hashable, torch.cuda.CUDAGraph] = {}
        self.warm = False

    def run(self, key: Hashable, chunk: Callable[[], None]) -> None:
        if not self.capturing:
            chunk()
        elif not self.warm:
            # The warm-up runs on a side stream, as capture requires of its first iterations
            # (PyTorch's CUDA graph notes): lazily made handles and streams are made there.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                chunk()
            torch.cuda.current_stream().wait_stream(side)
            self.warm = True
            self._capture(key, chunk)  # for the next chunk of this shape
        else:
            if key not in self.graphs:
                self._capture(key, chunk)
            self.graphs[key].replay()

    def _capture(self, key: Hashable, chunk: Callable[[], None]) -> None:
        """Record ``chunk`` as the graph of ``key``: recorded, not run (a replay runs it)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            chunk()
        self.graphs[key] = graph
