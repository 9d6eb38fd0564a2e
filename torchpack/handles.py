"""This process's open store readers: opened on first use, shared by every dataset on a file, never carried across a fork.

A dataset never owns an open handle. Readers live in one per-process cache keyed by path and
file identity; a dataset's :class:`ShardHandles` points into it. A forked child drops the
whole cache (each backend's ``after_fork`` hook decides what that means for its handles) and
opens its own on first use; pickling a dataset (spawn, forkserver) carries no handle at all.
py-lmdb refuses to open one file twice in a process, hence the shared cache.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any, Iterator, Sequence, Tuple

from torchpack.backends import StoreReader, check_backend, open_reader
from torchpack.format import InvalidStoreError
from torchpack.process import after_fork_in_child

__all__ = ["FileIdentity", "ShardHandles", "borrowed_reader", "cached_reader", "file_identity"]

#: A process keeps at most this many shards of a remote store open (and pinned in the node's
#: cache) unless told otherwise (ShardWindowSampler: its window); opening another closes the
#: least recently opened one.
MAX_OPEN_REMOTE_SHARDS = 2

FileIdentity = Tuple[int, int]

# Keyed by path and file identity: a store replaced at the same path (convert(..., overwrite=True))
# is a new file, and datasets made on the old one keep reading the old one.
_readers: dict[tuple[str, FileIdentity], StoreReader] = {}
_users: dict[tuple[str, FileIdentity], int] = {}  # readers of cached remote shards: closed when none uses them
# Readers inherited through fork stay referenced, never garbage-collected: see StoreReader.after_fork.
_inherited: list[StoreReader] = []
_handles: weakref.WeakSet[ShardHandles] = weakref.WeakSet()


@after_fork_in_child
def _drop_inherited_readers() -> None:
    for reader in _readers.values():
        reader.after_fork()
        _inherited.append(reader)
    _readers.clear()
    _users.clear()
    for handles in list(_handles):
        handles.forget()


def file_identity(path: str) -> FileIdentity:
    """``(st_dev, st_ino)`` of the file at ``path``: which file a path named when a store was opened."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _current_identity(path: str) -> FileIdentity | None:
    try:
        return file_identity(path)
    except OSError:
        return None  # opening reports the missing file, with torchpack's message


def cached_reader(path: str, backend: str, identity: FileIdentity | None = None, **options: Any) -> StoreReader:
    """This process's reader of the store at ``path``, opened on first use.

    Args:
        path: the store file.
        backend: its backend.
        identity: the :func:`file_identity` the caller indexed (default: the file there now).
        options: for the backend's reader (``readahead``), used when this call opens it.

    Raises:
        InvalidStoreError: the file at ``path`` is no longer the one with ``identity``.
    """
    key = (path, _current_identity(path) if identity is None else identity)
    reader = _readers.get(key)
    if reader is None:
        if identity is not None and file_identity(path) != identity:
            raise InvalidStoreError(
                f"{path} was replaced after this dataset was created (overwritten by a new conversion?); "
                "create the dataset again to read the new store."
            )
        reader = _readers[key] = open_reader(path, backend, **options)
    return reader


@contextlib.contextmanager
def borrowed_reader(
    path: str, backend: str | None = None, identity: FileIdentity | None = None, **options: Any
) -> Iterator[StoreReader]:
    """A reader for a short look at a store: this process's cached one, else a temporary one closed after."""
    reader = _readers.get((path, _current_identity(path) if identity is None else identity))
    if reader is not None:
        check_backend(path, reader.backend, backend, reader)
        yield reader
        return
    reader = open_reader(path, backend, **options)
    try:
        yield reader
    finally:
        reader.close()


def _shared_reader(path: str, backend: str, **options: Any) -> StoreReader:
    key = (path, file_identity(path))
    reader = _readers.get(key)
    if reader is None:
        reader = _readers[key] = open_reader(path, backend, **options)
    _users[key] = _users.get(key, 0) + 1
    return reader


def _release_reader(reader: StoreReader) -> None:
    for key, cached in list(_readers.items()):
        if cached is reader:
            _users[key] = _users.get(key, 1) - 1
            if _users[key] <= 0:
                del _readers[key], _users[key]
                reader.close()


class ShardHandles:
    """One dataset's readers of its shard files in this process, opened on first use.

    Args:
        files: the shard files (or a remote store's shard URLs), in shard order.
        backend: their backend.
        identities: the :func:`file_identity` of each file when the dataset indexed it.
        source: a remote store's :class:`torchpack.remote_shards.RemoteShards`, which gives each
            shard's local copy; None for files on this machine.
        options: for the backend's readers (``readahead``).
    """

    def __init__(
        self, files: Sequence[str], backend: str, identities: Sequence[Any], source: Any = None, **options: Any
    ) -> None:
        self.files = list(files)
        self.backend = backend
        self.identities = list(identities)
        self.source = source
        self.options = options
        self.readers: list[StoreReader | None] = [None] * len(self.files)
        self._opened: list[int] = []  # remote shards open in this process, oldest first
        self.max_open = MAX_OPEN_REMOTE_SHARDS
        _handles.add(self)

    def reader(self, shard: int) -> StoreReader:
        """The reader of shard ``shard``, opening it in this process if needed."""
        reader = self.readers[shard]
        if reader is None:
            reader = self.readers[shard] = self._open(shard)
        return reader

    def _open(self, shard: int) -> StoreReader:
        if self.source is None:
            return cached_reader(self.files[shard], self.backend, self.identities[shard], **self.options)
        while len(self._opened) >= self.max_open:
            self.release(self._opened[0])
        path = self.source.open(shard)
        try:
            reader = _shared_reader(path, self.backend, **self.options)
        except BaseException:
            self.source.release(shard)
            raise
        self._opened.append(shard)
        return reader

    def release(self, shard: int) -> None:
        """Close this dataset's reader of a remote shard and unpin it in the node's cache."""
        reader = self.readers[shard]
        if reader is None or self.source is None:
            return
        self.readers[shard] = None
        self._opened.remove(shard)
        _release_reader(reader)
        self.source.release(shard)

    def open_all(self) -> None:
        """Open every shard's reader now (they otherwise open on first read); a remote store's open as read."""
        if self.source is not None:
            return  # opening would download every shard
        for shard in range(len(self.files)):
            self.reader(shard)

    def forget(self) -> None:
        """Drop the references to readers (in a forked child: they are the parent's)."""
        self.readers = [None] * len(self.files)
        self._opened = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "readers": [None] * len(self.files), "_opened": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _handles.add(self)
