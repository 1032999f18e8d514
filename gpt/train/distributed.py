"""A training process's place among others (torchrun) and its stop signals.

Without torchrun there is one process, rank 0 of 1, and every helper here is a no-op wrapper.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import TypeVar

import torch

from gpt.errors import GPTError
from gpt.model.device import resolve_device

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    def from_rank0(self, value: T) -> T:
        """Rank 0's `value`, on every rank (every rank must call it at the same point)."""
        return gather(self, {"value": value})[0]["value"]


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl on CUDA, gloo on CPU), one GPU per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    import torch.distributed as td

    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    device = resolve_device(device_name)
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise GPTError(f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                           "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    # DDP imports torch.distributed.nn.functional, whose functions take `group=group.WORLD` as a default argument
    # evaluated at import: imported after init_process_group, they keep the process group alive for good, so
    # destroy_process_group cannot join gloo's worker threads, and a worker still releasing a collective's
    # Python tensors during interpreter shutdown aborts the process (SIGABRT, "terminate called without an active
    # exception"; 1 run in 10 on 2 cores). Imported first, the defaults are None.
    import torch.distributed.nn.functional as _  # noqa: F401

    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def teardown(dist: Dist) -> None:
    """Free the process group, which joins gloo's worker threads before the interpreter shuts down.

    DistributedDataParallel's constructor leaves the module in a reference cycle (a closure cell and its frame),
    and the module's reducer holds the group: until the cyclic collector frees it, destroy_process_group only
    forgets the group and gloo's threads run on. Collecting first makes the join not depend on when gc runs.
    """
    if dist.enabled:
        import gc

        import torch.distributed as td

        if td.is_initialized():
            gc.collect()
            td.destroy_process_group()


def gather(dist: Dist, obj: dict) -> list[dict]:
    """Every rank's `obj` (tensors moved to the CPU), in rank order; every rank must call it."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as td

    ranks: list = [None] * dist.world
    td.all_gather_object(ranks, {k: v.cpu() if torch.is_tensor(v) else v for k, v in obj.items()})
    return ranks


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, save, exit 0. A second signal (2 s or more later) aborts at once.

    A context manager: the previous handlers come back on exit (so in-process callers keep their Ctrl-C).
    """

    def __init__(self):
        self.signal: str | None = None
        self.first = 0.0
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal:
            if time.monotonic() - self.first > 2.0:  # not the same Ctrl-C relayed by torchrun to its workers
                raise KeyboardInterrupt
            return
        self.signal, self.first = signal.Signals(signum).name, time.monotonic()

    def requested(self, dist: Dist, device: torch.device) -> bool:
        """Whether any rank got SIGINT/SIGTERM (all ranks stop after the same step)."""
        if not dist.enabled:
            return self.signal is not None
        import torch.distributed as td

        flag = torch.tensor([1.0 if self.signal else 0.0], device=device)
        td.all_reduce(flag, op=td.ReduceOp.MAX)
        return bool(flag.item())
