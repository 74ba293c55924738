"""Independent parts of a method's loss on side CUDA streams (the configuration field
``streams``), so that their small kernels overlap on the GPU, forward and backward.

A paper-preset MA-CDMP step is some hundreds of small kernels on a batch of 64 windows: the GPU
waits on them one after another, not on arithmetic. Its three models (noise model, return
model, inverse dynamics) read the same batch and share no parameter, so each can run on a
stream of its own. Autograd runs each backward op on the stream of its forward op, so the
backward passes overlap as well, and a CUDA graph captured over such a step keeps the branches
as parallel paths of the graph.

    par = Branches(device, on=cfg.streams)
    diff = par.run(lambda: noise_loss(zk, idx), zk, idx)   # tensors the branch reads
    cls = par.run(lambda: return_loss(zk, idx), zk, idx)
    par.join()                                            # before the results are combined

Each branch waits for everything issued before it on the current stream; :meth:`join` makes the
current stream wait for every branch. The tensors a branch reads (made on the current stream)
and its result (made on the branch's stream) are marked as used by the other stream
(``record_stream``), so the caching allocator does not hand their memory to new work before the
other stream is done with it; this covers their saved copies freed during the backward pass.
The kernels are those of one stream, so the numbers are too (as far as cuDNN picks the same
algorithms); only their order on the device changes. Off, on the CPU, or inside
``torch.compile``, :meth:`run` calls the function and nothing else happens. Random draws belong
before the branches, on the current stream, so that a run's generator is read in the same
order with and without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# Side streams of each stream a step runs on (packed runs each have their own, so their
# branches never share one), created once and reused by every step.
_SIDE: dict[tuple[int, int, int], torch.cuda.Stream] = {}


def _side_stream(main: torch.cuda.Stream, k: int) -> torch.cuda.Stream:
    key = (main.device.index, main.stream_id, k)
    if key not in _SIDE:
        _SIDE[key] = torch.cuda.Stream(main.device)
    return _SIDE[key]


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The tensor under vmap's batching wrappers (the stacked trainer's loss), whose storage
    the allocator knows."""
    functorch = torch._C._functorch
    while functorch.is_batchedtensor(t):
        t = functorch.get_unwrapped(t)
    return t


def _mark(value: Any, stream: torch.cuda.Stream) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            _plain(value).record_stream(stream)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _mark(v, stream)
    elif isinstance(value, dict):
        for v in value.values():
            _mark(v, stream)


class Branches:
    """Run functions on side streams of ``device`` when ``on`` and the device is CUDA."""

    def __init__(self, device: torch.device, on: bool) -> None:
        # torch.compile traces the loss as one graph of its own (the stacked trainer's
        # ``compile``): the branches are left to it
        self.on = bool(on) and device.type == "cuda" and not torch.compiler.is_compiling()
        self.device = device
        self._used: list[torch.cuda.Stream] = []
        self._results: list[Any] = []
        self._main = torch.cuda.current_stream(device) if self.on else None

    def run(self, fn: Callable[[], T], *reads: Any) -> T:
        """``fn()`` on the next side stream; ``reads``: the tensors (or tuples, lists, dicts
        of them) that ``fn`` reads and that were made before it on the current stream."""
        if not self.on:
            return fn()
        side = _side_stream(self._main, len(self._used))
        side.wait_stream(self._main)
        _mark(reads, side)
        with torch.cuda.stream(side):
            out = fn()
        self._used.append(side)
        self._results.append(out)
        return out

    def join(self) -> None:
        """The current stream waits for every branch; their results may be used on it."""
        if not self.on:
            return
        for side in self._used:
            self._main.wait_stream(side)
        _mark(self._results, self._main)
        self._used, self._results = [], []
