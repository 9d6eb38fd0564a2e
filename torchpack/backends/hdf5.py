"""HDF5 backend: all samples' bytes concatenated in one contiguous uint8 dataset.

Layout (readable with plain h5py)::

    /torchpack/header   uint8[...]  UTF-8 JSON
    /torchpack/index    uint8[...]  Arrow IPC stream, one row per sample (offset, length, ...)
    /torchpack/data     uint8[N]    contiguous, uncompressed

Because ``data`` is contiguous and uncompressed, the reader maps its byte range straight
from the file and a sample is a slice of that map: no HDF5 call on the hot path.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

import h5py
import numpy as np

from torchpack.backends.base import Backend, StoreReader, StoreWriter
from torchpack.format import InvalidStoreError

__all__ = ["BACKEND", "DATA", "HEADER", "INDEX", "HDF5Reader", "HDF5Writer"]

HEADER = "torchpack/header"
INDEX = "torchpack/index"
DATA = "torchpack/data"
STAGED_DATA = "data.bin"
STAGED_NAME = "store.h5"
_COPY_BLOCK = 64 << 20


def _copy_range(src: int, dst: int, size: int, dst_offset: int) -> None:
    """Copy ``size`` bytes from the start of ``src`` to ``dst_offset`` in ``dst``, in the kernel where it can."""
    done = 0
    try:
        while done < size:
            copied = os.copy_file_range(src, dst, size - done, done, dst_offset + done)
            if copied == 0:
                raise OSError(f"the staged data ended after {done} of {size} bytes")
            done += copied
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        while done < size:  # no copy_file_range between these files: copy through memory
            block = os.pread(src, min(_COPY_BLOCK, size - done), done)
            if not block:
                raise OSError(f"the staged data ended after {done} of {size} bytes") from None
            done += os.pwrite(dst, block, dst_offset + done)


class HDF5Reader(StoreReader):
    """Reads one HDF5 store through a memory map of its data (h5py reads only as a fallback)."""

    backend = "hdf5"

    def __init__(self, path: str, *, readahead: bool = True) -> None:
        super().__init__(path)
        self._readahead = readahead
        self._file: h5py.File | None = None
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._dataset: h5py.Dataset | None = None
        try:
            # locking=False: readers never write, and HDF5's locks fail on many NFS mounts.
            self._file = h5py.File(path, "r", locking=False)
        except OSError as exc:
            raise InvalidStoreError(f"{path}: cannot open as an HDF5 store ({exc}).") from exc
        try:
            self._open_datasets()
        except InvalidStoreError:
            self.close()
            raise
        except (KeyError, RuntimeError, ValueError, TypeError, OSError) as exc:
            # h5py reports damaged object headers and heaps as any of these.
            self.close()
            raise InvalidStoreError(f"{path}: damaged HDF5 store ({type(exc).__name__}: {exc}).") from exc

    def _open_datasets(self) -> None:
        for name in (HEADER, INDEX, DATA):
            if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
                raise InvalidStoreError(f"{self.path}: an HDF5 file without the dataset /{name} (not a torchpack store).")
        data = self._file[DATA]
        if data.dtype != np.uint8 or data.ndim != 1:
            raise InvalidStoreError(f"{self.path}: /{DATA} is not a 1-D uint8 dataset.")
        self.data_size = int(data.shape[0])
        self._open_data(data)

    def _open_data(self, data: h5py.Dataset) -> None:
        offset = data.id.get_offset()
        if data.chunks is None and data.compression is None and offset is not None:
            file_size = os.path.getsize(self.path)
            if offset + self.data_size > file_size:
                self.close()
                raise InvalidStoreError(
                    f"{self.path}: truncated HDF5 store: its data ends at byte {offset + self.data_size}, "
                    f"the file has {file_size}."
                )
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if not self._readahead and hasattr(mmap, "MADV_RANDOM"):
                self._map.madvise(mmap.MADV_RANDOM)  # random reads over a store larger than RAM
            self._view = memoryview(self._map)[offset : offset + self.data_size]
        elif self.data_size:
            # Chunked or compressed (say, after h5repack): correct, but every read goes through HDF5.
            self._dataset = data

    def _read_dataset(self, name: str) -> bytes:
        try:
            return self._file[name][()].tobytes()
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise InvalidStoreError(f"{self.path}: cannot read /{name} ({exc}).") from exc

    def header_bytes(self) -> bytes:
        return self._read_dataset(HEADER)

    def index_bytes(self) -> bytes:
        return self._read_dataset(INDEX)

    def read(self, row: int, offset: int, length: int) -> memoryview | bytes:
        if offset < 0 or offset + length > self.data_size:
            raise InvalidStoreError(f"{self.path}: sample {row} lies outside the data.")
        if self._view is not None:
            return self._view[offset : offset + length]
        try:
            return self._dataset[offset : offset + length].tobytes()
        except (OSError, RuntimeError) as exc:
            raise InvalidStoreError(f"{self.path}: cannot read sample {row} ({exc}).") from exc

    def data_view(self) -> memoryview | None:
        return self._view

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # a caller still holds a sample view; the map closes when that view is freed
            self._map = None
        self._dataset = None
        if self._file is not None:
            self._file.close()
            self._file = None


class HDF5Writer(StoreWriter):
    """Stages samples in a flat file (crash-safe: append, fsync), then builds the HDF5 store in one pass.

    HDF5 itself is not crash-safe while a file is open for writing, so nothing is written
    through HDF5 until every sample is staged.
    """

    backend = "hdf5"

    def __init__(self, staging_dir: str, **options: Any) -> None:
        super().__init__(staging_dir)
        self.data_path = os.path.join(staging_dir, STAGED_DATA)
        self._data = open(self.data_path, "ab")
        self._pending: list[bytes] = []

    def append(self, row: int, data: bytes) -> None:
        self._pending.append(data)

    def commit(self) -> int:
        try:
            self._data.writelines(self._pending)
            self._pending.clear()
            self._data.flush()
            os.fsync(self._data.fileno())
        except OSError as exc:
            raise OSError(
                exc.errno, f"Writing {self.data_path} failed: {exc.strerror} (is the disk full, or a file size limit reached?)"
            ) from exc
        return self._data.tell()

    def truncate(self, num_rows: int, data_size: int) -> None:
        self._pending.clear()
        self._data.flush()
        self._data.truncate(data_size)
        self._data.seek(data_size)

    def finish(self, header: bytes, index: bytes, data_size: int) -> str:
        self.commit()
        self._data.close()
        path = os.path.join(self.staging_dir, STAGED_NAME)
        with h5py.File(path, "w", libver=("earliest", "latest")) as f:
            f.create_dataset(HEADER, data=np.frombuffer(header, dtype=np.uint8))
            f.create_dataset(INDEX, data=np.frombuffer(index, dtype=np.uint8))
            # Allocated now, never filled: the staged bytes are copied into its file range below.
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            data = f.create_dataset(DATA, shape=(data_size,), dtype=np.uint8, dcpl=dcpl, fill_time="never")
            offset = data.id.get_offset()
        with open(self.data_path, "rb") as staged, open(path, "r+b") as out:
            if data_size:
                _copy_range(staged.fileno(), out.fileno(), data_size, offset)
            os.fsync(out.fileno())
        return path

    def abort(self) -> None:
        self._pending.clear()
        self._data.close()


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_file(head: bytes) -> bool:
    """Whether a file starting with ``head`` is an HDF5 file (its signature at byte 0)."""
    return head.startswith(_SIGNATURE)


BACKEND = Backend(
    name="hdf5",
    label="HDF5",
    extensions=(".h5", ".hdf5", ".hdf"),
    reader=HDF5Reader,
    writer=HDF5Writer,
    sniff=is_hdf5_file,
)
