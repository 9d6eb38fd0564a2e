"""A remote store's shards as local files for this process's readers: fetched into the node's cache, pinned while open.

This is the one place a remote store differs from a local one: :class:`torchpack.handles.ShardHandles`
asks it for a shard's local path instead of using the path it was given. A downloaded shard is
checked before anyone reads it: its header and index must be the very bytes the store was
opened with (so a store replaced under a cache is never mixed with it), and every sample's
CRC-32 must match (so a corrupted download is never cached).
"""

from __future__ import annotations

import threading
import weakref
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from torchpack.backends import get_backend
from torchpack.format import InvalidStoreError, decode_header, decode_index
from torchpack.process import after_fork_in_child
from torchpack.remote import RemoteShard, filesystem, object_version
from torchpack.shard_cache import CacheFullError, ShardCache

__all__ = ["RemoteShards", "StoreChangedError"]

_sources: weakref.WeakSet[RemoteShards] = weakref.WeakSet()


@after_fork_in_child
def _drop_inherited_pins() -> None:
    import os

    for source in list(_sources):
        for pin in source._pins.values():
            os.close(pin)  # closing (not unlocking) the child's copy leaves the parent's pin in place
        source.forget()


class StoreChangedError(InvalidStoreError):
    """A remote shard is not the version the dataset was opened on (the store was replaced)."""


class RemoteShards:
    """The shards of one remote store, cached on this node.

    Args:
        shards: the shard objects, in shard order, as they were when the store was opened.
        metadata: each shard's stored ``(header, index)`` bytes, as the store was opened with.
        backend: the store's backend.
        storage_options: for fsspec (credentials, endpoint, timeouts).
        cache: the node's shard cache.
    """

    def __init__(
        self,
        shards: Sequence[RemoteShard],
        metadata: Sequence[tuple[bytes, bytes]],
        backend: str,
        storage_options: dict[str, Any] | None,
        cache: ShardCache,
    ) -> None:
        self.shards = list(shards)
        self.metadata = list(metadata)
        self.backend = backend
        self.storage_options = storage_options
        self.cache = cache
        self.forget()

    def forget(self) -> None:
        """Drop this process's pins and downloads in flight (in a forked child: they are its parent's)."""
        self._pins: dict[int, int] = {}
        self._prefetching: dict[int, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        _sources.add(self)

    def fetch(self, shard: int) -> str:
        """The local path of ``shard``, downloading it into the cache if no process on the node has."""
        remote = self.shards[shard]
        if self.cache.is_cached(remote):
            return self.cache.path_of(remote)  # no client, no request: the common case once a node has it
        fs, _ = filesystem(remote.url, self.storage_options)
        return self.cache.fetch(fs, remote, lambda path: self._check(shard, path), before=lambda: self._same_version(fs, shard))

    def _same_version(self, fs: Any, shard: int) -> None:
        """Refuse to download a shard whose object is not the version the store was opened with."""
        remote = self.shards[shard]
        fs.invalidate_cache(remote.path)  # the version now, not as listed when the store was opened
        current = object_version(fs.info(remote.path))
        if current != remote.version:
            raise StoreChangedError(
                f"{remote.url} changed after this dataset was opened (was {remote.version}, now {current}): the "
                "store was replaced. Create the dataset again to read the new store."
            )

    def open(self, shard: int) -> str:
        """Fetch ``shard`` and pin it for this process (eviction skips it) until :meth:`release`."""
        with self._lock:
            if shard in self._pins:
                return self.cache.path_of(self.shards[shard])
        pending = self._prefetching.pop(shard, None)
        if pending is not None:
            pending.exception()  # wait for its download; if it failed, the fetch below says why
        for attempt in range(3):  # evicted between its download and its pin: fetch again
            try:
                path = self.fetch(shard)
            except StoreChangedError:
                raise
            except InvalidStoreError:  # a damaged download was not cached: one more try, then the error
                if attempt:
                    raise
                continue
            pin = self.cache.pin(path)
            if pin is not None:
                with self._lock:
                    self._pins[shard] = pin
                return path
        raise OSError(f"{self.shards[shard].url} was evicted from the cache {self.cache.dir} before it could be read, three times.")

    def release(self, shard: int) -> None:
        """Unpin ``shard`` (its readers in this process are closed)."""
        with self._lock:
            pin = self._pins.pop(shard, None)
        if pin is not None:
            self.cache.unpin(pin)

    def require_room(self, count: int) -> None:
        """Raise now if the cache's limit cannot hold the ``count`` largest shards at once.

        Raises:
            CacheFullError: naming the bytes needed.
        """
        limit = self.cache.limit
        needed = sum(sorted((shard.size for shard in self.shards), reverse=True)[:count])
        if limit is not None and needed > limit:
            raise CacheFullError(
                f"cache_limit={limit} bytes of {self.cache.dir} cannot hold the {min(count, len(self.shards))} shards "
                f"a reader of {self.shards[0].url.rsplit('/', 1)[0]}/ needs at once (the ones it reads and the ones "
                f"prefetched): they take up to {needed} bytes. Raise cache_limit to at least that, per reading rank "
                "on the node, or lower the window or prefetch."
            )

    def prefetch(self, shards: Sequence[int], threads: int = 2) -> None:
        """Download ``shards`` into the cache in the background (not pinned: readers pin what they open)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="torchpack-prefetch")
            for shard in shards:
                running = self._prefetching.get(shard)
                if (running is not None and not running.done()) or shard in self._pins:
                    continue
                if not self.cache.is_cached(self.shards[shard]):
                    self._prefetching[shard] = self._pool.submit(self.fetch, shard)

    def _check(self, shard: int, path: str) -> None:
        """Raise unless the file at ``path`` is exactly the shard this store was opened with, undamaged."""
        remote, (header_bytes, index_bytes) = self.shards[shard], self.metadata[shard]
        with get_backend(self.backend).reader(path) as reader:
            if reader.header_bytes() != header_bytes or reader.index_bytes() != index_bytes:
                raise StoreChangedError(
                    f"The downloaded {remote.url} holds another header or index than the store was opened with: "
                    "the shard and its index sidecar are of different conversions, or the store was replaced while "
                    "it downloaded. Create the dataset again."
                )
            header = decode_header(header_bytes, remote.url)
            index = decode_index(index_bytes, header, remote.url, data_size=reader.data_size)
            offsets, lengths = index.column("offset").to_pylist(), index.column("length").to_pylist()
            for row, crc in enumerate(index.column("crc32").to_pylist()):
                if zlib.crc32(reader.read(row, offsets[row], lengths[row])) != crc:
                    raise InvalidStoreError(
                        f"The download of {remote.url} is damaged: sample {row} does not match its checksum. It was "
                        "not cached; reading it again downloads it again."
                    )

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("shards", "metadata", "backend", "storage_options", "cache")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.forget()
