"""A shard's header and index as a small object beside it (``<shard>.index``), so a remote store opens without downloading its shards.

Layout: the 16 bytes ``TORCHPACK-INDEX\\n``, the header's length as 8 big-endian bytes, the
header bytes and the index bytes, both exactly as the shard stores them. The header seals the
index (``index_crc32``) and itself (``header_crc32``); a downloaded shard must hold the very same
two, so a shard and a sidecar of different conversions never pass for each other.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from torchpack.format import InvalidStoreError, decode_header, decode_index

__all__ = ["SIDECAR_SUFFIX", "decode_sidecar", "encode_sidecar"]

SIDECAR_SUFFIX = ".index"
_MAGIC = b"TORCHPACK-INDEX\n"


def encode_sidecar(header: bytes, index: bytes) -> bytes:
    """The sidecar of a shard whose stored header and index are ``header`` and ``index``."""
    return _MAGIC + len(header).to_bytes(8, "big") + header + index


def split_sidecar(data: bytes, source: str) -> tuple[bytes, bytes]:
    """The stored header and index bytes of a sidecar.

    Raises:
        InvalidStoreError: ``data`` is not a sidecar.
    """
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 8:
        raise InvalidStoreError(f"{source}: not a torchpack index sidecar.")
    start = len(_MAGIC) + 8
    length = int.from_bytes(data[len(_MAGIC) : start], "big")
    if start + length > len(data):
        raise InvalidStoreError(f"{source}: a truncated torchpack index sidecar.")
    return data[start : start + length], data[start + length :]


def decode_sidecar(data: bytes, source: str) -> tuple[dict[str, Any], pa.Table]:
    """The checked header and index of a sidecar, as a shard's reader gives them.

    Raises:
        InvalidStoreError: not a sidecar, or its header or index is damaged.
        UnsupportedVersionError: written by a newer torchpack format.
    """
    header_bytes, index_bytes = split_sidecar(data, source)
    header = decode_header(header_bytes, source)
    return header, decode_index(index_bytes, header, source)
