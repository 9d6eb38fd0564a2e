"""A test-only backend whose stores live in this process's memory: a backend is one module plus one registry line.

The store file holds only a name; the header, index and samples stay in ``STORES`` (so the
store reads in this process and in workers it forks, not after a restart).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from torchpack.backends.base import Backend, StoreReader, StoreWriter
from torchpack.format import InvalidStoreError

MAGIC = b"TORCHPACK-MEMORY\n"
STORES: dict[str, dict[str, Any]] = {}


class MemoryReader(StoreReader):
    backend = "memory"

    def __init__(self, path: str, *, readahead: bool = True) -> None:
        super().__init__(path)
        with open(path, "rb") as f:
            name = f.read()[len(MAGIC) :].decode()
        if name not in STORES:
            raise InvalidStoreError(f"{path}: its memory store {name!r} is not in this process.")
        self._store = STORES[name]

    def header_bytes(self) -> bytes:
        return self._store["header"]

    def index_bytes(self) -> bytes:
        return self._store["index"]

    def read(self, row: int, offset: int, length: int) -> bytes:
        data = self._store["samples"].get(row)
        if data is None or len(data) != length:
            raise InvalidStoreError(f"{self.path}: sample {row} is missing or has the wrong length.")
        return data

    def close(self) -> None:
        self._store = None


class MemoryWriter(StoreWriter):
    backend = "memory"

    def __init__(self, staging_dir: str, **options: Any) -> None:
        super().__init__(staging_dir)
        self.name = os.path.abspath(staging_dir)
        self._samples = STORES.setdefault(self.name, {"samples": {}})["samples"]
        self._pending: list[tuple[int, bytes]] = []
        self._size = sum(map(len, self._samples.values()))

    def append(self, row: int, data: bytes) -> None:
        self._pending.append((row, bytes(data)))

    def commit(self) -> int:
        for row, data in self._pending:
            self._samples[row] = data
            self._size += len(data)
        self._pending.clear()
        return self._size

    def truncate(self, num_rows: int, data_size: int) -> None:
        for row in [r for r in self._samples if r >= num_rows]:
            del self._samples[row]
        self._pending.clear()
        self._size = data_size

    def finish(self, header: bytes, index: bytes, data_size: int) -> str:
        self.commit()
        name = uuid.uuid4().hex
        STORES[name] = {"header": header, "index": index, "samples": STORES.pop(self.name)["samples"]}
        path = os.path.join(self.staging_dir, "store.mem")
        with open(path, "wb") as f:
            f.write(MAGIC + name.encode())
        return path


BACKEND = Backend(
    name="memory",
    label="in-memory",
    extensions=(".mem",),
    reader=MemoryReader,
    writer=MemoryWriter,
    sniff=lambda head: head.startswith(MAGIC),
)
