"""``LMDBImageFolder`` and ``HDF5ImageFolder``: drop-in replacements for ``torchvision.datasets.ImageFolder``.

Both share one base class that does decoding, the bad-sample policy and transforms; they
differ only in the backend that hands over a sample's stored bytes.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import zlib
from collections.abc import Sequence
from typing import Any, Callable, Iterator

import lz4.block
import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.vision import VisionDataset

from torchpack.decode import DecodeSize, array_to_tensor, bytes_loader, decode_array, decode_pil
from torchpack.errors import BadSample, BadSampleError
from torchpack.store import StoreIndex, StoreRoot, load_store_index
from torchpack.workers import cached_reader

__all__ = ["HDF5ImageFolder", "LMDBImageFolder", "StackedBatch", "StoreImageFolder"]

logger = logging.getLogger("torchpack")

DECODE_MODES = ("pil", "tensor", "numpy")
ON_ERROR = ("raise", "skip", "replace")
_MAX_REPLACEMENT_TRIES = 64


def _shared_counter() -> Any:
    """A process-shared int64 that DataLoader workers of every start method can receive."""
    # Made in the default (fork) context, its lock refuses to be sent to spawn or forkserver
    # workers ("A SemLock created in a fork context is being shared with a process in a spawn
    # context"); made for spawn, it also works in forked workers, which inherit it.
    return multiprocessing.get_context("spawn").Value("q", 0)


class _IntSequence(Sequence):
    """A read-only sequence of Python ints over a numpy array (what ``targets`` is)."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._values[i].tolist()
        return int(self._values[i])

    def __iter__(self) -> Iterator[int]:
        for start in range(0, len(self._values), 65536):
            yield from self._values[start : start + 65536].tolist()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self._values if dtype is None else self._values.astype(dtype)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"[{', '.join(map(str, self._values[:10].tolist()))}{', ...' if len(self) > 10 else ''}]"


