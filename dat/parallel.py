"""Data-parallel training and grid sharing over processes, with torch.distributed (torchrun).

Launched by torchrun (WORLD_SIZE > 1), every rank runs the same script. For training each rank
takes its slice of every global batch (the same data order on all ranks), and the gradients of a
step are averaged across ranks, weighted by slice size, before they are used: the first gradient g
of Algorithm 1 (so the projection uses the global-batch gradient), and the gradient that the base
optimizer steps with. The noise draws come from identically seeded generators, so every rank
perturbs along the same eta and the ranks stay identical. BatchNorm normalises with each rank's own
batch statistics, and its running statistics are broadcast from rank 0 after each step (as
DistributedDataParallel does with broadcast_buffers).
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); NCCL when
    every rank has a GPU, gloo otherwise. A plain single-process run does nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank_and_world()


def local_slice(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's share of a global batch (rows rank, rank + world, ...) and the global batch size."""
    rank, world = rank_and_world()
    return x[rank::world], y[rank::world], int(y.shape[0])


class GradientSync:
    """Averages gradients across ranks as the global-batch mean: sum over ranks of
    grad_local * n_local / n_global (each rank's loss is a mean over its own slice)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.weight = 1.0

    def set_batch(self, n_local: int, n_global: int) -> None:
        self.weight = n_local / n_global

    def __call__(self, params: Iterable[torch.Tensor] | None = None) -> None:
        params = self.model.parameters() if params is None else params
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * self.weight
        dist.all_reduce(flat)  # one collective per call, not one per tensor
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_buffers(self) -> None:
        """BatchNorm running statistics from rank 0 to every rank."""
        for b in self.model.buffers():
            dist.broadcast(b, src=0)


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is True on any rank (one small all-reduce), so that a
    decision like "stop: training diverged" is taken by all ranks at the same step."""
    if rank_and_world()[1] == 1:
        return bool(flag)
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_rank0(text: str | None) -> str | None:
    """Rank 0's ``text`` (or None) on every rank: a decision only rank 0 can take (it writes the
    files, so it holds their lock) reaches the other ranks, which then act alike. UTF-8 bytes in a
    tensor, no pickling."""
    if rank_and_world()[1] == 1:
        return text
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    data = (text or "").encode("utf-8")
    head = torch.tensor([0 if text is None else 1, len(data)], dtype=torch.int64, device=device)
    dist.broadcast(head, src=0)
    if int(head[0]) == 0:
        return None
    body = torch.zeros(int(head[1]), dtype=torch.uint8, device=device)
    if dist.get_rank() == 0 and data:
        body.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(body, src=0)
    return bytes(body.cpu().tolist()).decode("utf-8")


def shutdown() -> None:
    """Leave the process group (if any) before the process exits, so the ranks tear down together
    instead of racing the collective library's background threads."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
