"""Images/s through a DataLoader (per item, batched, one whole first epoch), and the CPU time it took."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import psutil

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

import torchpack


def process_tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process, its threads and its descendants.

    Each process's own time plus what its reaped children used: a worker that exits and is
    reaped inside a timed window still counts, through its parent's ``children_*`` times.
    """
    total = 0.0
    me = psutil.Process(os.getpid())
    for process in [me, *me.children(recursive=True)]:
        try:
            t = process.cpu_times()
        except psutil.Error:  # gone between the listing and the read
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


@dataclass
class Timing:
    """``images`` delivered in ``seconds`` of wall time, using ``cpu_seconds`` of the process tree's CPU."""

    images: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Images per CPU-second: what a node with many cores multiplies."""
        return self.images / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


class PerItem(Dataset):
    """Hides a dataset's ``__getitems__``: the DataLoader then calls ``__getitem__`` once per sample."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]


def loader_rate(
    dataset,
    workers: int,
    batch_size: int,
    min_seconds: float,
    collate_fn: Callable | None = None,
    warmup_batches: int | None = None,
    array_batches: bool = False,
) -> float:
    """Images/s through a shuffling DataLoader (see ``loader_timing``)."""
    return loader_timing(dataset, workers, batch_size, min_seconds, collate_fn, warmup_batches, array_batches).rate


def loader_timing(
    dataset,
    workers: int,
    batch_size: int,
    min_seconds: float,
    collate_fn: Callable | None = None,
    warmup_batches: int | None = None,
    array_batches: bool = False,
) -> Timing:
    """Images, wall seconds and CPU seconds through a shuffling DataLoader: warm-up batches, then
    batches for at least ``min_seconds``.

    Workers are persistent and started before the clock, as in a training run's second epoch.
    ``array_batches``: shuffle with ``torchpack.ArrayBatchSampler`` (batches as index arrays).
    CPU time is this process's (all its threads) plus its workers', over the same window.
    """
    common = {"num_workers": workers, "persistent_workers": workers > 0, "collate_fn": collate_fn or default_collate}
    if array_batches:
        loader = DataLoader(dataset, batch_sampler=torchpack.ArrayBatchSampler(dataset, batch_size), **common)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0), **common)
    warmup = warmup_batches if warmup_batches is not None else 2 * max(workers, 1)
    for i, _ in enumerate(loader):
        if i + 1 >= warmup:
            break
    cpu = process_tree_cpu_seconds()
    images, started = 0, time.perf_counter()
    while True:
        for batch in loader:
            images += len(batch[1])
            if time.perf_counter() - started >= min_seconds:
                break
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    cpu = process_tree_cpu_seconds() - cpu
    del loader
    return Timing(images, elapsed, cpu)


def epoch_rate(dataset, batch_size: int, collate_fn: Callable) -> float:
    """Images/s of one whole shuffled epoch in this process, from a dataset no sample of which was read yet."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    images = sum(len(batch[1]) for batch in loader)
    return images / (time.perf_counter() - started)


def full_pass(dataset, batch_size: int, collate_fn: Callable | None = None) -> None:
    """Read every sample once in this process (its CRC-32 is then checked, and remembered)."""
    for start in range(0, len(dataset), batch_size):
        (collate_fn or default_collate)(dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset))))))
