"""BlockShuffleSampler: DistributedSampler's contract (coverage, padding, epochs), with local reads."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from torch.utils.data import DataLoader, DistributedSampler

import torchpack
from conftest import BACKENDS, dataset_class
from torchpack.samplers import BlockShuffleSampler


def epoch(size: int, num_replicas: int, epoch_number: int = 0, **options) -> list[list[int]]:
    ranks = []
    for rank in range(num_replicas):
        sampler = BlockShuffleSampler(range(size), num_replicas=num_replicas, rank=rank, **options)
        sampler.set_epoch(epoch_number)
        ranks.append(list(sampler))
        assert len(ranks[-1]) == len(sampler)
    return ranks


@pytest.mark.parametrize("size", [1, 7, 100, 1001])
@pytest.mark.parametrize("num_replicas", [1, 2, 3, 8])
@pytest.mark.parametrize("block_size", [1, 16, 5000])
def test_every_index_once_per_epoch_across_ranks_padded_like_distributed_sampler(size, num_replicas, block_size):
    ranks = epoch(size, num_replicas, block_size=block_size)
    reference = [list(DistributedSampler(range(size), num_replicas, rank)) for rank in range(num_replicas)]
    assert [len(r) for r in ranks] == [len(r) for r in reference]
    seen = collections.Counter(i for r in ranks for i in r)
    assert set(seen) == set(range(size))
    assert sum(seen.values()) - size == sum(map(len, reference)) - size  # the same amount of padding
    assert max(seen.values()) <= 1 + -(-num_replicas // size)


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_drop_last_drops_the_uneven_tail_like_distributed_sampler(num_replicas):
    ranks = epoch(1001, num_replicas, drop_last=True, block_size=64)
    reference = DistributedSampler(range(1001), num_replicas, 0, drop_last=True)
    assert all(len(r) == len(reference) for r in ranks)
    flat = [i for r in ranks for i in r]
    assert len(flat) == len(set(flat)) == num_replicas * len(reference)


def test_deterministic_per_seed_and_epoch_and_different_across_epochs():
    first = epoch(5000, 2, epoch_number=3, seed=7, block_size=100)
    assert first == epoch(5000, 2, epoch_number=3, seed=7, block_size=100)
    assert first != epoch(5000, 2, epoch_number=4, seed=7, block_size=100)
    assert first != epoch(5000, 2, epoch_number=3, seed=8, block_size=100)
    assert first[0] != sorted(first[0]), "shuffled"
    block_orders = [[i // 100 for i in r[::100]] for r in first]
    assert block_orders[0] != sorted(block_orders[0]), "the blocks themselves are shuffled"


def test_reads_stay_within_blocks():
    size, block_size = 10_000, 250
    for order in epoch(size, 2, block_size=block_size, seed=1):
        same_block = sum(a // block_size == b // block_size for a, b in zip(order, order[1:]))
        # A rank's run crosses from one block to the next only between blocks.
        assert same_block >= len(order) - 1 - len(order) // block_size - 1
        # Each block is read whole, in one run, and its indices are shuffled inside it.
        runs = [order[i : i + block_size] for i in range(0, len(order), block_size)]
        assert all(len({i // block_size for i in run}) == 1 for run in runs)
        assert any(run != sorted(run) for run in runs)
    fully_random = list(DistributedSampler(range(size), 1, 0, seed=1))
    assert sum(a // block_size == b // block_size for a, b in zip(fully_random, fully_random[1:])) < size // 10


def test_shuffle_false_is_in_order():
    assert epoch(10, 2, shuffle=False) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_arguments_are_checked_and_it_is_exported():
    assert torchpack.BlockShuffleSampler is BlockShuffleSampler
    assert "BlockShuffleSampler" in torchpack.__all__
    with pytest.raises(ValueError, match="`rank` must be in"):
        BlockShuffleSampler(range(10), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="`block_size` must be >= 1"):
        BlockShuffleSampler(range(10), num_replicas=1, rank=0, block_size=0)
    with pytest.raises(ValueError, match="`num_replicas` must be >= 1"):
        BlockShuffleSampler(range(10), num_replicas=0, rank=0)
    sampler = BlockShuffleSampler(range(10))  # no process group: one replica
    assert sampler.num_replicas == 1 and sampler.rank == 0 and sorted(sampler) == list(range(10))


@pytest.mark.parametrize("size, batch, drop_last", [(10, 3, False), (10, 3, True), (9, 3, False), (1, 4, False)])
def test_array_batch_sampler_covers_every_index_once(size, batch, drop_last):
    sampler = torchpack.ArrayBatchSampler(range(size), batch, drop_last=drop_last, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) and all(isinstance(b, np.ndarray) for b in batches)
    assert all(len(b) == batch for b in batches[:-1]) and (not drop_last or len(batches[-1]) == batch)
    seen = np.concatenate(batches) if batches else np.array([], dtype=int)
    kept = size - size % batch if drop_last else size
    assert len(seen) == kept and len(set(seen.tolist())) == kept and set(seen.tolist()) <= set(range(size))
    assert [b.tolist() for b in batches] != [b.tolist() for b in sampler] or size <= 1  # the next epoch, another order
    sampler.set_epoch(0)
    assert [b.tolist() for b in sampler] == [b.tolist() for b in batches]  # epoch 0 again, the same order
    ordered = torchpack.ArrayBatchSampler(range(size), batch, shuffle=False)
    assert np.concatenate(list(ordered)).tolist() == list(range(size))
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        torchpack.ArrayBatchSampler(range(size), 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workers", [0, 2])
def test_array_batches_through_a_dataloader(backend, workers, small_stores):
    dataset = dataset_class(backend)(small_stores[backend], decode="numpy")
    sampler = torchpack.ArrayBatchSampler(dataset, 5, seed=1)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=list)
    got = [sample for batch in loader for sample in batch]
    order = np.concatenate(list(torchpack.ArrayBatchSampler(dataset, 5, seed=1)))
    assert len(got) == len(dataset) == len(order)
    for (image, target), i in zip(got, order.tolist()):
        assert target == dataset[i][1] and np.array_equal(image, dataset[i][0])
