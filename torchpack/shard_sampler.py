"""A shard-aware order for stores in object storage: shards in a random order, samples shuffled within a window of a few.

Random access over a whole remote store would fetch every shard at once. Here each rank reads
a contiguous part of a random order of the shards, and shuffles its samples only within a
window of ``window`` shards at a time, so a rank needs only those shards (and the ``prefetch``
next ones, downloaded in the background) in the node's cache.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from torchpack.samplers import EpochSampler

__all__ = ["ShardWindowSampler"]


class ShardWindowSampler(EpochSampler):
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
        if window < 1 or prefetch < 0:
            raise ValueError(f"`window` must be >= 1 and `prefetch` >= 0, got {window} and {prefetch}.")
        shards = np.asarray(dataset.index_shards())
        super().__init__(len(shards), num_replicas, rank, shuffle, seed, drop_last)
        self.dataset = dataset
        self.window, self.prefetch = window, prefetch
        dataset.plan_remote_reads(window, prefetch)  # each worker keeps one window's shards open, no more
        self._by_shard = [np.flatnonzero(shards == s) for s in range(int(shards.max()) + 1 if len(shards) else 0)]

    def plan(self) -> tuple[np.ndarray, list[tuple[int, int, list[int]]]]:
        """This rank's indices for the epoch, in order, and its windows: ``(start, end, shards)`` positions in them."""
        rng = np.random.default_rng([self.seed, self.epoch])
        shard_order = rng.permutation(len(self._by_shard)) if self.shuffle else np.arange(len(self._by_shard))
        groups = [self._by_shard[s] for s in shard_order]
        order = self.padded(np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64))
        owner = self.padded(np.repeat(shard_order, [len(g) for g in groups]) if groups else order)
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

    def _this_rank(self) -> Iterator[int]:
        mine, windows = self.plan()
        for number, (begin, end, shards) in enumerate(windows):
            if end <= self._start:
                continue
            ahead = [s for _, _, later in windows[number + 1 :] for s in later if s not in shards]
            self.dataset.prefetch_shards(list(dict.fromkeys(shards + ahead))[: len(shards) + self.prefetch])
            yield from mine[max(begin, self._start) : end].tolist()
