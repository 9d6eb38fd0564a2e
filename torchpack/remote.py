"""Stores in object storage (``s3://``, ``gs://``, ``az://``, ``https://``, any fsspec URL): their shard objects and versions.

Reading goes through fsspec and the client library the URL's scheme needs (s3fs, gcsfs,
adlfs; HTTP is built in), with credentials found the standard way (environment variables,
``~/.aws``, instance roles) or passed as ``storage_options``; torchpack never logs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from torchpack.backends import store_extensions
from torchpack.sidecar import SIDECAR_SUFFIX

__all__ = ["RemoteShard", "filesystem", "is_url", "list_remote_shards", "object_version"]

INSTALL_HINT = 'pip install "torchpack[remote]" (fsspec and s3fs; add gcsfs or adlfs for gs:// or az://)'
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(root: Any) -> bool:
    """Whether ``root`` names a remote store: a URL with a scheme other than ``file://``."""
    if isinstance(root, (list, tuple)):
        return bool(root) and all(is_url(item) for item in root)
    return isinstance(root, str) and bool(_SCHEME.match(root)) and not root.startswith("file://")


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec file system for ``url``, and the path within it.

    fsspec keeps one instance per set of options and process (a forked child makes its own:
    an async client's event loop does not survive a fork).

    Raises:
        ImportError: fsspec, or the scheme's client library, is not installed (the message says what to install).
    """
    try:
        import fsspec.core
    except ImportError as exc:
        raise ImportError(f"Reading {url} needs fsspec: {INSTALL_HINT}.") from exc
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        raise ImportError(f"Reading {url.split('://', 1)[0]}:// URLs needs a client library ({exc}): {INSTALL_HINT}.") from exc


@dataclass(frozen=True)
class RemoteShard:
    """One shard object of a remote store, as it was when the store was opened."""

    url: str  # for messages and names: without credentials a URL may carry
    path: str  # within its file system: what requests use
    size: int
    version: str  # the ETag, else size and modification time: a replaced object has another

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def object_version(info: dict[str, Any]) -> str:
    """What identifies one version of an object: its ETag where the server gives one, else size and mtime."""
    lowered = {str(k).lower(): v for k, v in info.items()}
    etag = lowered.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    stamp = lowered.get("lastmodified") or lowered.get("last-modified") or lowered.get("mtime") or lowered.get("updated")
    return f"size:{info.get('size')}:mtime:{stamp}"


def redacted(url: str) -> str:
    """``url`` without a ``user:password@`` part: what messages and names may show."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@", r"\1", url)


def _shard(fs: Any, path: str, info: dict[str, Any] | None = None) -> RemoteShard:
    if info is None or info.get("size") is None or object_version(info).endswith(":mtime:None"):
        info = fs.info(path)  # a listing without sizes or versions (an HTTP folder page): ask the object
    size = info.get("size")
    if size is None:
        raise OSError(f"{fs.unstrip_protocol(path)}: the server does not say the object's size.")
    return RemoteShard(redacted(fs.unstrip_protocol(path)), path, int(size), object_version(info))


def list_remote_shards(root: str | Sequence[str], storage_options: dict[str, Any] | None = None) -> list[RemoteShard]:
    """The store objects ``root`` names: one object, a "folder" of shards, a glob, or a list of URLs.

    Raises:
        FileNotFoundError: nothing matches ``root``.
    """
    if not isinstance(root, str):
        return [shard for url in root for shard in list_remote_shards(url, storage_options)]
    fs, path = filesystem(root, storage_options)
    extensions = store_extensions()
    if any(ch in path for ch in "*?["):
        found = [_shard(fs, p) for p in sorted(fs.glob(path)) if p.lower().endswith(extensions)]
        if not found:
            raise FileNotFoundError(f"No store files match {root!r}.")
        return found
    if path.lower().endswith(extensions) and not root.endswith("/"):
        try:
            return [_shard(fs, path)]
        except FileNotFoundError:
            raise FileNotFoundError(f"No torchpack store at {root}.") from None
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"No torchpack store at {root}.") from None
    found = [
        _shard(fs, entry["name"], entry)
        for entry in sorted(entries, key=lambda e: e["name"])
        if entry.get("type", "file") == "file" and entry["name"].rstrip("/").lower().endswith(extensions)
    ]
    if not found:
        raise FileNotFoundError(f"No store files ({', '.join(extensions)}) under {root}.")
    return found


def read_sidecar(shard: RemoteShard, storage_options: dict[str, Any] | None) -> bytes | None:
    """The shard's index sidecar (``<shard>.index``), or None when the store has none."""
    fs, _ = filesystem(shard.url, storage_options)
    try:
        return fs.cat_file(shard.path + SIDECAR_SUFFIX)
    except FileNotFoundError:
        return None
