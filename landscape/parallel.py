"""Spreading grid chunks over processes with torch.distributed (torchrun), nothing home-made.

A 2D surface is a list of independent chunks of (alpha, beta) points. Under torchrun every rank
evaluates the chunks j with j % world_size == rank, and `all_gather_object` gives every rank the
whole surface, in chunk order, so the result is identical to a single-process run.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.distributed as dist

from dat.parallel import rank_and_world


def map_chunks(fn: Callable, chunks: Sequence, progress: Callable[[int, int], None] | None = None,
               store=None) -> list:
    """[fn(c) for c in chunks], the chunks shared round-robin between the ranks of the process group.

    progress(done, total) counts the points this rank has evaluated against the rank's share.
    ``store`` (a ``landscape.cache.ChunkStore`` or None): chunks found there are taken as they are,
    each chunk computed here is kept there, so a computation stopped midway resumes where it was.
    """
    rank, world = rank_and_world()
    mine = list(range(rank, len(chunks), world))
    total = sum(len(chunks[j]) for j in mine)
    done, results = 0, {}
    for j in mine:
        found = None if store is None else store.load(j, len(chunks[j]))
        if found is None:
            found = fn(chunks[j])
            if store is not None:
                store.save(j, found)
        results[j] = found
        done += len(chunks[j])
        if progress is not None:
            progress(done, total)
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, results)
        results = {j: r for part in gathered for j, r in part.items()}
    return [results[j] for j in range(len(chunks))]
