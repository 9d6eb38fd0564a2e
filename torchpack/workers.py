"""Per-process store handles, and ``worker_init_fn`` for those who want them opened explicitly.

A dataset never owns an open handle. Handles live in a per-process cache keyed by store
path: opened on first use in each process, replaced when the process id changes (a forked
worker never touches its parent's handles), and shared by every dataset on the same store
in a process (py-lmdb refuses to open one file twice in a process).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Tuple

from torch.utils.data import get_worker_info

from torchpack.backends import StoreReader, check_backend, open_reader
from torchpack.format import InvalidStoreError

__all__ = ["borrowed_reader", "cached_reader", "file_identity", "worker_init_fn"]

FileIdentity = Tuple[int, int]

# Keyed by path and file identity: a store replaced at the same path (convert(..., overwrite=True))
# is a new file, and datasets made on the old one keep reading the old one.
_readers: dict[tuple[str, FileIdentity], StoreReader] = {}
_readers_pid = os.getpid()
# HDF5 handles inherited through fork are kept referenced, never used or closed: closing an
# HDF5 file from a forked child touches library state shared with the parent.
_inherited: list[StoreReader] = []


def file_identity(path: str) -> FileIdentity:
    """``(st_dev, st_ino)`` of the file at ``path``: which file a path named when a store was opened."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _current_identity(path: str) -> FileIdentity | None:
    try:
        return file_identity(path)
    except OSError:
        return None  # opening reports the missing file, with torchpack's message


def _current_readers() -> dict[tuple[str, FileIdentity], StoreReader]:
    global _readers_pid
    if os.getpid() != _readers_pid:
        for reader in _readers.values():
            if reader.backend == "lmdb":
                # py-lmdb refuses to open a file that an inherited environment still holds
                # ("already open in this process"), so the child must close its copy. Readers
                # are read-only with lock=False (no shared lock table): closing only unmaps
                # this process's copy of the file.
                reader.close()
            else:
                _inherited.append(reader)
        _readers.clear()
        _readers_pid = os.getpid()
    return _readers


def cached_reader(path: str, backend: str, identity: FileIdentity | None = None, **options: Any) -> StoreReader:
    """This process's reader of the store at ``path``, opened on first use.

    Args:
        path: the store file.
        backend: its backend.
        identity: the :func:`file_identity` the caller indexed (default: the file there now).

    Raises:
        InvalidStoreError: the file at ``path`` is no longer the one with ``identity``.
    """
    readers = _current_readers()
    key = (path, _current_identity(path) if identity is None else identity)
    reader = readers.get(key)
    if reader is None:
        if identity is not None and file_identity(path) != identity:
            raise InvalidStoreError(
                f"{path} was replaced after this dataset was created (overwritten by a new conversion?); "
                "create the dataset again to read the new store."
            )
        reader = readers[key] = open_reader(path, backend, **options)
    return reader


@contextlib.contextmanager
def borrowed_reader(
    path: str, backend: str | None = None, identity: FileIdentity | None = None, **options: Any
) -> Iterator[StoreReader]:
    """A reader for a short look at a store: this process's cached one, else a temporary one closed after."""
    reader = _current_readers().get((path, _current_identity(path) if identity is None else identity))
    if reader is not None:
        check_backend(path, reader.backend, backend)
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
