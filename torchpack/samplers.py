"""Samplers: whole batches as index arrays, and locality-aware shuffling of blocks of neighbouring samples."""

from __future__ import annotations

import math
from typing import Iterator, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["ArrayBatchSampler", "BlockShuffleSampler", "EpochSampler"]


def _check_seed(seed: int, state: dict[str, int]) -> None:
    if state.get("seed", seed) != seed:
        raise ValueError(f"The saved sampler state is for seed {state['seed']}, this sampler has seed {seed}.")


class ArrayBatchSampler(Sampler[np.ndarray]):
    """A DataLoader ``batch_sampler`` whose batches are numpy arrays of indices, not lists of ints.

    torch's ``BatchSampler`` builds each batch one Python int at a time, and a dataset's
    ``__getitems__`` then turns the list back into an array: at 512 tiny samples a batch that
    is a quarter of a whole-batch raw read. Here a batch is a slice of one permutation.

    Example (the recipe for raw tiny stores, read in the training process)::

        loader = DataLoader(dataset, batch_sampler=torchpack.ArrayBatchSampler(dataset, 512),
                            collate_fn=torchpack.SkipBadCollate())

    Args:
        dataset: anything with a length (only ``len(dataset)`` is used).
        batch_size: indices per batch.
        shuffle: a new random order every epoch (else 0, 1, 2, ...).
        drop_last: leave out the last batch when it is short.
        seed: the order of epoch ``e`` depends only on ``seed`` and ``e`` (see :meth:`set_epoch`);
            without :meth:`set_epoch` each pass advances to the next epoch's order.
    """

    def __init__(self, dataset: Sized, batch_size: int, shuffle: bool = True, drop_last: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.size = len(dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.yielded = 0  # batches of the current pass handed out
        self._resume_at = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order for the next pass (a pending resume in that epoch is kept)."""
        if epoch != self.epoch:
            self._resume_at = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """Where the current pass is: its epoch and the batches handed out (torchdata's ``Stateful``)."""
        return {"epoch": self.epoch, "yielded": self.yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`: the next pass is that epoch's, from the next batch."""
        _check_seed(self.seed, state)
        self.epoch, self._resume_at = int(state["epoch"]), int(state["yielded"])

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        stop = self.size - self.size % self.batch_size if self.drop_last else self.size
        starts = range(self._resume_at * self.batch_size, stop, self.batch_size)
        self.yielded, self._resume_at = self._resume_at, 0
        for start in starts:
            self.yielded += 1
            yield order[start : start + self.batch_size]
        self.epoch += 1
        self.yielded = 0

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else -(-self.size // self.batch_size)


class EpochSampler(Sampler[int]):
    """What the distributed samplers share: ranks, seeded epochs, ``DistributedSampler``'s padding, and resuming.

    A subclass gives the epoch's order of this rank (:meth:`_this_rank`); this class hands it
    out from where a saved state left off, counting what it hands out (torchdata's ``Stateful``:
    :meth:`state_dict` / :meth:`load_state_dict`).

    Raises:
        ValueError: ``rank`` or ``num_replicas`` is out of range.
    """

    def __init__(
        self, size: int, num_replicas: int | None, rank: int | None, shuffle: bool, seed: int, drop_last: bool
    ) -> None:
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1:
            raise ValueError(f"`num_replicas` must be >= 1, got {num_replicas}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"`rank` must be in [0, {num_replicas - 1}], got {rank}.")
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_samples = size // num_replicas if drop_last and size % num_replicas else math.ceil(size / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self.yielded = 0  # indices of the current epoch handed out
        self._resume_at = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` on the next iteration (call it on every rank, before each epoch).

        A resume pending in that epoch (:meth:`load_state_dict`) is kept.
        """
        if epoch != self.epoch:
            self._resume_at = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """This rank's place in the epoch: the epoch and the indices handed out (torchdata's ``Stateful``).

        ``torchdata.stateful_dataloader.StatefulDataLoader`` saves it with the loader's state
        and gives it back to :meth:`load_state_dict`, so a resume does not replay the order.
        """
        return {"epoch": self.epoch, "yielded": self.yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`: the next iteration is that epoch's, from the next index."""
        _check_seed(self.seed, state)
        self.epoch, self._resume_at = int(state["epoch"]), int(state["yielded"])

    def padded(self, order: np.ndarray) -> np.ndarray:
        """The epoch's ``order`` cut or padded (with repeated indices) to ``total_size``, as ``DistributedSampler`` does."""
        if self.drop_last or self.total_size <= len(order) or not len(order):
            return order[: self.total_size]
        return np.concatenate([order, np.tile(order, math.ceil((self.total_size - len(order)) / len(order)))])[: self.total_size]

    def _this_rank(self) -> Iterator[int]:
        """This rank's indices for the epoch, in order, from position ``self._start`` on."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        self._start, self._resume_at = self._resume_at, 0
        self.yielded = self._start
        for index in self._this_rank():
            self.yielded += 1
            yield index

    def __len__(self) -> int:
        return self.num_samples


class BlockShuffleSampler(EpochSampler):
    """Shuffle blocks of ``block_size`` neighbouring indices, then the indices within each block.

    A fully random permutation of a store larger than RAM turns every read into a random
    disk read. Here the order of the blocks is random and so is the order inside a block,
    but one block is read whole before the next, so reads stay on neighbouring pages of
    the store (sequential I/O, and each page fetched once) while batches still mix
    samples from across the dataset once ``block_size`` is small against the epoch.

    It is a drop-in for ``torch.utils.data.DistributedSampler``: with ``num_replicas``
    ranks every epoch is split into equal parts that together cover every index exactly
    once (padded with repeated indices unless ``drop_last``), and all ranks must call
    :meth:`set_epoch` with the same epoch. Each rank gets a contiguous run of whole blocks,
    so a rank's reads stay local too.

    Example::

        sampler = torchpack.BlockShuffleSampler(dataset, block_size=1024)  # rank and size from torch.distributed
        loader = DataLoader(dataset, batch_size=256, sampler=sampler, num_workers=8)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for images, targets in loader:
                ...

    Args:
        dataset: anything with a length (only ``len(dataset)`` is used).
        num_replicas: number of ranks (default: the ``torch.distributed`` world size, else 1).
        rank: this rank (default: the ``torch.distributed`` rank, else 0).
        shuffle: shuffle blocks and indices; if False, indices come in order (like
            ``DistributedSampler(shuffle=False)``, but split in contiguous runs).
        seed: base of the random order; every rank must use the same seed.
        drop_last: drop the tail that does not divide evenly across ranks instead of padding.
        block_size: neighbouring indices per block; larger is more sequential, smaller is more random.

    Raises:
        ValueError: ``rank``, ``num_replicas`` or ``block_size`` is out of range.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        block_size: int = 1024,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"`block_size` must be >= 1, got {block_size}.")
        super().__init__(len(dataset), num_replicas, rank, shuffle, seed, drop_last)
        self.dataset = dataset
        self.block_size = block_size

    def global_order(self) -> torch.Tensor:
        """This epoch's order of all indices, before it is padded or split across ranks."""
        size = len(self.dataset)
        if not self.shuffle:
            return torch.arange(size)
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        num_blocks = math.ceil(size / self.block_size)
        starts = torch.randperm(num_blocks, generator=generator) * self.block_size
        lengths = torch.clamp(size - starts, max=self.block_size)
        # Index j of the result lies in block number block_of[j], at position within[j] of that block.
        block_of = torch.repeat_interleave(torch.arange(num_blocks), lengths)
        within = torch.arange(size) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        # Shuffle inside every block at once: sort by (block, random key).
        keys = torch.rand(size, generator=generator, dtype=torch.float64) + block_of.to(torch.float64)
        order = torch.argsort(keys)
        return (starts[block_of] + within)[order]

    def _this_rank(self) -> Iterator[int]:
        indices = self.padded(self.global_order().numpy())
        mine = indices[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        return iter(mine[self._start :].tolist())
