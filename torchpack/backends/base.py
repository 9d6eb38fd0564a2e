"""What a backend is: a reader of stored samples, a writer of a store, and how its files are recognised."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from torchpack.format import decode_header, decode_index

__all__ = ["Backend", "StoreReader", "StoreWriter"]


class StoreReader(abc.ABC):
    """Read access to one store file, opened in and used by one process only.

    Args:
        path: the store file.
        readahead: a hint that reads will be sequential (True) or random over a store larger
            than RAM (False); a backend that cannot act on it ignores it.
    """

    backend: str
    #: The size of the data region, where the backend has one (it bounds every sample's offset + length).
    data_size: int | None = None

    def __init__(self, path: str, *, readahead: bool = True) -> None:
        self.path = path

    @abc.abstractmethod
    def header_bytes(self) -> bytes:
        """The header as stored (UTF-8 JSON, sealed with its checksums).

        Raises:
            InvalidStoreError: the file has none (it is not a torchpack store), or it cannot be read.
        """

    @abc.abstractmethod
    def index_bytes(self) -> bytes:
        """The sample index as stored (an Arrow IPC stream).

        Raises:
            InvalidStoreError: the file has none, or it cannot be read.
        """

    def read_header(self) -> dict[str, Any]:
        """The checked header."""
        return decode_header(self.header_bytes(), self.path)

    def read_index(self, header: dict[str, Any]) -> pa.Table:
        """The checked sample index."""
        return decode_index(self.index_bytes(), header, self.path, data_size=self.data_size)

    @abc.abstractmethod
    def read(self, row: int, offset: int, length: int) -> bytes | memoryview:
        """The stored bytes of the sample in index row ``row``."""

    def read_batch(self, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> list[bytes | memoryview]:
        """The stored bytes of several samples, in the order given."""
        return [self.read(int(r), int(o), int(n)) for r, o, n in zip(rows, offsets, lengths)]

    def data_view(self) -> memoryview | None:
        """All samples' bytes as one zero-copy view, where the backend keeps them contiguous (else None)."""
        return None

    def after_fork(self) -> None:
        """Called in a forked child on a reader its parent opened; the child never uses it again.

        The default leaves it alone (and the child keeps it referenced, so it is never closed
        there): closing some libraries' handles in a child touches state shared with the parent.
        """

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
    point in :meth:`truncate`. Options a backend does not know (another backend's) are ignored.
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


@dataclass(frozen=True)
class Backend:
    """One storage backend, as the registry in :mod:`torchpack.backends` knows it.

    Attributes:
        name: the name users pass as ``backend=`` (``"lmdb"``).
        label: how people write it (``"LMDB"``), for messages.
        extensions: the file extensions that name this backend, lowercased, with the dot.
        reader: the :class:`StoreReader` class.
        writer: the :class:`StoreWriter` class.
        sniff: whether a file that starts with these bytes (its first 4 KiB, or fewer if the
            file is shorter) is one of this backend's files, whatever its name.
    """

    name: str
    label: str
    extensions: tuple[str, ...]
    reader: type[StoreReader]
    writer: type[StoreWriter]
    sniff: Callable[[bytes], bool]
