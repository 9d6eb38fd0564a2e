"""Whole batches of same-size raw samples read as one ``(N, 3, H, W)`` tensor: no per-sample work.

For tiny images (28x28, 32x32) the per-sample cost of Python is the whole cost of a read. A
batch of uncompressed same-size samples in a contiguous data region (HDF5) is a single
``np.take`` from the memory map; otherwise one read per sample and one copy for the batch.
"""

from __future__ import annotations

import functools
import zlib

import lz4.block
import numpy as np
import torch

from torchpack.batch import StackedBatch, batch_tensor
from torchpack.handles import ShardHandles
from torchpack.integrity import ChecksumGuard
from torchpack.store import StoreIndex

__all__ = ["RawBatchGather"]


class RawBatchGather:
    """Reads batches of a raw single-file store as stacked tensors, checking each sample's CRC-32 once.

    Args:
        index: the store's index (every sample raw, in one file: :attr:`StoreIndex.all_raw`).
        handles: the dataset's readers.
        guard: the dataset's checksum flags.
    """

    def __init__(self, index: StoreIndex, handles: ShardHandles, guard: ChecksumGuard) -> None:
        self.index = index
        self.handles = handles
        self.guard = guard
        self.compression = index.compressions[0]
        self._uniform: bool | None = None  # decided on the first gather

    def shape(self, rows: np.ndarray) -> tuple[int, int, int] | None:
        """``(height, width, channels)`` of raw samples ``rows`` that read as one tensor (channels 0: some
        gray, some RGB), else None."""
        index = self.index
        if not (len(rows) and index.all_raw):
            return None
        if index.uniform_raw_shape is not None:
            return index.uniform_raw_shape
        height, width = int(index.heights[rows[0]]), int(index.widths[rows[0]])
        if not (np.all(index.heights[rows] == height) and np.all(index.widths[rows] == width)):
            return None
        channels = index.channels[rows]
        return height, width, int(channels[0]) if np.all(channels == channels[0]) else 0

    def read(self, rows: np.ndarray, shape: tuple[int, int, int]) -> StackedBatch:
        """Rows ``rows`` of shape ``shape`` (from :meth:`shape`) as one RGB batch with their targets."""
        h, w, c = shape
        if c == 3:
            images = batch_tensor((len(rows), h, w, 3))
            self._gather(rows, images.numpy().reshape(len(rows), h * w * 3), 1)
            images = images.permute(0, 3, 1, 2)
        elif c == 1:  # grayscale, stored once, copied into each of the three channels ImageFolder returns
            images = batch_tensor((len(rows), 3, h, w))
            self._gather(rows, images.numpy().reshape(len(rows) * 3, h * w), 3)
        else:
            images = batch_tensor((len(rows), 3, h, w))
            self._gather_mixed(rows, images.numpy())
        return StackedBatch(images, torch.from_numpy(self.index.targets[rows].astype(np.int64)))

    def _chunks(self, rows: np.ndarray) -> list:
        index = self.index
        chunks = self.handles.reader(0).read_batch(rows, index.offsets[rows], index.lengths[rows])
        self.guard.check_batch(rows, lambda todo: (zlib.crc32(chunks[i]) for i in todo.tolist()))
        return chunks

    def _gather_mixed(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Gray and RGB samples of one size into ``out`` (N, 3, H, W): each kind in one assignment."""
        _, _, h, w = out.shape
        chunks = self._chunks(rows)
        channels = self.index.channels[rows]
        for c in (1, 3):
            positions = np.flatnonzero(channels == c)
            if not len(positions):
                continue
            parts = [chunks[i] for i in positions.tolist()]
            if self.compression == "lz4":
                parts = list(map(functools.partial(lz4.block.decompress, uncompressed_size=h * w * c), parts))
            pixels = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(len(positions), h, w, c)
            out[positions] = pixels.transpose(0, 3, 1, 2)  # broadcasts one gray channel into three

    def _gather(self, rows: np.ndarray, out: np.ndarray, copies: int) -> None:
        """The stored pixels of each of ``rows``, ``copies`` times over, into the rows of ``out``.

        Whole-array calls (np.take, map over C functions), not Python loops: the per-sample
        cost is what this path is for.
        """
        table = self._sample_table(out.shape[1])
        if table is not None:
            # One pass straight from the map. mode="clip" (rows are already checked): the
            # default mode="raise" buffers `out` and is about 14x slower.
            np.take(table, np.repeat(rows, copies) if copies > 1 else rows, axis=0, out=out, mode="clip")
            self.guard.check_batch(rows, lambda todo: map(zlib.crc32, out[todo * copies]))
            return
        chunks = self._chunks(rows)
        if self.compression == "lz4":
            chunks = list(map(functools.partial(lz4.block.decompress, uncompressed_size=out.shape[1]), chunks))
        pixels = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(len(rows), 1, out.shape[1])
        out.reshape(len(rows), copies, out.shape[1])[...] = pixels

    def _sample_table(self, sample_size: int) -> np.ndarray | None:
        """The data region as a 2-D ``(samples, sample_size)`` view, for uncompressed same-size raw
        samples stored back to back in a backend with contiguous data (HDF5); else None."""
        index = self.index
        if self._uniform is None:
            offsets, lengths = index.offsets, index.lengths
            self._uniform = (
                self.compression == "none"
                and bool(np.all(lengths == sample_size))
                and bool(np.all(offsets == offsets[0] + np.arange(len(offsets), dtype=np.int64) * sample_size))
            )
        view = self.handles.reader(0).data_view() if self._uniform else None
        if view is None:
            return None
        count = len(index)
        start = int(index.offsets[0])
        return np.frombuffer(view, dtype=np.uint8, count=count * sample_size, offset=start).reshape(count, sample_size)
