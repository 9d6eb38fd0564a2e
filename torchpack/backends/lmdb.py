"""LMDB backend: one file (``subdir=False``), one key per sample, header and index under reserved keys.

Sample keys are 8-byte big-endian row numbers, so key order is ImageFolder order and the
writer can bulk-load in append mode. The reserved keys start with ``__torchpack__/`` and
so sort after every sample key.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import lmdb
import numpy as np

from torchpack.backends.base import Backend, StoreReader, StoreWriter
from torchpack.format import InvalidStoreError, sample_key

__all__ = ["BACKEND", "HEADER_KEY", "INDEX_KEY", "LMDBReader", "LMDBWriter", "check_lmdb_file"]

HEADER_KEY = b"__torchpack__/header"
INDEX_KEY = b"__torchpack__/index"
STAGED_NAME = "store.lmdb"
COMPACT_NAME = "compact.lmdb"

_META_MAGIC = 0xBEEFC0DE
_PAGE_HEADER = 16  # pgno (8), pad (2), flags (2), lower (2), upper (2) on 64-bit builds
_TAIL_PAD = 2 * 65536 + 4096


def check_lmdb_file(path: str) -> int:
    """Check the two LMDB meta pages against the file's real size before LMDB maps it; returns the size they promise.

    LMDB memory-maps the file, so touching a page past the end of a truncated file
    raises SIGBUS and kills the process; this turns that into an error.

    Raises:
        InvalidStoreError: the meta pages are damaged or promise more pages than the file has.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        first = f.read(4096)
        if len(first) < _PAGE_HEADER + 136:
            raise InvalidStoreError(f"{path}: truncated LMDB file ({size} bytes).")
        page_size = struct.unpack_from("<I", first, _PAGE_HEADER + 24)[0]
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            raise InvalidStoreError(f"{path}: damaged LMDB meta page (page size {page_size}).")
        f.seek(page_size)
        second = f.read(_PAGE_HEADER + 136)
    metas = []
    for page in (first, second):
        if len(page) < _PAGE_HEADER + 136:
            raise InvalidStoreError(f"{path}: truncated LMDB file ({size} bytes).")
        magic, version = struct.unpack_from("<II", page, _PAGE_HEADER)
        if magic != _META_MAGIC or version != 1:
            raise InvalidStoreError(f"{path}: damaged LMDB meta page.")
        last_page, txn_id = struct.unpack_from("<QQ", page, _PAGE_HEADER + 120)
        metas.append((txn_id, last_page))
    _, last_page = max(metas)
    needed = (last_page + 1) * page_size
    if size < needed:
        raise InvalidStoreError(f"{path}: truncated LMDB file: its header promises {needed} bytes, the file has {size}.")
    return needed


