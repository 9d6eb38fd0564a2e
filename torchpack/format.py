"""What a store contains: the JSON header and the Arrow sample index, and how both are checked."""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX_SCHEMA",
    "INDEX_SCHEMA_V1",
    "InvalidStoreError",
    "UnsupportedVersionError",
    "decode_header",
    "decode_index",
    "encode_header",
    "encode_index",
    "sample_key",
]

FORMAT_NAME = "torchpack"
#: ``MAJOR.MINOR``. A minor version only adds index columns and header fields, which older
#: readers of the same major ignore; a major version changes what existing ones mean.
FORMAT_VERSION = "2.1"
SUPPORTED_MAJOR_VERSIONS = (1, 2)

#: A column of a few distinct strings, stored once each (Arrow's dictionary encoding).
_LABELS = pa.dictionary(pa.int8(), pa.string())

#: One row per sample, in DatasetFolder order.
INDEX_SCHEMA = pa.schema(
    [
        ("path", pa.string()),  # relative to the source root, "/"-separated
        ("target", pa.int32()),
        ("offset", pa.int64()),  # byte offset in the data region (HDF5); running total (LMDB)
        ("length", pa.int64()),  # stored byte length
        ("crc32", pa.uint32()),  # zlib.crc32 of the stored bytes
        ("encoding", _LABELS),  # sniffed from the content: "jpeg", "png", "npy", "wav", ..., or "raw"
        ("decoder", _LABELS),  # which decoder gives ImageFolder's pixels: "simplejpeg", "pillow", or "" (unknown)
        ("height", pa.int32()),  # decoded size, 0 when unknown (check skipped, or not an image)
        ("width", pa.int32()),
        ("channels", pa.int8()),  # stored channels of a raw sample: 1 (gray) or 3 (RGB); else 3, or 0 when unknown
    ]
)

#: The index of format 1.x stores: no ``decoder`` column, ``encoding`` as plain strings, and raw
#: samples always hold 3 channels.
INDEX_SCHEMA_V1 = pa.schema(
    [pa.field("encoding", pa.string()) if f.name == "encoding" else f for f in INDEX_SCHEMA if f.name != "decoder"]
)

#: Header fields every store must have, with their JSON types.
REQUIRED_HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": str,
    "backend": str,
    "classes": list,
    "num_samples": int,
    "storage": dict,
    "shard": dict,
    "index_crc32": int,
}


class InvalidStoreError(ValueError):
    """A file is not a readable torchpack store (wrong kind of file, damaged, or incomplete)."""


class UnsupportedVersionError(InvalidStoreError):
    """A store was written by a torchpack format version this reader does not know."""


def sample_key(row: int) -> bytes:
    """LMDB key of a sample: fixed-width big-endian, so key order is ImageFolder order."""
    return row.to_bytes(8, "big")


def encode_header(header: dict[str, Any], index: bytes | None = None) -> bytes:
    """Serialize a header to UTF-8 JSON, sealed with checksums of itself and of ``index``.

    ``index_crc32`` is the CRC-32 of the index bytes (kept from ``header`` when ``index`` is
    None); ``header_crc32`` covers the header's canonical JSON without that field. Together
    they turn damage in the metadata into an error instead of silently wrong labels or paths.
    """
    header = {k: v for k, v in header.items() if k != "header_crc32"}
    if index is not None:
        header["index_crc32"] = zlib.crc32(index)
    header["header_crc32"] = zlib.crc32(_canonical_json(header))
    return _canonical_json(header)


def _canonical_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")


def decode_header(data: bytes | memoryview, source: str) -> dict[str, Any]:
    """Parse and check a header; ``source`` names the store in error messages.

    Raises:
        InvalidStoreError: the bytes are not a torchpack header.
        UnsupportedVersionError: the header's major version is newer than this reader.
    """
    try:
        header = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidStoreError(f"{source}: the store header is not valid JSON ({exc}).") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise InvalidStoreError(f"{source}: not a torchpack store (its header has no format 'torchpack').")
    version = header.get("format_version")
    major = _major_version(version, source)
    if major not in SUPPORTED_MAJOR_VERSIONS:
        from torchpack import __version__

        raise UnsupportedVersionError(
            f"{source}: store format version {version!r} is not supported by torchpack {__version__} "
            f"(it reads formats {', '.join(f'{m}.x' for m in SUPPORTED_MAJOR_VERSIONS)}); "
            "upgrade torchpack to read it."
        )
    sealed = header.pop("header_crc32", None)
    if sealed != zlib.crc32(_canonical_json(header)):
        raise InvalidStoreError(f"{source}: the store header is damaged (its checksum does not match).")
    for field, kind in REQUIRED_HEADER_FIELDS.items():
        if not isinstance(header.get(field), kind) or isinstance(header.get(field), bool):
            raise InvalidStoreError(f"{source}: the store header has no valid {field!r} field.")
    classes = header["classes"]
    if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise InvalidStoreError(f"{source}: the store header's 'classes' is not a list of distinct names.")
    if header["num_samples"] < 0:
        raise InvalidStoreError(f"{source}: the store header has a negative 'num_samples'.")
    return header


