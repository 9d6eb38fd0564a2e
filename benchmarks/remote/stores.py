"""Every system's copy of the tree in the bucket: torchpack's through ``convert(tree, "s3://...")``, the peers' converted, then uploaded.

torchpack's LMDB store is converted twice: into the bucket (``convert`` stages each shard
locally, uploads it with its index sidecar, and deletes the local copy) and onto local disk,
for the warm-against-local comparison; its HDF5 store only into the bucket. Every store is cut
into shards of about the same size: what ``bench_peers.py`` gives the peers (``shard_bytes``:
at least 4 a worker, at most 64 MiB), and as many torchpack shards.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from peers.common import Settings, shard_bytes, tree_samples
from suite.common import log
from suite.convert_routes import convert_all

BUCKET = "bench"


@dataclass
class BucketStore:
    """One system's store: where it is in the bucket and on local disk, its objects and their bytes."""

    system: str
    url: str = ""  # what the system opens: s3://bench/<prefix>/
    local: str = ""  # the same store on local disk ("" where there is none)
    objects: list[str] = field(default_factory=list)  # keys, bucket/prefix/name
    bytes: int = 0  # of every object of the store in the bucket
    convert_seconds: float | None = None
    error: str | None = None
    missing: bool = False  # the system does not import in its interpreter

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "objects"} | {"objects": len(self.objects)}


def torchpack_shards(tree: str, workers: int) -> int:
    """As many shards as the peers' stores have chunks: the tree's bytes over ``shard_bytes``."""
    total = sum(os.path.getsize(p) for p, _ in tree_samples(tree))
    return max(1, math.ceil(total / shard_bytes(tree, "photo", workers)))


def list_objects(fs: Any, prefix: str) -> tuple[list[str], int]:
    found = fs.find(prefix, detail=True)
    return sorted(found), sum(int(info["size"]) for info in found.values())


def convert_torchpack(
    tree: str, work: str, fs: Any, storage_options: dict[str, Any], workers: int
) -> dict[str, BucketStore]:
    """torchpack's LMDB store into the bucket and onto local disk, its HDF5 store into the bucket (``suite``'s
    fresh interpreter: the converter's forkserver workers would re-import this script)."""
    shards = torchpack_shards(tree, workers)
    options = {"workers": workers, "num_shards": shards}
    jobs = [
        (tree, f"s3://{BUCKET}/torchpack-{backend}/train{ext}",
         {**options, "storage_options": storage_options, "stage_dir": os.path.join(work, f"stage-{backend}")})
        for backend, ext in (("lmdb", ".lmdb"), ("hdf5", ".h5"))
    ]
    local = os.path.join(work, "torchpack-lmdb")
    os.makedirs(local, exist_ok=True)
    results = convert_all([*jobs, (tree, os.path.join(local, "train.lmdb"), options)])
    stores = {}
    for (backend, _), result in zip((("lmdb", ".lmdb"), ("hdf5", ".h5")), results):
        store = stores[backend] = BucketStore("torchpack", url=f"s3://{BUCKET}/torchpack-{backend}/")
        store.convert_seconds = result["seconds"]
        store.objects, store.bytes = list_objects(fs, f"{BUCKET}/torchpack-{backend}")
    stores["lmdb"].local = local
    log(f"torchpack: {shards} shard(s) of {stores['lmdb'].bytes / shards / 1e6:.1f} MB, converted into the bucket in "
        f"{stores['lmdb'].convert_seconds:.1f} s (LMDB)")
    return stores


def convert_peer(system: Any, python: str, tree: str, work: str, fs: Any, workers: int) -> BucketStore:
    """The peer's store, converted in its interpreter (``peers.jobs``: ``bench_peers.py``'s own conversion), then uploaded."""
    from peers.jobs import PeerError, run_job
    from peers.registry import ADAPTERS

    store = BucketStore(system.name)
    adapter = ADAPTERS[system.peer](Settings(workers=workers), python)
    missing = adapter.missing()
    if missing is not None:
        store.error, store.missing = f"not installed: {missing}", True
        return store
    slug = system.peer_store.replace(" ", "_")
    local = os.path.join(work, f"{system.name.replace(' ', '_')}-{slug}")
    job = {"kind": "convert", "system": system.peer, "group": "photo", "store": system.peer_store, "src": tree,
           "dst": local, "settings": asdict(Settings(workers=workers))}
    try:
        store.convert_seconds = run_job(python, job)["seconds"]
    except PeerError as exc:
        store.error = f"conversion failed: {exc}"
        return store
    prefix = f"{BUCKET}/{slug}"
    for folder, _, files in os.walk(local):
        for name in files:
            path = os.path.join(folder, name)
            fs.put_file(path, f"{prefix}/{os.path.relpath(path, local)}")
    store.url, store.local = f"s3://{prefix}/", local
    store.objects, store.bytes = list_objects(fs, prefix)
    log(f"{system.name}: {len(store.objects)} object(s), {store.bytes / 1e6:.1f} MB, converted in {store.convert_seconds:.1f} s")
    return store
