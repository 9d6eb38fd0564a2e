"""Per-process store handles, and ``worker_init_fn`` for those who want them opened explicitly.

A dataset never owns an open handle. Handles live in a per-process cache keyed by store
path: opened on first use in each process, replaced when the process id changes (a forked
worker never touches its parent's handles), and shared by every dataset on the same store
in a process (py-lmdb refuses to open one file twice in a process).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

from torch.utils.data import get_worker_info

from torchpack.backends import StoreReader, open_reader

__all__ = ["borrowed_reader", "cached_reader", "worker_init_fn"]

_readers: dict[str, StoreReader] = {}
_readers_pid = os.getpid()
# Handles inherited through fork are kept referenced, never used or closed: closing an LMDB
# environment or an HDF5 file from a forked child is undefined behaviour in both libraries.
_inherited: list[StoreReader] = []


def _current_readers() -> dict[str, StoreReader]:
    global _readers_pid
    if os.getpid() != _readers_pid:
        _inherited.extend(_readers.values())
        _readers.clear()
        _readers_pid = os.getpid()
    return _readers


def cached_reader(path: str, backend: str, **options: Any) -> StoreReader:
    """This process's reader of the store at ``path``, opened on first use."""
    readers = _current_readers()
    reader = readers.get(path)
    if reader is None:
        reader = readers[path] = open_reader(path, backend, **options)
    return reader


@contextlib.contextmanager
def borrowed_reader(path: str, backend: str | None = None, **options: Any) -> Iterator[StoreReader]:
    """A reader for a short look at a store: this process's cached one, else a temporary one closed after."""
    reader = _current_readers().get(path)
    if reader is not None:
        yield reader
        return
    reader = open_reader(path, backend, **options)
    try:
        yield reader
    finally:
        reader.close()


def _store_datasets(dataset: Any, depth: int = 0) -> Iterator[Any]:
    """Store datasets inside ``dataset``, looking through Subset, ConcatDataset and similar wrappers."""
    if depth > 8:
        return
    if hasattr(dataset, "open_handles"):
        yield dataset
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        yield from _store_datasets(inner, depth + 1)
    for inner in getattr(dataset, "datasets", None) or ():
        yield from _store_datasets(inner, depth + 1)


class _ChainedWorkerInit:
    """``worker_init_fn`` that opens the store handles, then calls the user's own init function."""

    def __init__(self, user_fn: Callable[[int], None]) -> None:
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        worker_init_fn(worker_id)
        self.user_fn(worker_id)


def worker_init_fn(worker_id_or_fn: int | Callable[[int], None]) -> Any:
    """Open this DataLoader worker's store handles now instead of on its first sample.

    Handles open lazily anyway, so this is optional. Two forms::

        DataLoader(ds, num_workers=4, worker_init_fn=torchpack.worker_init_fn)
        DataLoader(ds, num_workers=4, worker_init_fn=torchpack.worker_init_fn(my_init))

    The second opens the handles, then calls ``my_init(worker_id)``.
    """
    if callable(worker_id_or_fn):
        return _ChainedWorkerInit(worker_id_or_fn)
    info = get_worker_info()
    if info is not None:
        for dataset in _store_datasets(info.dataset):
            dataset.open_handles()
    return None
