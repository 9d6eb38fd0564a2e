"""A shard-aware order for stores in object storage: shards in a random order, samples shuffled within a window of a few.

Random access over a whole remote store would fetch every shard at once. Here each rank reads
a contiguous part of a random order of the shards, and shuffles its samples only within a
window of ``window`` shards at a time, so a rank needs only those shards (and the ``prefetch``
next ones, downloaded in the background) in the node's cache.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["ShardWindowSampler"]


class ShardWindowSampler(Sampler[int]):
    """Every sample once per epoch across ranks, in a random order of shards, shuffled within windows of shards.

    The order of epoch ``e`` depends only on ``seed`` and ``e``: every rank computes the same
    random order of shards, takes its contiguous part (padded with repeated indices unless
    ``drop_last``, as ``DistributedSampler`` pads), and shuffles it within each window of
    ``window`` consecutive shards. Entering a window, it asks the dataset to prefetch the shards
    of the next ``prefetch`` windows' worth into the node's cache.

    Example::

        dataset = torchpack.LMDBImageFolder("s3://bucket/train/", decode="tensor", transform=tf)
        sampler = torchpack.ShardWindowSampler(dataset, window=2, prefetch=2)   # ranks from torch.distributed
        loader = torchdata.stateful_dataloader.StatefulDataLoader(dataset, batch_size=256, sampler=sampler, num_workers=8)

    It is a torchdata ``Stateful``: :meth:`state_dict` / :meth:`load_state_dict` resume mid-epoch
    without replaying the order.

    Args:
        dataset: a store dataset (anything with ``index_shards()``, ``prefetch_shards()`` and ``plan_remote_reads()``).
        num_replicas: number of ranks (default: the ``torch.distributed`` world size, else 1).
        rank: this rank (default: the ``torch.distributed`` rank, else 0).
        shuffle: shuffle shards and samples; if False, samples come in store order.
        seed: base of the random order; every rank must use the same.
        drop_last: drop the tail that does not divide evenly across ranks instead of padding.
        window: shards whose samples are shuffled together (more: a better shuffle, more cache).
        prefetch: shards downloaded ahead of the window being read.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int = 2,
        prefetch: int = 2,
    ) -> None:
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"`rank` must be in [0, {num_replicas - 1}] and `num_replicas` >= 1, got {rank} and {num_replicas}.")
        if window < 1 or prefetch < 0:
            raise ValueError(f"`window` must be >= 1 and `prefetch` >= 0, got {window} and {prefetch}.")
        self.dataset = dataset
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.window, self.prefetch = window, prefetch
        dataset.plan_remote_reads(window, prefetch)  # each worker keeps one window's shards open, no more
        shards = np.asarray(dataset.index_shards())
        self._by_shard = [np.flatnonzero(shards == s) for s in range(int(shards.max()) + 1 if len(shards) else 0)]
        size = len(shards)
        self.num_samples = size // num_replicas if drop_last and size % num_replicas else math.ceil(size / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self.yielded = 0
        self._resume_at = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` next (on every rank, before each epoch); a resume pending in it is kept."""
        if epoch != self.epoch:
            self._resume_at = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """This rank's place: the epoch and the indices handed out (torchdata's ``Stateful``)."""
        return {"epoch": self.epoch, "yielded": self.yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`: that epoch's order, from the next index."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"The saved sampler state is for seed {state['seed']}, this sampler has seed {self.seed}.")
        self.epoch, self._resume_at = int(state["epoch"]), int(state["yielded"])

    def plan(self) -> tuple[np.ndarray, list[tuple[int, int, list[int]]]]:
        """This rank's indices for the epoch, in order, and its windows: ``(start, end, shards)`` positions in them."""
        rng = np.random.default_rng([self.seed, self.epoch])
        shard_order = rng.permutation(len(self._by_shard)) if self.shuffle else np.arange(len(self._by_shard))
        groups = [self._by_shard[s] for s in shard_order]
        order = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        owner = np.repeat(shard_order, [len(g) for g in groups]) if groups else order
        if self.drop_last:
            order, owner = order[: self.total_size], owner[: self.total_size]
        elif self.total_size > len(order) and len(order):
            repeat = math.ceil((self.total_size - len(order)) / len(order))
            order = np.concatenate([order, np.tile(order, repeat)])[: self.total_size]
            owner = np.concatenate([owner, np.tile(owner, repeat)])[: self.total_size]
        part = slice(self.rank * self.num_samples, (self.rank + 1) * self.num_samples)
        mine, mine_owner = order[part].copy(), owner[part]
        # Runs of one shard, grouped `window` runs at a time, each group shuffled in itself.
        runs = np.flatnonzero(np.r_[True, mine_owner[1:] != mine_owner[:-1]]) if len(mine) else np.zeros(0, int)
        bounds = [*runs[:: self.window].tolist(), len(mine)]
        windows = []
        for begin, end in zip(bounds[:-1], bounds[1:]):
            if self.shuffle:
                mine[begin:end] = rng.permutation(mine[begin:end])
            windows.append((begin, end, list(dict.fromkeys(mine_owner[begin:end].tolist()))))
        return mine, windows

    def __iter__(self) -> Iterator[int]:
        mine, windows = self.plan()
        start, self._resume_at = self._resume_at, 0
        self.yielded = start
        for number, (begin, end, shards) in enumerate(windows):
            if end <= start:
                continue
            ahead = [s for _, _, later in windows[number + 1 :] for s in later if s not in shards]
            self.dataset.prefetch_shards(list(dict.fromkeys(shards + ahead))[: len(shards) + self.prefetch])
            for index in mine[max(begin, start) : end].tolist():
                self.yielded += 1
                yield index

    def __len__(self) -> int:
        return self.num_samples
