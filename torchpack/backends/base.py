"""The two interfaces every backend implements: a reader of stored samples and a writer of a store."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["StoreReader", "StoreWriter"]


class StoreReader(abc.ABC):
    """Read access to one store file, opened in and used by one process only."""

    backend: str

    def __init__(self, path: str) -> None:
        self.path = path

    @abc.abstractmethod
    def read_header(self) -> dict[str, Any]:
        """The checked header."""

    @abc.abstractmethod
    def read_index(self, header: dict[str, Any]) -> pa.Table:
        """The checked sample index."""

    @abc.abstractmethod
    def read(self, row: int, offset: int, length: int) -> bytes | memoryview:
        """The stored bytes of the sample in index row ``row``."""

    def read_batch(self, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> list[bytes | memoryview]:
        """The stored bytes of several samples, in the order given."""
        return [self.read(int(r), int(o), int(n)) for r, o, n in zip(rows, offsets, lengths)]

    def data_view(self) -> memoryview | None:
        """All samples' bytes as one zero-copy view, where the backend keeps them contiguous (else None)."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file; the reader cannot be used afterwards."""

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreWriter(abc.ABC):
    """Writes samples into a staging folder, durably and resumably, then builds the store file.

    The converter keeps the journal of what was committed; a writer only has to make the
    samples it was given durable in :meth:`commit` and drop anything past a committed
    point in :meth:`truncate`.
    """

    backend: str

    def __init__(self, staging_dir: str, **options: Any) -> None:
        self.staging_dir = staging_dir

    @abc.abstractmethod
    def append(self, row: int, data: bytes) -> None:
        """Queue the stored bytes of index row ``row`` (rows arrive in order)."""

    @abc.abstractmethod
    def commit(self) -> int:
        """Make every queued sample durable; returns the data size written so far."""

    @abc.abstractmethod
    def truncate(self, num_rows: int, data_size: int) -> None:
        """Forget everything after the first ``num_rows`` samples (``data_size`` bytes), before resuming."""

    @abc.abstractmethod
    def finish(self, header: bytes, index: bytes, data_size: int) -> str:
        """Write header and index, sync, close; returns the path of the finished store file."""

    def abort(self) -> None:
        """Close without finishing, keeping what was committed."""
