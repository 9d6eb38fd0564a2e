"""Read-only views of a store for people and scripts: ``info`` and ``verify``."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from torchpack.decode import decode_array
from torchpack.ingest import is_image
from torchpack.format import InvalidStoreError
from torchpack.store import StoreRoot, load_store_index
from torchpack.handles import borrowed_reader

__all__ = ["VerifyReport", "store_info", "verify_store"]


def store_info(root: StoreRoot, storage_options: dict[str, Any] | None = None, cache: Any = None) -> dict[str, Any]:
    """Header, classes with counts, sizes, storage and left-out files of a store (or its shards).

    ``root`` may be a URL of a store in object storage (``storage_options`` for fsspec); its shards
    are not downloaded when they have index sidecars.
    """
    index = load_store_index(root, None, storage_options, cache)
    header = index.headers[0]
    counts = np.bincount(index.targets, minlength=len(index.classes)).tolist()
    file_bytes = sum(index.file_sizes())
    source_bytes = sum(h.get("source", {}).get("bytes", 0) for h in index.headers)
    return {
        "files": index.files,
        "backend": index.backend,
        "format_version": header["format_version"],
        "created_by": header.get("created_by"),
        "num_samples": len(index),
        "num_classes": len(index.classes),
        "classes": dict(zip(index.classes, counts)),
        "storage": header["storage"],
        "encodings": {name: int(np.sum(index.encoding_codes == i)) for i, name in enumerate(index.encodings)},
        "decoders": {name or "none (unchecked, raw, or not an image)": int(np.sum(index.decoder_codes == i)) for i, name in enumerate(index.decoders)},
        "shards": len(index.files),
        "store_bytes": file_bytes,
        "sample_bytes": int(index.lengths.sum()),
        "source_bytes": source_bytes,
        "bad_files": [bad for h in index.headers for bad in h.get("bad_files", [])],
    }


@dataclass
class VerifyReport:
    """What ``verify`` found: ``ok`` is True only if every check passed."""

    files: list[str]
    checked: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether verification found nothing wrong."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (what ``torchpack verify --json`` prints)."""
        return {"ok": self.ok, "files": self.files, "checked": self.checked, "problems": self.problems}


def verify_store(
    root: StoreRoot, decode: bool = False, storage_options: dict[str, Any] | None = None, cache: Any = None
) -> VerifyReport:
    """Check a store's header, index and every sample's checksum; with ``decode``, that every image decodes.

    ``decode`` runs the datasets' own decode (the fast decoder where the index allows it,
    else Pillow) on every raw sample and every image (by the converter's rule: one of
    ImageFolder's extensions, or image content), so it reports exactly the images that an
    ImageFolder dataset on the store would fail to load. Other files (a DatasetFolder store's
    ``.npy`` or ``.wav``) get the checksum only.
    Damage to the header or index is reported as a problem of the file, never raised. A store
    in object storage (``root`` a URL) is checked in the node's shard cache (``cache``).
    """
    try:
        index = load_store_index(root, None, storage_options, cache)
    except (InvalidStoreError, OSError) as exc:
        files = [os.fspath(root)] if isinstance(root, (str, os.PathLike)) else [os.fspath(p) for p in root]
        return VerifyReport(files, 0, [{"path": None, "file": files[0], "problem": str(exc)}])
    report = VerifyReport(index.files)
    for shard, path in enumerate(index.files):
        start = int(index.shard_starts[shard])
        stop = int(index.shard_starts[shard + 1]) if shard + 1 < len(index.files) else len(index)
        try:
            local = index.local_file(shard)
        except (InvalidStoreError, OSError) as exc:
            report.checked += stop - start
            report.problems.append({"path": None, "file": path, "row": None, "problem": str(exc)})
            continue
        with borrowed_reader(local, index.backend) as reader:
            for row in range(start, stop):
                problem = _check_sample(reader, index, row, row - start, decode, index.compressions[shard])
                report.checked += 1
                if problem:
                    report.problems.append({"path": index.paths[row].as_py(), "file": path, "row": row, "problem": problem})
    return report


def _check_sample(reader, index, row: int, local: int, decode: bool, compression) -> str | None:
    try:
        data = reader.read(local, int(index.offsets[row]), int(index.lengths[row]))
        if zlib.crc32(data) != int(index.crc32[row]):
            return "checksum mismatch"
        encoding = index.encodings[index.encoding_codes[row]]
        if decode and (encoding == "raw" or is_image(index.paths[row].as_py(), encoding, IMG_EXTENSIONS)):
            shape = (int(index.heights[row]), int(index.widths[row]), int(index.channels[row]))
            decoder = index.decoders[index.decoder_codes[row]]
            decode_array(data, encoding, None, shape, compression, decoder)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
