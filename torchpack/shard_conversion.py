"""One shard's conversion, in three steps: open (or resume) its staging, ingest its files, finish the store file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa

from torchpack.backends import writer_class
from torchpack.convert_options import ConvertOptions
from torchpack.format import FORMAT_NAME, FORMAT_VERSION, INDEX_SCHEMA, encode_header, encode_index
from torchpack.ingest_pool import IngestPool
from torchpack.scan import MAX_NOT_SELECTED_LISTED, ScannedTree
from torchpack.shard_plan import ShardPlan
from torchpack.staging import Progress, Staging

__all__ = ["ShardConversion", "ShardResult"]

_COMMIT_BYTES = 64 << 20


@dataclass
class ShardResult:
    """What converting one shard did."""

    path: str
    num_samples: int
    bad_files: list[dict[str, str]] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0  # allocated on disk: LMDB's tail padding is sparse
    resumed_from: int = 0  # files already done by an interrupted run


class ShardConversion:
    """Converts the files of one :class:`ShardPlan` of ``tree`` into its store file.

    Args:
        tree: the scanned source tree.
        shard: which files, and the file to write.
        options: the conversion's options.
        plan: what a resumed conversion must share with this one (JSON data).
    """

    def __init__(self, tree: ScannedTree, shard: ShardPlan, options: ConvertOptions, plan: dict[str, Any]) -> None:
        self.tree = tree
        self.shard = shard
        self.options = options
        self.plan = {**plan, "shard": [shard.index, shard.count, shard.start, shard.stop]}
        self.staging = Staging(shard.path)
        self.writer = None
        self.progress: Progress | None = None

    def run(self, pool: IngestPool, advance: Callable[[int], None]) -> ShardResult:
        """Open, ingest and finish; ``advance(n)`` is told of every ``n`` files done (a progress bar)."""
        try:
            resumed = self.open()
            advance(resumed)
            self.ingest(pool, advance)
            built = self.finish()
        except BaseException:
            if self.writer is not None:
                self.writer.abort()
            self.staging.close()
            raise
        self.staging.publish(built)
        tree, shard = self.tree, self.shard
        return ShardResult(
            path=shard.path,
            num_samples=len(self.progress.rows),
            bad_files=self.progress.bad,
            bytes_in=sum(tree.sizes[shard.start : shard.stop]),
            bytes_out=os.stat(shard.path).st_blocks * 512,
            resumed_from=resumed,
        )

    def open(self) -> int:
        """Open the staging folder and the backend's writer, dropping anything past the last commit.

        Returns the number of this shard's files an interrupted run already did.
        """
        self.progress = self.staging.open(self.plan, self.shard.start, self.options.resume)
        if os.path.exists(self.shard.path) and not self.options.overwrite:  # finished by another process meanwhile
            raise FileExistsError(f"{self.shard.path} already exists; pass overwrite=True (--overwrite) to replace it.")
        self.writer = writer_class(self.options.backend)(self.staging.folder, **self.options.writer_options)
        self.writer.truncate(len(self.progress.rows), self.progress.data_size)
        return self.progress.next_position - self.shard.start

    def ingest(self, pool: IngestPool, advance: Callable[[int], None]) -> None:
        """Read and check the files not yet done, committing every ``commit_every`` files (or 64 MB)."""
        tree, shard, progress, writer = self.tree, self.shard, self.progress, self.writer
        start = progress.next_position
        chunk_size = max(1, min(64, self.options.commit_every, (shard.stop - start) // (4 * max(pool.workers, 1)) or 1))
        chunks = (
            [os.path.join(tree.root, p) for p in tree.paths[i : min(i + chunk_size, shard.stop)]]
            for i in range(start, shard.stop, chunk_size)
        )
        position = start
        rows: list[tuple] = []
        bad: list[dict[str, str]] = []
        pending_bytes = 0
        for results in pool.map(chunks, self.options.ingest):
            for item in results:
                path, target = tree.paths[position], tree.targets[position]
                position += 1
                if item.ok:
                    writer.append(len(progress.rows) + len(rows), item.data)
                    offset = progress.data_size + pending_bytes
                    rows.append(
                        (path, target, offset, len(item.data), item.crc32, item.encoding, item.decoder, item.height, item.width, item.channels)
                    )
                    pending_bytes += len(item.data)
                else:
                    bad.append({"path": path, "error_type": item.error_type, "error": item.error})
                if len(rows) + len(bad) >= self.options.commit_every or pending_bytes >= _COMMIT_BYTES:
                    self._commit(position, rows, bad)
                    rows, bad, pending_bytes = [], [], 0
            advance(len(results))
        self._commit(position, rows, bad)

    def _commit(self, position: int, rows: list[tuple], bad: list[dict[str, str]]) -> None:
        """Make the samples durable in the backend first, then record them in the journal."""
        data_size = self.writer.commit()
        self.staging.journal.append(position, data_size, rows, bad)
        progress = self.progress
        progress.rows.extend(rows)
        progress.bad.extend(bad)
        progress.next_position = position
        progress.data_size = data_size

    def finish(self) -> str:
        """Write the header and index into the staged store; returns the finished file (still in staging)."""
        index = encode_index(_index_table(self.progress.rows))
        header = encode_header(self.header(), index)
        return self.writer.finish(header, index, self.progress.data_size)

    def header(self) -> dict[str, Any]:
        """The shard's store header (without its checksums)."""
        from torchpack import __version__

        tree, shard, ingest, progress = self.tree, self.shard, self.options.ingest, self.progress
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "backend": self.options.backend,
            "created_by": f"torchpack {__version__}",
            "classes": tree.classes,
            "class_to_idx": tree.class_to_idx,
            "num_samples": len(progress.rows),
            "storage": {
                "mode": ingest.storage,
                "checked": ingest.check,
                "short_side": ingest.short_side,
                "long_side": ingest.long_side,
                "quality": ingest.quality if ingest.storage == "reencode" else None,
                "raw_compression": ingest.raw_compression if ingest.storage == "raw" else None,
            },
            "shard": {
                "index": shard.index,
                "count": shard.count,
                "scan_start": shard.start,
                "scan_stop": shard.stop,
                "scan_total": len(tree),
                "dataset_id": tree.fingerprint,
            },
            "source": {"files": len(shard), "bytes": sum(tree.sizes[shard.start : shard.stop])},
            "selection": _selection(tree, shard.index == 0),
            "order": "imagefolder" if self.options.shuffle is None else f"shuffled with seed {self.options.shuffle}",
            "bad_files": progress.bad,
        }


def _selection(tree: ScannedTree, first_shard: bool) -> dict[str, Any]:
    """How the tree was listed, and what that left out: a dataset can then refuse a wider rule.

    The paths go into the first shard only (a sharded store reads its first shard's header).
    """
    return {
        "extensions": None if tree.extensions is None else list(tree.extensions),
        "is_valid_file": tree.is_valid_file,
        "not_selected": len(tree.not_selected),
        "not_selected_suffixes": tree.not_selected_suffixes(),
        "not_selected_paths": tree.not_selected[:MAX_NOT_SELECTED_LISTED] if first_shard else [],
    }


def _index_table(rows: Sequence[tuple]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in INDEX_SCHEMA]
    return pa.table([pa.array(list(col), type=f.type) for col, f in zip(columns, INDEX_SCHEMA)], schema=INDEX_SCHEMA)