class _SampleSequence(Sequence):
    """``samples``/``imgs``: ``(path, target)`` tuples built on access from the index arrays."""

    def __init__(self, prefix: str, index: StoreIndex, rows: np.ndarray | None) -> None:
        self._prefix = prefix
        self._index = index
        self._rows = rows

    def __len__(self) -> int:
        return len(self._index) if self._rows is None else len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample index {i} is out of range for {len(self)} samples")
        row = i if self._rows is None else int(self._rows[i])
        return os.path.join(self._prefix, self._index.paths[row].as_py()), int(self._index.targets[row])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} samples: {self[0] if len(self) else ''}, ...>"


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory, as ``default_collate`` allocates.

    A tensor that a worker sends is moved to shared memory anyway: allocating it there
    saves that copy.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class StackedBatch(Sequence):
    """A batch of same-size raw samples read as one ``(N, C, H, W)`` uint8 tensor.

    Returned by ``__getitems__`` (``decode="tensor"``, raw storage, no transforms).
    :class:`torchpack.SkipBadCollate` passes it through as ``[images, targets]`` with no
    per-sample work; any other collate sees an ordinary sequence of ``(image, target)``.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.images[i], int(self.targets[i])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        # default_collate iterates a batch twice; unbind makes the views in one C++ call.
        return zip(self.images.unbind(0), self.targets.tolist())


class StoreImageFolder(ImageFolder):
    """An ImageFolder whose samples come from a torchpack store instead of a directory tree.

    It subclasses ``ImageFolder`` so that ``isinstance`` checks and torchvision's
    ``wrap_dataset_for_transforms_v2`` treat it as one, but it never scans a folder:
    ``DatasetFolder.__init__`` is replaced because it builds Python lists of every sample,
    which cost seconds at 1M samples and grow every worker's memory.

    Args:
        root: the store file; or the shards of one, as a folder, a glob pattern or a list.
        transform: applied to each image, read at call time (it may be set after construction).
        target_transform: applied to each target.
        loader: called with a binary file object holding one sample's stored bytes; the
            default decodes to the same PIL RGB image as ImageFolder's loader.
        is_valid_file: keep only samples whose path (``os.path.join(root, relative_path)``)
            it accepts, as ImageFolder does.
        allow_empty: allow classes with no samples, as in ImageFolder.
        decode: ``"pil"`` (RGB ``PIL.Image``, ImageFolder's output), ``"tensor"`` (CHW uint8
            tensor) or ``"numpy"`` (HWC uint8 array); ignored with a custom ``loader``.
        decode_size: decode JPEGs at the smallest of 1/2, 1/4, 1/8 scale that still covers this
            short side (int) or ``(height, width)``: much faster before ``Resize``/``RandomResizedCrop``.
        on_error: what a sample that cannot be read, decoded or transformed does: ``"raise"``
            (a :class:`BadSampleError` naming it), ``"skip"`` (return a :class:`BadSample`
            marker for :class:`SkipBadCollate` to drop) or ``"replace"`` (return the next
            good sample in dataset order instead).
        check_crc: compare each sample's CRC-32 with the index, catching damage after conversion.
        readahead: let the OS read ahead (LMDB); turn off for random access to stores larger than RAM.
    """

    backend: str | None = None

    def __init__(
        self,
        root: StoreRoot,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        loader: Callable[[io.BufferedIOBase], Any] = bytes_loader,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        decode: str = "pil",
        decode_size: DecodeSize = None,
        on_error: str = "raise",
        check_crc: bool = True,
        readahead: bool = True,
    ) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"`decode` must be one of {DECODE_MODES}, got {decode!r}.")
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self._index = load_store_index(self.root, self.backend)
        self.classes = self._index.classes
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.loader = loader
        self.extensions = IMG_EXTENSIONS if is_valid_file is None else None
        self.decode = decode
        self.decode_size = decode_size
        self.on_error = on_error
        self.check_crc = check_crc
        self.readahead = readahead
        self._prefix = self._index.files[0] if len(self._index.files) == 1 else os.path.dirname(self._index.files[0])
        self._rows = self._select_rows(is_valid_file, allow_empty)
        self.samples = _SampleSequence(self._prefix, self._index, self._rows)
        self.imgs = self.samples
        self.targets = _IntSequence(self._index.targets if self._rows is None else self._index.targets[self._rows])
        self._compression = [h["storage"].get("raw_compression") for h in self._index.headers]
        self._skipped = _shared_counter() if on_error != "raise" else None
        self._uniform_raw: bool | None = None  # decided on the first stacked batch
        self._readers: list = []
        self._readers_pid: int | None = None

    def _select_rows(self, is_valid_file: Callable[[str], bool] | None, allow_empty: bool) -> np.ndarray | None:
        """Rows kept by ``is_valid_file`` (the converter already applied ImageFolder's extensions), and the empty-class rule."""
        rows = None
        if is_valid_file is not None:
            keep = [is_valid_file(os.path.join(self._prefix, p)) for p in self._index.paths.to_pylist()]
            rows = np.flatnonzero(np.asarray(keep, dtype=bool))
        targets = self._index.targets if rows is None else self._index.targets[rows]
        present = np.bincount(targets, minlength=len(self.classes)) > 0
        empty_classes = {c for c, has in zip(self.classes, present) if not has}
        if empty_classes and not allow_empty:
            msg = f"Found no valid file for the classes {', '.join(sorted(empty_classes))}. "
            if self.extensions is not None:
                msg += f"Supported extensions are: {', '.join(self.extensions)}"
            raise FileNotFoundError(msg)
        return rows

    # -- handles ------------------------------------------------------------------------------

    def _reader(self, shard: int):
        # The readers this process uses, remembered with the pid that opened them: a forked
        # worker sees another pid and fetches its own; pickling drops them (__getstate__).
        pid = os.getpid()
        if self._readers_pid != pid:
            self._readers, self._readers_pid = [None] * len(self._index.files), pid
        reader = self._readers[shard]
        if reader is None:
            options = {"readahead": self.readahead} if self._index.backend == "lmdb" else {}
            index = self._index
            reader = self._readers[shard] = cached_reader(index.files[shard], index.backend, index.identities[shard], **options)
        return reader

    def open_handles(self) -> None:
        """Open this process's handles now (they otherwise open on first access)."""
        for shard in range(len(self._index.files)):
            self._reader(shard)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"], state["_readers_pid"] = [], None
        # A shared counter may only cross into a process being started (DataLoader workers);
        # an ordinary pickle gets a fresh one.
        if state.get("_skipped") is not None and multiprocessing.context.get_spawning_popen() is None:
            state["_skipped"] = "new"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("_skipped") == "new":
            state["_skipped"] = _shared_counter()
        self.__dict__.update(state)

    # -- samples ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index) if self._rows is None else len(self._rows)

    def _row(self, index: int) -> int:
        n = len(self._index.targets) if self._rows is None else len(self._rows)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample index {index} is out of range for {type(self).__name__} with {n} samples")
        return index if self._rows is None else int(self._rows[index])

    def relative_path(self, index: int) -> str:
        """The sample's path relative to the converted tree's root, e.g. ``"cat/001.jpg"``."""
        return self._index.paths[self._row(index)].as_py()

    def read_bytes(self, index: int) -> bytes:
        """The sample's stored bytes (the original file's bytes unless the store re-encoded them)."""
        return bytes(self._read(self._row(index)))

    def _read(self, row: int):
        index = self._index
        shard, local = index.locate(row)
        data = self._reader(shard).read(local, int(index.offsets[row]), int(index.lengths[row]))
        if self.check_crc and zlib.crc32(data) != int(index.crc32[row]):
            raise ValueError("checksum mismatch: the stored bytes were damaged after conversion")
        return data

    def _decode(self, data, row: int) -> Any:
        index = self._index
        if self.loader is not bytes_loader:
            return self.loader(io.BytesIO(bytes(data)))
        encoding = index.encodings[index.encoding_codes[row]]
        if encoding == "raw":
            shape = (int(index.heights[row]), int(index.widths[row]), int(index.channels[row]))
            compression = self._compression[index.locate(row)[0]]
        else:
            shape, compression = (0, 0, 0), None
        if self.decode == "pil":
            return decode_pil(data, encoding, self.decode_size, shape, compression)
        pixels = decode_array(data, encoding, self.decode_size, shape, compression)
        return array_to_tensor(pixels) if self.decode == "tensor" else pixels

    def _load(self, row: int) -> tuple[Any, Any]:
        image = self._decode(self._read(row), row)
        target = int(self._index.targets[row])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """The ``(image, target)`` pair, as ``ImageFolder`` returns it for the same index."""
        row = self._row(index)
        try:
            return self._load(row)
        except Exception as exc:
            return self._bad_sample(index, row, exc)

    def _rows_of(self, indices) -> np.ndarray:
        """The rows of many indices at once (``_row`` for a whole batch, without a Python loop)."""
        n = len(self)
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        positions = np.where(positions < 0, positions + n, positions)
        outside = (positions < 0) | (positions >= n)
        if outside.any():
            index = indices[int(np.argmax(outside))]
            raise IndexError(f"sample index {index} is out of range for {type(self).__name__} with {n} samples")
        return positions if self._rows is None else self._rows[positions]

    def __getitems__(self, indices: list[int]) -> list[Any] | StackedBatch:
        """A whole DataLoader batch in one call: one batched read, then decode and transform each."""
        rows = self._rows_of(indices)
        if self._stackable(rows):
            try:
                return self._stacked(rows)
            except Exception:
                pass  # fall back to per-sample loading, which applies the on_error policy to each
        return [self[i] for i in indices]

    def _stackable(self, rows: np.ndarray) -> bool:
        index = self._index
        first = rows[0] if len(rows) else 0
        return (
            self.decode == "tensor"
            and self.transform is None
            and self.target_transform is None
            and self.loader is bytes_loader
            and len(rows) > 0
            and len(index.files) == 1
            and index.encodings == ["raw"]
            and bool(np.all(index.heights[rows] == index.heights[first]))
            and bool(np.all(index.widths[rows] == index.widths[first]))
            and bool(np.all(index.channels[rows] == index.channels[first]))
        )

    def _stacked(self, rows: np.ndarray) -> StackedBatch:
        # map() with C functions, not Python loops: the per-sample cost is what this path is for.
        index = self._index
        h, w, c = int(index.heights[rows[0]]), int(index.widths[rows[0]]), int(index.channels[rows[0]])
        images = _batch_tensor((len(rows), h, w, c))
        flat = images.numpy().reshape(len(rows), h * w * c)
        table = self._sample_table(h * w * c)
        if table is not None:
            np.take(table, rows, axis=0, out=flat)  # one gather straight from the map, no per-sample call
            chunks = flat
        else:
            chunks = self._reader(0).read_batch(rows, index.offsets[rows], index.lengths[rows])
        if self.check_crc and list(map(zlib.crc32, chunks)) != index.crc32[rows].tolist():
            raise ValueError("checksum mismatch in batch")
        if table is None:
            if self._compression[0] == "lz4":
                chunks = list(map(functools.partial(lz4.block.decompress, uncompressed_size=h * w * c), chunks))
            flat[...] = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(flat.shape)
        return StackedBatch(images.permute(0, 3, 1, 2), torch.from_numpy(index.targets[rows].astype(np.int64)))

    def _sample_table(self, sample_size: int) -> np.ndarray | None:
        """The data region as a 2-D ``(samples, sample_size)`` view, for uncompressed same-size raw
        samples stored back to back in a backend with contiguous data (HDF5); else None."""
        if self._uniform_raw is None:
            index = self._index
            offsets, lengths = index.offsets, index.lengths
            self._uniform_raw = (
                self._compression[0] == "none"
                and bool(np.all(lengths == sample_size))
                and bool(np.all(offsets == offsets[0] + np.arange(len(offsets), dtype=np.int64) * sample_size))
            )
        view = self._reader(0).data_view() if self._uniform_raw else None
        if view is None:
            return None
        count = len(self._index)
        start = int(self._index.offsets[0])
        return np.frombuffer(view, dtype=np.uint8, count=count * sample_size, offset=start).reshape(count, sample_size)

    # -- bad samples --------------------------------------------------------------------------

    def _bad_sample(self, index: int, row: int, exc: Exception) -> Any:
        path = self._index.paths[row].as_py()
        if self.on_error == "raise":
            raise BadSampleError(
                f"Sample {index} ({path}) of {self._prefix} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        self._count_skipped()
        logger.warning("torchpack: skipped bad sample %d (%s): %s: %s", index, path, type(exc).__name__, exc)
        if self.on_error == "skip":
            return BadSample(index, path, f"{type(exc).__name__}: {exc}")
        tries = min(_MAX_REPLACEMENT_TRIES, len(self)) - 1
        for step in range(1, tries + 1):
            candidate = (index + step) % len(self)
            try:
                return self._load(self._row(candidate))
            except Exception:
                self._count_skipped()
        raise BadSampleError(
            f"Sample {index} ({path}) could not be loaded, nor any of the {tries} samples after it."
        ) from exc

    def _count_skipped(self) -> None:
        with self._skipped.get_lock():
            self._skipped.value += 1

    @property
    def skipped_count(self) -> int:
        """Bad samples skipped or replaced so far, summed over all DataLoader worker processes."""
        return 0 if self._skipped is None else int(self._skipped.value)

    def reset_skipped_count(self) -> None:
        """Set :attr:`skipped_count` back to zero (say, at the start of an epoch)."""
        if self._skipped is not None:
            with self._skipped.get_lock():
                self._skipped.value = 0

    # -- description ----------------------------------------------------------------------------

    @property
    def header(self) -> dict[str, Any]:
        """The store's header (the first shard's, for a sharded store)."""
        return self._index.headers[0]

    def extra_repr(self) -> str:
        lines = [f"Store: {self._index.backend}, {len(self._index.files)} file(s), {len(self.classes)} classes"]
        lines.append(f"Storage: {self.header['storage']['mode']}")
        decode = "custom loader" if self.loader is not bytes_loader else self.decode
        if self.decode_size is not None and self.loader is bytes_loader:
            decode += f", JPEG scaled to cover {self.decode_size}"
        lines.append(f"Decode: {decode}")
        lines.append(f"On error: {self.on_error}")
        return "\n".join(lines)


class LMDBImageFolder(StoreImageFolder):
    """ImageFolder over an LMDB store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
        dataset = torchpack.LMDBImageFolder("data/train.lmdb", transform=tf)

    Arguments and attributes are ImageFolder's; see :class:`StoreImageFolder` for the extras.
    """

    backend = "lmdb"


class HDF5ImageFolder(StoreImageFolder):
    """ImageFolder over an HDF5 store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
        dataset = torchpack.HDF5ImageFolder("data/train.h5", transform=tf)

    Arguments and attributes are ImageFolder's; see :class:`StoreImageFolder` for the extras.
    """

    backend = "hdf5"
