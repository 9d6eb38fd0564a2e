"""The node-local shard cache: remote shards fetched whole, once per node, shared by every process through the file system.

Layout of ``cache_dir`` (default ``$TORCHPACK_CACHE``, else ``~/.cache/torchpack``)::

    shards/<digest><ext>             a finished shard; the digest is of its URL and version
    shards/<digest><ext>.lock        flock'ed (exclusive) by the one process downloading it
    shards/<digest><ext>.tmp-<pid>   a download in progress, renamed into place when whole and checked
    evict.lock                       flock'ed while a process makes room under ``limit``

A process reading a shard holds a shared ``flock`` on its file; eviction takes an exclusive
one without waiting, so it never removes a shard in use and never waits for one: when nothing
can be evicted it raises, naming the room needed. There is no shared memory: a crash leaves
only files, and every lock dies with its process.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import os
import re
from typing import Any, Callable

from torchpack.download import download
from torchpack.remote import RemoteShard

__all__ = ["CacheFullError", "ShardCache", "default_cache_dir", "parse_size"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TB": 1 << 40}


class CacheFullError(OSError):
    """The shard cache cannot make room: every shard in it is in use, or the limit is below one shard."""


def default_cache_dir() -> str:
    """``$TORCHPACK_CACHE``, else ``~/.cache/torchpack``."""
    return os.environ.get("TORCHPACK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "torchpack")


def parse_size(size: int | str | None) -> int | None:
    """Bytes from an int or a string such as ``"200GB"`` or ``"1.5 T"`` (binary units); None stays None.

    Raises:
        ValueError: not a size.
    """
    if size is None or (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        return size
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(size))
    if match is None or match.group(2).upper() not in _UNITS or isinstance(size, bool):
        raise ValueError(f"`cache_limit` must be a number of bytes or a size such as '200GB', got {size!r}.")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise ValueError(f"`cache_limit` must be positive, got {size!r}.")
    return value


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


class ShardCache:
    """A node's cache of remote shards (see the module's docstring for what it keeps where).

    Args:
        cache_dir: where (default: ``$TORCHPACK_CACHE``, else ``~/.cache/torchpack``); put it
            on a local disk that every rank and worker of the node sees.
        limit: the most bytes of shards to keep (an int, or ``"200GB"``); None: no limit. Least
            recently used shards that no process is reading are evicted to make room.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, limit: int | str | None = None) -> None:
        self.dir = os.path.abspath(os.fspath(cache_dir) if cache_dir is not None else default_cache_dir())
        self.limit = parse_size(limit)
        self.shards = os.path.join(self.dir, "shards")

    def path_of(self, shard: RemoteShard) -> str:
        """Where ``shard`` (that version of it) is cached."""
        digest = hashlib.sha256(f"{shard.url}\0{shard.version}".encode()).hexdigest()[:32]
        return os.path.join(self.shards, digest + os.path.splitext(shard.name)[1].lower())

    def is_cached(self, shard: RemoteShard) -> bool:
        """Whether that version of ``shard`` is in the cache now."""
        return os.path.exists(self.path_of(shard))

    def fetch(
        self, fs: Any, shard: RemoteShard, check: Callable[[str], None], before: Callable[[], None] | None = None
    ) -> str:
        """The local copy of ``shard``, downloaded (once for the node) if it is not cached yet.

        ``before()`` is called by the one process that downloads it, before it does (it may
        raise); ``check(path)`` on a finished download before it is renamed into place (it
        raises if the copy is not the shard expected).

        Raises:
            CacheFullError: no room under the limit (the message names the room needed).
            OSError: the download failed, or the cache's disk is full (the message names the shard).
        """
        path = self.path_of(shard)
        if os.path.exists(path):
            return path
        os.makedirs(self.shards, exist_ok=True)
        lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process on the node may be downloading it: wait for it
            if not os.path.exists(path):
                if before is not None:
                    before()
                self._download(fs, shard, path, check)
        finally:
            _unlock(lock)
        return path

    def _download(self, fs: Any, shard: RemoteShard, path: str, check: Callable[[str], None]) -> None:
        for stale in glob.glob(glob.escape(path) + ".tmp-*"):
            os.remove(stale)  # left by a process killed while downloading (this one holds the lock now)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with self._evict_lock():
                self._make_room(shard)
                with open(tmp, "wb") as f:
                    f.truncate(shard.size)  # counted against the limit from now on
            download(fs, shard, tmp)
            check(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            _remove(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise OSError(
                    exc.errno,
                    f"The shard cache's disk is full: writing {shard.url} ({_human(shard.size)}) into {self.shards} "
                    f"failed ({exc.strerror}). Free space there, or set cache_limit below the free space.",
                ) from exc
            raise
        except BaseException:
            _remove(tmp)
            raise

    def _evict_lock(self):
        cache = self

        class _Lock:
            def __enter__(self) -> None:
                self.fd = os.open(os.path.join(cache.dir, "evict.lock"), os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self.fd, fcntl.LOCK_EX)

            def __exit__(self, *exc: object) -> None:
                _unlock(self.fd)

        return _Lock()

    def _entries(self) -> list[tuple[str, int, float]]:
        """``(path, bytes, last used)`` of every shard file and download in progress."""
        entries = []
        for name in os.listdir(self.shards) if os.path.isdir(self.shards) else ():
            if name.endswith(".lock"):
                continue
            try:
                stat = os.stat(os.path.join(self.shards, name))
            except FileNotFoundError:
                continue
            entries.append((os.path.join(self.shards, name), stat.st_size, stat.st_mtime))
        return entries

    def _make_room(self, shard: RemoteShard) -> None:
        if self.limit is None:
            return
        entries = self._entries()
        used = sum(size for _, size, _ in entries)
        if used + shard.size <= self.limit:
            return
        for path, size, _ in sorted((e for e in entries if ".tmp-" not in e[0]), key=lambda e: e[2]):
            if _evict_if_unused(path):
                used -= size
                if used + shard.size <= self.limit:
                    return
        raise CacheFullError(
            f"The shard cache {self.dir} (cache_limit={_human(self.limit)}) cannot make room for {shard.url} "
            f"({_human(shard.size)}): the {_human(used)} in it are shards that processes on this node are reading "
            f"(or downloading). It needs at least {_human(used + shard.size)} ({used + shard.size} bytes) here: raise "
            "cache_limit to that, or read fewer shards at once (a smaller window or prefetch)."
        )

    def pin(self, path: str) -> int | None:
        """Mark ``path`` in use by this process (eviction skips it) and as just used; returns the pin to
        give to :meth:`unpin`, or None if the shard was evicted before it could be pinned."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        os.utime(path)  # least recently used is evicted first
        return fd

    @staticmethod
    def unpin(pin: int) -> None:
        """Release a pin from :meth:`pin`."""
        os.close(pin)

    def __repr__(self) -> str:
        return f"ShardCache({self.dir!r}, limit={self.limit})"


def _unlock(fd: int) -> None:
    """Release an exclusive lock and close it.

    Closing alone is not enough: a process forked while the lock was held (a DataLoader starting
    its workers during a prefetch) shares the locked file description, and the lock would then
    outlive this process's hold on it, blocking that child for good.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _evict_if_unused(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # a process is reading it
    os.remove(path)
    os.close(fd)
    return True


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
