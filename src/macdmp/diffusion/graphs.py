"""A function of fixed-shape tensors replayed as one captured CUDA graph.

A sampling loop is hundreds of small kernels per solver step; launched one by one from Python they
cost several times their GPU time (docs/notes/planner-speed.md). :class:`GraphedCall` captures any
such function once for one set of input shapes and replays it: inputs are copied into static
buffers, the graph is replayed, and the output is cloned. The diffusion baselines' actors use it for
their whole :func:`macdmp.diffusion.sampler.sample` call, and so does MA-CDMP's planner
(``planner/plan.py``): the one captured-sampling helper of the package."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch


class GraphedCall:
    """``fn(*inputs) -> Tensor`` captured in a CUDA graph for inputs shaped like ``examples``.

    Randomness must come in as an input (e.g. the sampler's ``noise`` argument drawn by the
    caller), since a replay repeats the captured kernels exactly.
    """

    def __init__(
        self, fn: Callable[..., torch.Tensor], examples: Sequence[torch.Tensor], warmup: int = 2
    ):
        dev = examples[0].device
        if dev.type != "cuda":
            raise ValueError("cuda_graph: needs the inputs on a CUDA device")
        self.inputs = [torch.zeros_like(e) for e in examples]
        for buf, e in zip(self.inputs, examples, strict=True):
            buf.copy_(e)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup):  # allocator pools, cuDNN choices, compilation: before capture
                fn(*self.inputs)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(*self.inputs)

    def __call__(self, *values: torch.Tensor) -> torch.Tensor:
        for buf, v in zip(self.inputs, values, strict=True):
            buf.copy_(v)
        self.graph.replay()
        return self.out.clone()


def forget_with(owner: object, cache: dict, key: tuple) -> None:
    """Drop ``cache[key]`` when ``owner`` is garbage-collected.

    A captured graph reads its weights at the addresses they had when it was captured, and
    callers key their graphs by ``id(models)``. Once the models are collected, a new object may
    get the same id while the old graph stays cached, and its replay would read memory the old
    weights no longer own: the entry must go with its owner (whose id is freed only after this
    callback has run)."""
    weakref.finalize(owner, cache.pop, key, None)


def run_maybe_graphed(
    cache: dict,
    key: tuple,
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    enabled: bool = True,
    warmup: int = 2,
    owner: object | None = None,
) -> torch.Tensor:
    """``fn(*inputs)``, replayed from a graph captured on first use of ``key`` when the inputs
    are on a CUDA device (and ``enabled``), called eagerly otherwise. ``key`` must name
    everything that changes the captured computation besides the inputs' values (shapes,
    solver, weights...); ``owner``, the module whose weights the graph reads (whose id the key
    holds): the graph is forgotten when it is collected (:func:`forget_with`)."""
    if not enabled or inputs[0].device.type != "cuda":
        return fn(*inputs)
    if key not in cache:
        cache[key] = GraphedCall(fn, inputs, warmup)
        if owner is not None:
            forget_with(owner, cache, key)
    return cache[key](*inputs)
