"""Open a store in object storage: list its shard objects and read their indexes, without downloading the shards.

Each shard's index comes from its sidecar (``<shard>.index``, written by ``torchpack convert``
when it uploads); a shard without one (uploaded by hand) is downloaded into the node's cache
once, and its index read from it there.
"""

from __future__ import annotations

from typing import Any, Sequence

from torchpack.backends import BackendMismatchError, get_backend
from torchpack.format import decode_header, decode_index
from torchpack.remote import filesystem, list_remote_shards, read_sidecar
from torchpack.remote_shards import RemoteShards
from torchpack.shard_cache import ShardCache
from torchpack.sidecar import split_sidecar
from torchpack.store import StoreIndex, join_shards

__all__ = ["load_remote_index"]


def load_remote_index(
    root: str | Sequence[str], backend: str | None, storage_options: dict[str, Any] | None, cache: ShardCache | None
) -> StoreIndex:
    """The :class:`StoreIndex` of the remote store ``root``, whose shards are then read through ``cache``.

    Raises:
        FileNotFoundError: nothing is stored at ``root``.
        InvalidStoreError: a shard is damaged, of another backend than ``backend``, or the shards
            are not one whole store.
    """
    cache = cache if cache is not None else ShardCache()
    shards = list_remote_shards(root, storage_options)
    loaded, metadata = [], []
    for shard in shards:
        sidecar = read_sidecar(shard, storage_options)
        if sidecar is not None:
            header_bytes, index_bytes = split_sidecar(sidecar, shard.url + ".index")
        else:
            header_bytes, index_bytes = _metadata_of_downloaded(shard, storage_options, cache)
        header = decode_header(header_bytes, shard.url)
        found = header["backend"]
        if backend is not None and found != backend:
            raise BackendMismatchError(
                f"{shard.url} is a torchpack {get_backend(found).label} store, not an {get_backend(backend).label} one.", found
            )
        loaded.append((shard.url, found, header, decode_index(index_bytes, header, shard.url)))
        metadata.append((header_bytes, index_bytes))
    order = {item[0]: i for i, item in enumerate(loaded)}
    index = join_shards(loaded, {shard.url: shard.version for shard in shards})
    ordered = [order[url] for url in index.files]
    index.source = RemoteShards(
        [shards[i] for i in ordered], [metadata[i] for i in ordered], index.backend, storage_options, cache
    )
    return index


def _metadata_of_downloaded(shard, storage_options: dict[str, Any] | None, cache: ShardCache) -> tuple[bytes, bytes]:
    """The stored header and index of a shard without a sidecar: from its copy in the cache (downloaded if need be)."""
    fs, _ = filesystem(shard.url, storage_options)

    def check(path: str) -> None:  # a whole, undamaged store of some backend (what it holds is checked on use)
        from torchpack.backends import open_reader

        with open_reader(path) as reader:
            reader.read_index(reader.read_header())

    path = cache.fetch(fs, shard, check)
    from torchpack.backends import open_reader

    with open_reader(path) as reader:
        return reader.header_bytes(), reader.index_bytes()
