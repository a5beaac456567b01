"""A network's forward replayed from captured CUDA graphs, one per input shape ("bucket").

Launching a ViT's hundreds of kernels one at a time from Python keeps a fast GPU waiting: at 256² the network's
arithmetic takes a fraction of the launch time. A CUDA graph records the launches once and replays them in one call.
A graph holds fixed shapes, so inputs are bucketed: the batch is padded up to the next power of two (at most the
largest batch asked for), and each network size gets its graphs; photos from one camera share one size, so a folder
or a video needs one or two captures. Each capture (three warm-up forwards on a side stream, then the recording)
is timed, so that it is reported apart from the steady state.

Why graphs rather than `torch.compile`: the network's kernels are already the library's best (cuDNN, cuBLAS, fused
attention); what is lost is launching them, which a graph removes at the cost of one forward per bucket, where
compiling takes minutes per shape (`bench --compile` at two sizes did not finish in 170 s on an H200).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

MAX_GRAPHS = 16
"""Captured graphs kept at once (the least recently used is dropped beyond this)."""
WARMUP = 3


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    input: torch.Tensor
    output: torch.Tensor


def bucket_batch(size: int, largest: int) -> int:
    """The batch size a graph is captured at for `size` images: the next power of two, at most `largest` (and never
    below `size`)."""
    bucket = 1
    while bucket < size:
        bucket *= 2
    return max(size, min(bucket, largest))


class GraphedForward:
    """`forward(batch)` of `network` under `autocast`, from a captured CUDA graph per (bucketed batch, height, width).

    The returned tensor is the graph's own output buffer: use it before the next call.
    """

    def __init__(self, network: nn.Module, autocast: Callable[[], object] = nullcontext, largest_batch: int = 1) -> None:
        self.network = network
        self.autocast = autocast
        self.largest_batch = largest_batch
        self.captures: dict[tuple[int, ...], float] = {}
        """Seconds each capture took, by input shape."""
        self._graphs: OrderedDict[tuple[int, ...], _Graph] = OrderedDict()
        self._pool = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        count = batch.shape[0]
        shape = (bucket_batch(count, self.largest_batch), *batch.shape[1:])
        graph = self._graphs.get(shape)
        if graph is None:
            graph = self._capture(shape, batch)
        self._graphs.move_to_end(shape)
        graph.input[:count].copy_(batch)
        graph.graph.replay()
        return graph.output[:count]

    @property
    def capture_seconds(self) -> float:
        """Seconds spent capturing, over every shape."""
        return sum(self.captures.values())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.autocast():
            return self.network(x)

    def _capture(self, shape: tuple[int, ...], batch: torch.Tensor) -> _Graph:
        start = time.perf_counter()
        if len(self._graphs) >= MAX_GRAPHS:
            self._graphs.popitem(last=False)
        static = torch.zeros(shape, dtype=batch.dtype, device=batch.device)
        static[: batch.shape[0]].copy_(batch)
        side = torch.cuda.Stream(batch.device)
        side.wait_stream(torch.cuda.current_stream(batch.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self._forward(static)
        torch.cuda.current_stream(batch.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self._forward(static)
        torch.cuda.synchronize(batch.device)
        self._graphs[shape] = captured = _Graph(graph, static, output)
        self.captures[shape] = time.perf_counter() - start
        return captured
