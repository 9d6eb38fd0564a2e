"""Find a store's files (one file, or the shards of one) and load their headers and indexes as arrays."""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import pyarrow as pa

from torchpack.backends import store_extensions
from torchpack.format import InvalidStoreError, column_array
from torchpack.handles import FileIdentity, borrowed_reader, file_identity

__all__ = ["StoreIndex", "StoreRoot", "load_store_index", "resolve_store_files"]

StoreRoot = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def resolve_store_files(root: StoreRoot) -> list[str]:
    """The store files named by ``root``: a file, a folder of shards, a glob pattern, or a list of files.

    Raises:
        FileNotFoundError: nothing matches ``root``.
    """
    if isinstance(root, (str, os.PathLike)):
        root = os.fspath(root)
        if os.path.isdir(root):
            extensions = store_extensions()
            files = sorted(
                os.path.join(root, name)
                for name in os.listdir(root)
                if name.lower().endswith(extensions) and os.path.isfile(os.path.join(root, name))
            )
            if not files:
                raise FileNotFoundError(f"No store files ({', '.join(extensions)}) in the folder {root}.")
            return files
        if glob.has_magic(root):
            files = sorted(glob.glob(root))
            if not files:
                raise FileNotFoundError(f"No store files match {root!r}.")
            return files
        if not os.path.exists(root):
            if root.endswith(("/", os.sep)) and os.path.isfile(root.rstrip("/" + os.sep)):
                raise FileNotFoundError(
                    f"No folder at {root}: {root.rstrip('/' + os.sep)} is a store file; pass it without the trailing slash."
                )
            raise FileNotFoundError(f"No torchpack store at {root}.")
        return [root]
    files = [os.fspath(p) for p in root]
    if not files:
        raise FileNotFoundError("`root` is an empty list of store files.")
    for path in files:
        if not os.path.exists(path):
            raise FileNotFoundError(f"No torchpack store at {path}.")
    return files


@dataclass
class StoreIndex:
    """Every sample of a store (or of all its shards, in global order), as arrays.

    Arrays, not Python lists: DataLoader workers share them with the parent without the
    copy-on-read growth that reference counting causes on lists of tuples.
    """

    files: list[str]
    backend: str
    headers: list[dict[str, Any]]
    classes: list[str]
    paths: pa.Array  # relative paths, a StringArray
    targets: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    crc32: np.ndarray
    encodings: list[str]
    encoding_codes: np.ndarray
    decoders: list[str]  # the index's "decoder" values, which decoder_codes number
    decoder_codes: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    channels: np.ndarray
    shard_starts: np.ndarray  # global row of each shard's first sample
    identities: list[Any] = field(default_factory=list)  # of each file when indexed: (st_dev, st_ino), or a remote version
    source: Any = None  # a remote store's shards (RemoteShards); None: files on this machine

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def prefix(self) -> str:
        """What sample paths are joined to: the store file, or the folder of a sharded store's files."""
        return self.files[0] if len(self.files) == 1 else os.path.dirname(self.files[0])

    @functools.cached_property
    def compressions(self) -> list[str | None]:
        """Each shard's compression of raw samples (``"lz4"``, ``"none"``, or None for other storage)."""
        return [header["storage"].get("raw_compression") for header in self.headers]

    @functools.cached_property
    def all_raw(self) -> bool:
        """Whether every sample is raw pixels, in one file (the whole-batch read paths need both)."""
        return self.encodings == ["raw"] and len(self.files) == 1

    @functools.cached_property
    def uniform_raw_shape(self) -> tuple[int, int, int] | None:
        """``(height, width, channels)`` shared by every sample, when all are raw in one file (else None)."""
        if not self.all_raw or not len(self):
            return None
        shape = []
        for values in (self.heights, self.widths, self.channels):
            if values.min() != values.max():
                return None
            shape.append(int(values[0]))
        return tuple(shape)

    def raw_shape(self, row: int) -> tuple[int, int, int]:
        """``(height, width, channels)`` of a raw sample as stored."""
        return int(self.heights[row]), int(self.widths[row]), int(self.channels[row])

    def path(self, row: int) -> str:
        """The sample's path relative to the converted tree's root."""
        return self.paths[row].as_py()

    def local_file(self, shard: int) -> str:
        """Shard ``shard``'s file on this machine: a remote store's is fetched into the node's cache."""
        return self.files[shard] if self.source is None else self.source.fetch(shard)

    def file_sizes(self) -> list[int]:
        """Each shard file's size in bytes as allocated (local files) or as stored (remote objects)."""
        if self.source is not None:
            return [shard.size for shard in self.source.shards]
        return [os.stat(path).st_blocks * 512 for path in self.files]

    def locate(self, row: int) -> tuple[int, int]:
        """(shard number, row within that shard) of a global row."""
        if len(self.shard_starts) == 1:
            return 0, row
        shard = int(np.searchsorted(self.shard_starts, row, side="right")) - 1
        return shard, row - int(self.shard_starts[shard])