def _major_version(version: Any, source: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise InvalidStoreError(f"{source}: the store header has a malformed format_version {version!r}.") from None


def encode_index(table: pa.Table) -> bytes:
    """Serialize the sample index as Arrow IPC stream bytes, buffers LZ4-compressed.

    Compression (Arrow's own IPC option, read transparently by any Arrow reader) makes the
    index about 2.5x smaller, which keeps an LMDB store no larger than its tree.
    """
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, INDEX_SCHEMA, options=options) as writer:
        writer.write_table(table.cast(INDEX_SCHEMA))
    return sink.getvalue().to_pybytes()


def decode_index(data: bytes | memoryview, header: dict[str, Any], source: str, data_size: int | None = None) -> pa.Table:
    """Parse the sample index and check it against the header.

    ``data_size`` (the size of the data region, when the backend has one) bounds every
    sample's ``offset + length``.

    Raises:
        InvalidStoreError: the index is damaged or disagrees with the header.
    """
    if zlib.crc32(data) != header["index_crc32"]:
        raise InvalidStoreError(f"{source}: the sample index is damaged (its checksum does not match the header's).")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        # Full validation checks offsets and UTF-8, which reading IPC bytes does not.
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise InvalidStoreError(f"{source}: the sample index is damaged ({exc}).") from exc
    table = _current_columns(table, _major_version(header["format_version"], source), source)
    if table.num_rows != header["num_samples"]:
        raise InvalidStoreError(
            f"{source}: the index holds {table.num_rows} samples but the header says {header['num_samples']}."
        )
    if any(column.null_count for column in table.columns):
        raise InvalidStoreError(f"{source}: the sample index has missing values.")
    targets = column_array(table, "target")
    lengths = column_array(table, "length")
    offsets = column_array(table, "offset")
    if len(targets) and (targets.min() < 0 or targets.max() >= len(header["classes"])):
        raise InvalidStoreError(f"{source}: the sample index has targets outside the class list.")
    if len(lengths) and (lengths.min() < 0 or offsets.min() < 0):
        raise InvalidStoreError(f"{source}: the sample index has negative offsets or lengths.")
    if data_size is not None and len(lengths) and int((offsets + lengths).max()) > data_size:
        raise InvalidStoreError(f"{source}: the sample index points past the end of the data ({data_size} bytes).")
    return table


def _current_columns(table: pa.Table, major: int, source: str) -> pa.Table:
    """The index with this reader's columns, in its order: a 1.x index gains an empty ``decoder``
    column; columns a later 2.x minor version added are dropped."""
    if major == 1:
        if not table.schema.equals(INDEX_SCHEMA_V1):
            raise InvalidStoreError(f"{source}: the sample index has an unexpected schema:\n{table.schema}")
        unknown = pc.fill_null(pa.nulls(table.num_rows, pa.string()), "").cast(_LABELS)
        encoding = INDEX_SCHEMA.get_field_index("encoding")
        table = table.set_column(encoding, "encoding", table.column("encoding").cast(_LABELS))
        table = table.add_column(INDEX_SCHEMA.get_field_index("decoder"), "decoder", unknown)
    for field in INDEX_SCHEMA:
        if table.schema.get_field_index(field.name) < 0 or not table.schema.field(field.name).type.equals(field.type):
            raise InvalidStoreError(f"{source}: the sample index has no valid {field.name!r} column:\n{table.schema}")
    return table.select(INDEX_SCHEMA.names).combine_chunks()


def column_array(table: pa.Table, name: str) -> np.ndarray:
    """A column of a primitive type as a numpy array, without a copy where Arrow allows it."""
    column = table.column(name)
    if column.num_chunks == 0:
        return np.zeros(0, dtype=column.type.to_pandas_dtype())
    chunk = column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)
    return chunk.to_numpy(zero_copy_only=False)
