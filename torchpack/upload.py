"""A conversion into object storage: each shard is converted on local disk, then uploaded whole, with its index sidecar.

A shard is visible under its final name only when it is whole: object stores (S3, GCS, Azure)
publish an object only when its upload completes; elsewhere it is uploaded under a temporary
name and moved. The sidecar goes first, so a visible shard always has one. A crash leaves the
local staging (resumable as any conversion) or a finished local shard (uploaded on resume);
never a partial shard in the bucket.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from torchpack.backends import open_reader
from torchpack.format import decode_header
from torchpack.remote import filesystem
from torchpack.shard_cache import default_cache_dir
from torchpack.sidecar import SIDECAR_SUFFIX, encode_sidecar, split_sidecar

__all__ = ["RemoteDestination"]

# Object stores where a PUT is all or nothing: no temporary name needed.
_ATOMIC_PUT = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss")


class RemoteDestination:
    """Where a conversion into object storage stages its shards locally, and how it publishes them.

    Args:
        url: the store to write, ``s3://bucket/imagenet/train.lmdb`` (shards: ``train-00000-of-00008.lmdb``, ...).
        storage_options: for fsspec.
        stage_dir: the local folder for converting (default: under the shard cache's folder; keep it
            on the same machine to resume there).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, stage_dir: str | None = None) -> None:
        self.url = url
        self.storage_options = storage_options
        self.fs, self.path = filesystem(url, storage_options)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.stage_dir = os.path.abspath(stage_dir or os.path.join(default_cache_dir(), "uploads", digest))
        os.makedirs(self.stage_dir, exist_ok=True)
        self.local = os.path.join(self.stage_dir, os.path.basename(self.path))

    def remote_path(self, local_path: str) -> str:
        """The path in the bucket of a shard staged at ``local_path``."""
        return self.path.rsplit("/", 1)[0] + "/" + os.path.basename(local_path)

    def url_of(self, local_path: str) -> str:
        return self.fs.unstrip_protocol(self.remote_path(local_path))

    def published_header(self, local_path: str) -> dict[str, Any] | None:
        """The header of the shard already in the bucket for ``local_path`` (from its sidecar), or None."""
        path = self.remote_path(local_path)
        try:
            if not self.fs.exists(path):
                return None
            sidecar = self.fs.cat_file(path + SIDECAR_SUFFIX)
        except FileNotFoundError:
            return None
        header_bytes, _ = split_sidecar(sidecar, self.fs.unstrip_protocol(path) + SIDECAR_SUFFIX)
        return decode_header(header_bytes, self.fs.unstrip_protocol(path))

    def publish(self, local_path: str) -> str:
        """Upload a finished local shard and its sidecar, then delete the local copy; returns its URL."""
        with open_reader(local_path) as reader:
            sidecar = encode_sidecar(reader.header_bytes(), reader.index_bytes())
        path = self.remote_path(local_path)
        self.fs.pipe_file(path + SIDECAR_SUFFIX, sidecar)
        if self.url.split("://", 1)[0] in _ATOMIC_PUT:
            self.fs.put_file(local_path, path)
        else:
            temporary = f"{path}.uploading-{os.getpid()}"
            self.fs.put_file(local_path, temporary)
            self.fs.mv(temporary, path)
        os.remove(local_path)
        return self.fs.unstrip_protocol(path)