def _pad_tail(path: str) -> None:
    """End the file with zeros past LMDB's last page (LMDB ignores them).

    A damaged in-page offset (16 bits, plus a 16-bit key size) of a page near the end then
    still lands inside the file, where LMDB reads garbage and reports an error, instead of
    past its end, where touching the map raises SIGBUS.
    """
    os.truncate(path, check_lmdb_file(path) + _TAIL_PAD)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class LMDBReader(StoreReader):
    """Reads one LMDB store; opened read-only without a lock file, so it works on read-only media."""

    backend = "lmdb"

    def __init__(self, path: str, *, readahead: bool = True) -> None:
        super().__init__(path)
        check_lmdb_file(path)
        try:
            self._env = lmdb.open(
                path, subdir=False, readonly=True, lock=False, readahead=readahead, meminit=False, max_readers=1
            )
        except lmdb.Error as exc:
            raise InvalidStoreError(f"{path}: cannot open as an LMDB store ({exc}).") from exc
        # One read transaction for the reader's lifetime: reads are then a B-tree lookup, and
        # buffers=True hands out zero-copy views of the map that stay valid until close().
        self._txn = self._env.begin(buffers=True)

    def header_bytes(self) -> bytes:
        raw = self._get(HEADER_KEY)
        if raw is None:
            raise InvalidStoreError(f"{self.path}: an LMDB file without a torchpack header (not a torchpack store).")
        return bytes(raw)

    def index_bytes(self) -> bytes:
        raw = self._get(INDEX_KEY)
        if raw is None:
            raise InvalidStoreError(f"{self.path}: the LMDB store has no sample index.")
        return bytes(raw)

    def _get(self, key: bytes) -> memoryview | None:
        try:
            return self._txn.get(key)
        except lmdb.Error as exc:
            raise InvalidStoreError(f"{self.path}: damaged LMDB store ({exc}).") from exc

    def read(self, row: int, offset: int, length: int) -> memoryview:
        try:
            data = self._txn.get(row.to_bytes(8, "big"))  # sample_key(), inlined: this is the hot path
        except lmdb.Error as exc:
            raise InvalidStoreError(f"{self.path}: damaged LMDB store ({exc}).") from exc
        if data is None or len(data) != length:
            raise InvalidStoreError(f"{self.path}: sample {row} is missing or has the wrong length.")
        return data

    def read_batch(self, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> list[memoryview]:
        # A get() per key beats cursor.getmulti() by about 2x (no key/value tuples, no dict).
        get = self._txn.get
        try:
            values = list(map(get, map(sample_key, rows.tolist())))
        except lmdb.Error as exc:
            raise InvalidStoreError(f"{self.path}: damaged LMDB store ({exc}).") from exc
        try:
            if list(map(len, values)) == lengths.tolist():
                return values
        except TypeError:  # a missing key gave None
            pass
        for row, data, length in zip(rows.tolist(), values, lengths.tolist()):
            if data is None or len(data) != length:
                raise InvalidStoreError(f"{self.path}: sample {row} is missing or has the wrong length.")
        return values

    def after_fork(self) -> None:
        # py-lmdb refuses to open a file that an inherited environment still holds ("already
        # open in this process"), so the child closes its copy. The reader is read-only with
        # lock=False (no shared lock table): closing only unmaps this process's copy of the file.
        self.close()

    def close(self) -> None:
        if self._env is not None:
            self._txn.abort()
            self._env.close()
            self._env = None


class LMDBWriter(StoreWriter):
    """Writes samples in append mode, one transaction per commit, growing the map when it is full."""

    backend = "lmdb"

    def __init__(self, staging_dir: str, initial_map_size: int = 1 << 30, **options: Any) -> None:
        super().__init__(staging_dir)
        self.path = os.path.join(staging_dir, STAGED_NAME)
        self._map_size = max(initial_map_size, 1 << 16)
        # lock=False: the converter's staging folder already gives one writer per store.
        self._env = lmdb.open(
            self.path, subdir=False, map_size=self._map_size, lock=False, readahead=False, meminit=False, max_dbs=0
        )
        self._map_size = self._env.info()["map_size"]
        self._pending: list[tuple[int, bytes]] = []
        self._data_size = 0

    def append(self, row: int, data: bytes) -> None:
        self._pending.append((row, data))
        self._data_size += len(data)

    def commit(self) -> int:
        self._write(lambda txn: self._put_pending(txn))
        self._pending.clear()
        return self._data_size

    def _put_pending(self, txn: lmdb.Transaction) -> None:
        for row, data in self._pending:
            txn.put(sample_key(row), data, append=True)

    def _write(self, body) -> None:
        """Run ``body`` in a write transaction, doubling the map and retrying while it is full."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    body(txn)
                return
            except lmdb.MapFullError:
                self._map_size *= 2
                self._env.set_mapsize(self._map_size)
            except lmdb.Error as exc:
                # LMDB reports a short write (disk full, file size limit) as EIO, so say so.
                raise OSError(
                    f"Writing {self.path} failed: {exc} (is the disk full, or a file size limit reached?)"
                ) from exc

    def truncate(self, num_rows: int, data_size: int) -> None:
        def delete_tail(txn: lmdb.Transaction) -> None:
            cursor = txn.cursor()
            if cursor.set_range(sample_key(num_rows)):
                while len(cursor.key()) == 8 and cursor.delete():
                    pass

        self._write(delete_tail)
        self._pending.clear()
        self._data_size = data_size

    def finish(self, header: bytes, index: bytes, data_size: int) -> str:
        def put_metadata(txn: lmdb.Transaction) -> None:
            txn.put(INDEX_KEY, index)
            txn.put(HEADER_KEY, header)

        self._write(put_metadata)
        self._env.sync(True)
        path = self._compact_copy() or self.path
        self._env.close()
        _pad_tail(path)
        return path

    def _compact_copy(self) -> str | None:
        """A copy without free pages, when they are 1% or more of the file (else None).

        Copy-on-write leaves the pages each commit replaced in the file. In a large store
        they are a few pages; in a small one they can make the store larger than its tree.
        """
        stat, info = self._env.stat(), self._env.info()
        total = info["last_pgno"] + 1
        used = 2 + stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]  # 2 meta pages
        if (total - used) * 100 < total:
            return None
        path = os.path.join(self.staging_dir, COMPACT_NAME)
        with open(path, "wb") as f:
            self._env.copyfd(f.fileno(), compact=True)
            os.fsync(f.fileno())
        return path

    def abort(self) -> None:
        self._pending.clear()
        self._env.close()


def is_lmdb_file(head: bytes) -> bool:
    """Whether a file starting with ``head`` is an LMDB data file (its first meta page's magic)."""
    return len(head) >= _PAGE_HEADER + 8 and int.from_bytes(head[_PAGE_HEADER : _PAGE_HEADER + 4], "little") == _META_MAGIC


BACKEND = Backend(
    name="lmdb",
    label="LMDB",
    extensions=(".lmdb", ".mdb"),
    reader=LMDBReader,
    writer=LMDBWriter,
    sniff=is_lmdb_file,
)
