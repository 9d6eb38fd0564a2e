"""The backend registry: each backend is one module, named here by one line.

A backend module defines ``BACKEND``, a :class:`Backend` (its name, extensions, reader, writer
and file signature). Modules are imported on first use, so an LMDB store is read without
importing h5py.
"""

from __future__ import annotations

import importlib
import os

from torchpack.backends.base import Backend, StoreReader, StoreWriter
from torchpack.format import InvalidStoreError

__all__ = [
    "Backend",
    "StoreReader",
    "StoreWriter",
    "backend_for_destination",
    "backend_names",
    "check_backend",
    "detect_backend",
    "get_backend",
    "open_reader",
    "register_backend",
    "store_extensions",
    "writer_class",
]

#: Backend name -> the module that defines its ``BACKEND``, in the order files are sniffed.
_MODULES: dict[str, str] = {
    "lmdb": "torchpack.backends.lmdb",
    "hdf5": "torchpack.backends.hdf5",
}
_loaded: dict[str, Backend] = {}
_SNIFF_BYTES = 4096


def register_backend(name: str, module: str) -> None:
    """Make the backend that ``module`` defines (its ``BACKEND``) known as ``name``."""
    _MODULES[name] = module
    _loaded.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """The names of every registered backend."""
    return tuple(_MODULES)


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``.

    Raises:
        ValueError: no backend has that name (the message lists the known ones).
    """
    backend = _loaded.get(name)
    if backend is None:
        if name not in _MODULES:
            raise ValueError(f"`backend` must be one of {backend_names()}, got {name!r}.")
        backend = _loaded[name] = importlib.import_module(_MODULES[name]).BACKEND
    return backend


def _all_backends() -> list[Backend]:
    return [get_backend(name) for name in _MODULES]


def store_extensions() -> tuple[str, ...]:
    """Every registered backend's file extensions (what a folder of shards is searched for)."""
    return tuple(ext for backend in _all_backends() for ext in backend.extensions)


def writer_class(name: str) -> type[StoreWriter]:
    """The writer of backend ``name``."""
    return get_backend(name).writer


def backend_for_destination(dst: str | os.PathLike, backend: str | None) -> str:
    """The backend named by ``backend``, else by the destination's extension.

    Raises:
        ValueError: neither names a known backend.
    """
    if backend is not None:
        return get_backend(backend).name
    ext = os.path.splitext(os.fspath(dst))[1].lower()
    for known in _all_backends():
        if ext in known.extensions:
            return known.name
    raise ValueError(
        f"Cannot tell the backend from the destination {os.fspath(dst)!r}: use an extension "
        f"({', '.join(sorted(store_extensions()))}) or pass `backend` (one of {backend_names()})."
    )


def detect_backend(path: str | os.PathLike) -> str:
    """Which backend wrote the file at ``path``, from its first bytes (not its name).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        IsADirectoryError: ``path`` is a folder.
        InvalidStoreError: no registered backend recognises the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a store file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No torchpack store at {path}.")
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    for backend in _all_backends():
        if backend.sniff(head):
            return backend.name
    labels = " nor ".join(backend.label for backend in _all_backends())
    raise InvalidStoreError(f"{path}: not a torchpack store (neither an {labels} file).")


def open_reader(path: str | os.PathLike, expected_backend: str | None = None, **options) -> StoreReader:
    """Open the store at ``path`` for reading with the backend its content shows.

    ``options`` (``readahead``) go to the backend's reader, which acts on those it can.

    Raises:
        FileNotFoundError: no file at ``path``.
        InvalidStoreError: not a store of ``expected_backend`` (when given), or damaged.
    """
    name = detect_backend(path)
    check_backend(path, name, expected_backend)
    return get_backend(name).reader(os.fspath(path), **options)


def check_backend(
    path: str | os.PathLike, backend: str, expected_backend: str | None, reader: StoreReader | None = None
) -> None:
    """Raise a clear error when a file of ``backend`` is opened as a store of ``expected_backend``.

    The message says whether the file is a torchpack store at all: an HDF5 file that is not
    one must not send the user to the HDF5 datasets. ``reader``: this process's open reader of
    the file, if it has one (py-lmdb refuses to open a file twice in a process).
    """
    if expected_backend is None or backend == expected_backend:
        return
    found, expected = get_backend(backend), get_backend(expected_backend)
    try:
        if reader is not None:
            reader.read_header()
        else:
            with found.reader(os.fspath(path)) as temporary:
                temporary.read_header()
    except InvalidStoreError as exc:
        raise InvalidStoreError(
            f"{os.fspath(path)} is an {found.label} file, not an {expected.label} store, and not a torchpack store "
            f"of any backend ({exc})."
        ) from exc
    raise BackendMismatchError(
        f"{os.fspath(path)} is a torchpack {found.label} store, not an {expected.label} one.", found=backend
    )


class BackendMismatchError(InvalidStoreError):
    """A store of one backend was opened as a store of another; ``found`` names the backend it is."""

    def __init__(self, message: str, found: str) -> None:
        super().__init__(message)
        self.found = found