def load_store_index(
    root: StoreRoot, backend: str | None = None, storage_options: dict[str, Any] | None = None, cache: Any = None
) -> StoreIndex:
    """Open each store file named by ``root`` briefly, check it, and join the indexes.

    ``root`` may be a URL (``s3://bucket/train/``, see :mod:`torchpack.remote_index`); then
    ``storage_options`` go to fsspec and ``cache`` (a :class:`torchpack.ShardCache`) keeps its shards.

    Raises:
        FileNotFoundError: a store file is missing.
        InvalidStoreError: a file is not a store of ``backend``, is damaged, or the shards
            do not make one whole store (missing, duplicated, or from different conversions).
    """
    from torchpack.remote import is_url

    if is_url(root):
        from torchpack.remote_index import load_remote_index

        return load_remote_index(root, backend, storage_options, cache)
    files = resolve_store_files(root)
    loaded = []
    identities = {path: file_identity(path) for path in files}
    for path in files:
        with borrowed_reader(path, backend, identities[path]) as reader:
            header = reader.read_header()
            loaded.append((path, reader.backend, header, reader.read_index(header)))
    return join_shards(loaded, identities)


def join_shards(loaded: list, identities: dict[str, Any], source: Any = None) -> StoreIndex:
    """One :class:`StoreIndex` from each shard's ``(name, backend, header, index table)``.

    ``identities`` maps each name to its identity. The shards are put in their order and
    checked to make one whole store.

    Raises:
        InvalidStoreError: the shards are not exactly those of one conversion, or mix backends.
    """
    files = [item[0] for item in loaded]
    if len(loaded) > 1:
        loaded = _ordered_shards(loaded)
    elif loaded[0][2]["shard"].get("count", 1) != 1:
        shard = loaded[0][2]["shard"]
        raise InvalidStoreError(
            f"{files[0]} is shard {shard.get('index')} of {shard.get('count')}; open all shards "
            "(a list, a glob pattern, or their folder), not one."
        )
    backends = {item[1] for item in loaded}
    if len(backends) > 1:
        raise InvalidStoreError(f"The store files mix backends {sorted(backends)}: {files}.")
    tables = [item[3] for item in loaded]
    table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
    # Dictionary columns already: shards only need one dictionary between them.
    encoded = table.column("encoding").unify_dictionaries().combine_chunks()
    decoders = table.column("decoder").unify_dictionaries().combine_chunks()
    counts = [t.num_rows for t in tables]
    return StoreIndex(
        files=[item[0] for item in loaded],
        backend=loaded[0][1],
        headers=[item[2] for item in loaded],
        classes=list(loaded[0][2]["classes"]),
        paths=table.column("path").combine_chunks(),
        targets=column_array(table, "target"),
        offsets=column_array(table, "offset"),
        lengths=column_array(table, "length"),
        crc32=column_array(table, "crc32"),
        encodings=encoded.dictionary.to_pylist(),
        encoding_codes=encoded.indices.to_numpy(zero_copy_only=False),
        decoders=decoders.dictionary.to_pylist(),
        decoder_codes=decoders.indices.to_numpy(zero_copy_only=False),
        heights=column_array(table, "height"),
        widths=column_array(table, "width"),
        channels=column_array(table, "channels"),
        shard_starts=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        identities=[identities[item[0]] for item in loaded],
        source=source,
    )


def _ordered_shards(loaded: list) -> list:
    """Sort shards by their index and check they are exactly the shards of one conversion."""
    first = loaded[0][2]["shard"]
    count, dataset_id = first.get("count"), first.get("dataset_id")
    by_index: dict[int, list[str]] = {}
    for path, _, header, _ in loaded:
        shard = header["shard"]
        if shard.get("dataset_id") != dataset_id or shard.get("count") != count:
            raise InvalidStoreError(
                f"{path} belongs to another conversion than {loaded[0][0]} (shards of different trees or runs)."
            )
        if header["classes"] != loaded[0][2]["classes"]:
            raise InvalidStoreError(f"{path} has another class list than {loaded[0][0]}.")
        by_index.setdefault(shard.get("index"), []).append(path)
    duplicated = {i: paths for i, paths in by_index.items() if len(paths) > 1}
    if duplicated:
        raise InvalidStoreError(f"Duplicated shards: {duplicated}.")
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise InvalidStoreError(f"Missing shards {missing} of {count} (found {sorted(by_index)}).")
    return sorted(loaded, key=lambda item: item[2]["shard"]["index"])
