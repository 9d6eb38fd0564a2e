"""torch.distributed (gloo, 2 CPU ranks) with DataLoader workers: every sample once per epoch across the ranks."""

from __future__ import annotations

import json
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, dataset_class

WORLD_SIZE = 2
EPOCHS = 2


class Indexed(Dataset):
    """Reads and decodes the sample, returns its index, its target and its image's shape."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        return index, target, list(image.shape)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, backend: str, store: str, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        dataset = Indexed(dataset_class(backend)(store, decode="tensor"))
        samplers = {
            "distributed": DistributedSampler(dataset, seed=3),
            "block": torchpack.BlockShuffleSampler(dataset, seed=3, block_size=4),
        }
        seen = {}
        for name, sampler in samplers.items():
            # fork, as torchrun's ranks get on Linux by default (spawned ranks would otherwise spawn their workers).
            loader = DataLoader(
                dataset, batch_size=3, sampler=sampler, num_workers=2, collate_fn=list,
                multiprocessing_context="fork", persistent_workers=True,
            )
            for epoch in range(EPOCHS):
                sampler.set_epoch(epoch)
                mine = [(i, t, shape) for batch in loader for i, t, shape in batch]
                gathered = [None] * WORLD_SIZE
                dist.all_gather_object(gathered, mine)
                seen[f"{name}/{epoch}"] = gathered
        if rank == 0:
            with open(out, "w") as f:
                json.dump(seen, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_sample_once_per_epoch_across_ranks(backend, small_stores, small_tree, tmp_path):
    out = tmp_path / "seen.json"
    torch.multiprocessing.start_processes(
        _rank_main, args=(backend, small_stores[backend], free_port(), str(out)), nprocs=WORLD_SIZE,
        join=True, start_method="spawn",
    )
    seen = json.loads(out.read_text())
    reference = ImageFolder(small_tree)
    assert len(reference) % WORLD_SIZE == 0  # so no padding: exactly once
    assert sorted(seen) == [f"{name}/{epoch}" for name in ("block", "distributed") for epoch in range(EPOCHS)]
    for key, ranks in seen.items():
        assert all(len(r) == len(reference) // WORLD_SIZE for r in ranks), key
        records = [record for r in ranks for record in r]
        assert sorted(i for i, _, _ in records) == list(range(len(reference))), key
        for i, target, shape in records:
            image = reference[i][0]
            assert target == reference.targets[i] and shape == [3, image.height, image.width], key
    for name in ("block", "distributed"):
        assert seen[f"{name}/0"] != seen[f"{name}/1"], "epochs are shuffled differently"
    assert seen["block/0"] != seen["distributed/0"]
