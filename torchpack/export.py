"""Write a store back out as an ImageFolder tree, refusing any stored path that would escape the output folder."""

from __future__ import annotations

import io
import os
import posixpath
import zlib
from typing import Any

import numpy as np
from PIL import Image

from torchpack.decode import raw_pixels
from torchpack.store import StoreRoot, load_store_index
from torchpack.handles import borrowed_reader

__all__ = ["export_store", "safe_relative_path"]


def safe_relative_path(path: str) -> str:
    """``path`` if it is a plain relative path inside its root; a crafted store can hold anything.

    Raises:
        ValueError: the path is absolute, has a drive or ``..``, or is empty.
    """
    if not path or "\0" in path or "\\" in path:
        raise ValueError(f"unsafe stored path {path!r}")
    normalized = posixpath.normpath(path)
    parts = normalized.split("/")
    if posixpath.isabs(path) or normalized.startswith("../") or ".." in parts or (parts[0].endswith(":")):
        raise ValueError(f"unsafe stored path {path!r}: absolute or outside the output folder")
    return normalized


def export_store(
    root: StoreRoot, out: str | os.PathLike, storage_options: dict[str, Any] | None = None, cache: Any = None
) -> int:
    """Write every sample to ``out/<relative path>``; returns the number of files written.

    Encoded samples are written byte for byte; raw samples as PNG (with ``.png`` appended
    when the name says otherwise). Existing files are never overwritten.

    Raises:
        ValueError: a stored path is absolute or contains ``..`` (checked for all before writing any), or
            a sample's bytes no longer match its CRC-32 (damaged after conversion; ``torchpack verify`` lists all).
        FileExistsError: a file to be written already exists.
    """
    index = load_store_index(root, None, storage_options, cache)
    paths = [safe_relative_path(p) for p in index.paths.to_pylist()]
    out = os.path.abspath(os.fspath(out))
    for name in index.classes:
        safe_relative_path(name)
        os.makedirs(os.path.join(out, name), exist_ok=True)
    written = 0
    for shard, store_file in enumerate(index.files):
        start = int(index.shard_starts[shard])
        stop = int(index.shard_starts[shard + 1]) if shard + 1 < len(index.files) else len(index)
        compression = index.compressions[shard]
        with borrowed_reader(index.local_file(shard), index.backend) as reader:
            for row in range(start, stop):
                data = bytes(reader.read(row - start, int(index.offsets[row]), int(index.lengths[row])))
                rel = paths[row]
                if zlib.crc32(data) != int(index.crc32[row]):
                    raise ValueError(f"checksum mismatch for {rel} in {store_file}: damaged after conversion, not exported")
                if index.encodings[index.encoding_codes[row]] == "raw":
                    shape = (int(index.heights[row]), int(index.widths[row]), int(index.channels[row]))
                    pixels = raw_pixels(data, *shape, compression)  # a grayscale sample stays one channel
                    buffer = io.BytesIO()
                    Image.fromarray(np.ascontiguousarray(pixels[..., 0] if shape[2] == 1 else pixels)).save(buffer, format="PNG")
                    data = buffer.getvalue()
                    rel = rel if rel.lower().endswith(".png") else rel + ".png"
                target = os.path.join(out, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "xb") as f:
                    f.write(data)
                written += 1
    return written
