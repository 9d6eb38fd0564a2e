"""Storage backends: each answers "the stored bytes of sample i" and writes a store from staged samples."""

from __future__ import annotations

import os

from torchpack.backends.base import StoreReader, StoreWriter
from torchpack.format import InvalidStoreError

__all__ = [
    "BACKENDS",
    "StoreReader",
    "StoreWriter",
    "backend_for_destination",
    "check_backend",
    "detect_backend",
    "open_reader",
    "writer_class",
]

BACKENDS = ("lmdb", "hdf5")
_EXTENSIONS = {".lmdb": "lmdb", ".mdb": "lmdb", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LMDB_MAGIC = 0xBEEFC0DE


def backend_for_destination(dst: str | os.PathLike, backend: str | None) -> str:
    """The backend named by ``backend``, else by the destination's extension.

    Raises:
        ValueError: neither names a known backend.
    """
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
        return backend
    ext = os.path.splitext(os.fspath(dst))[1].lower()
    if ext not in _EXTENSIONS:
        raise ValueError(
            f"Cannot tell the backend from the destination {os.fspath(dst)!r}: use an extension "
            f"({', '.join(sorted(_EXTENSIONS))}) or pass `backend` ('lmdb' or 'hdf5')."
        )
    return _EXTENSIONS[ext]


def detect_backend(path: str | os.PathLike) -> str:
    """Which backend wrote the file at ``path``, from its first bytes (not its name).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        InvalidStoreError: the file is neither an LMDB nor an HDF5 file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a store file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No torchpack store at {path}.")
    with open(path, "rb") as f:
        head = f.read(24)
    if head.startswith(_HDF5_SIGNATURE):
        return "hdf5"
    if len(head) >= 24 and int.from_bytes(head[16:20], "little") == _LMDB_MAGIC:
        return "lmdb"
    raise InvalidStoreError(f"{path}: not a torchpack store (neither an LMDB nor an HDF5 file).")


def reader_class(backend: str) -> type[StoreReader]:
    if backend == "lmdb":
        from torchpack.backends.lmdb import LMDBReader

        return LMDBReader
    from torchpack.backends.hdf5 import HDF5Reader

    return HDF5Reader


def writer_class(backend: str) -> type[StoreWriter]:
    if backend == "lmdb":
        from torchpack.backends.lmdb import LMDBWriter

        return LMDBWriter
    from torchpack.backends.hdf5 import HDF5Writer

    return HDF5Writer


def open_reader(path: str | os.PathLike, expected_backend: str | None = None, **options) -> StoreReader:
    """Open the store at ``path`` for reading with the backend its content shows.

    Raises:
        FileNotFoundError: no file at ``path``.
        InvalidStoreError: not a store of ``expected_backend`` (when given), or damaged.
    """
    backend = detect_backend(path)
    check_backend(path, backend, expected_backend)
    return reader_class(backend)(os.fspath(path), **options)


def check_backend(path: str | os.PathLike, backend: str, expected_backend: str | None) -> None:
    """Raise a clear error when a store of ``backend`` is opened as one of ``expected_backend``."""
    if expected_backend is not None and backend != expected_backend:
        raise InvalidStoreError(
            f"{os.fspath(path)} is an {backend.upper()} store; open it with the "
            f"{'LMDBImageFolder' if backend == 'lmdb' else 'HDF5ImageFolder'} dataset."
        )
