"""Drop-in replacements for ``torchvision.datasets.DatasetFolder`` and ``ImageFolder`` over a store.

One base class does the work for every store: it selects samples by DatasetFolder's rules,
hands each sample's bytes to the loader (or, for torchvision's own image loaders, decodes
them itself with the same pixels), applies the bad-sample policy and the transforms. The
classes differ only in the backend that hands over a sample's stored bytes::

    StoreDatasetFolder(DatasetFolder)          StoreImageFolder(StoreDatasetFolder, ImageFolder)
    ├── LMDBDatasetFolder                      ├── LMDBImageFolder(.., LMDBDatasetFolder)
    └── HDF5DatasetFolder                      └── HDF5ImageFolder(.., HDF5DatasetFolder)
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.context
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import lz4.block
import numpy as np
import pyarrow.compute as pc
import torch
from torchvision.datasets import DatasetFolder, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, has_file_allowed_extension
from torchvision.datasets.vision import VisionDataset

from torchpack.batch import StackedBatch, batch_tensor
from torchpack.decode import DecodeSize, decode_array, decode_pil, raw_rgb
from torchpack.errors import BadSample, BadSampleError
from torchpack.loaders import LoaderCall, is_builtin_image_loader
from torchpack.scan import check_selection, name_suffix
from torchpack.store import StoreRoot, load_store_index
from torchpack.views import IntSequence, SampleSequence
from torchpack.workers import cached_reader

__all__ = [
    "HDF5DatasetFolder",
    "HDF5ImageFolder",
    "LMDBDatasetFolder",
    "LMDBImageFolder",
    "StackedBatch",
    "StoreDatasetFolder",
    "StoreImageFolder",
]

logger = logging.getLogger("torchpack")

DECODE_MODES = ("pil", "tensor", "numpy")
_TINY_PIXELS = 64 * 64  # raw images up to this size come as contiguous CHW tensors, larger ones channels-last
ON_ERROR = ("raise", "skip", "replace")
_MAX_REPLACEMENT_TRIES = 64


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # by (pid, threads): threads do not survive a fork


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    key = (os.getpid(), threads)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="torchpack")
    return pool


def _shared_counter() -> Any:
    """A process-shared int64 that DataLoader workers of every start method can receive."""
    # Made in the default (fork) context, its lock refuses to be sent to spawn or forkserver
    # workers ("A SemLock created in a fork context is being shared with a process in a spawn
    # context"); made for spawn, it also works in forked workers, which inherit it.
    return multiprocessing.get_context("spawn").Value("q", 0)


def _shared_flags(count: int) -> Any:
    """``count`` process-shared bytes, zeroed, that DataLoader workers of every start method share."""
    return multiprocessing.get_context("spawn").RawArray("B", max(count, 1))


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC uint8 array to a CHW uint8 tensor (a view, no copy)."""
    if not pixels.flags.writeable:
        pixels = pixels.copy()  # torch warns on read-only memory, and the sample must outlive the read buffer
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _extension_mask(paths, extensions: tuple[str, ...]) -> np.ndarray:
    """``has_file_allowed_extension`` over every stored path at once (lowercased name, extensions as given)."""
    lowered = pc.utf8_lower(paths)
    masks = [pc.ends_with(lowered, e).to_numpy(zero_copy_only=False) for e in extensions]
    return functools.reduce(np.logical_or, masks, np.zeros(len(paths), dtype=bool))


def _may_end_with(suffix: str, extension: str) -> bool:
    """Whether a lowercased file name whose last suffix is ``suffix`` (``".txt"``, or ``""``) can end with ``extension``."""
    if not suffix:
        return "." not in extension
    return suffix.endswith(extension) or extension.endswith(suffix)


class StoreDatasetFolder(DatasetFolder):
    """A DatasetFolder whose samples come from a torchpack store instead of a directory tree.

    It subclasses ``DatasetFolder`` so that ``isinstance`` checks treat it as one, but it never
    scans a folder: ``DatasetFolder.__init__`` is replaced because it builds Python lists of
    every sample, which cost seconds at 1M samples and grow every worker's memory.

    Args:
        root: the store file; or the shards of one, as a folder, a glob pattern or a list.
        loader: called with a binary file object over one sample's stored bytes, whose ``name``
            is the sample's path relative to the converted tree (``np.load``, ``torch.load`` with ``weights_only=True``,
            ``soundfile.read`` and ``PIL.Image.open`` take it as it is). torchvision's
            ``pil_loader`` and ``default_loader`` are not called: the dataset decodes for them,
            with the same pixels. A loader that insists on a path gets one (see ``loader_input``).
        extensions: keep the samples whose path ends with one of these, as DatasetFolder does.
        transform: applied to each loaded sample, read at call time (it may be set after construction).
        target_transform: applied to each target.
        is_valid_file: or keep the samples whose path (``os.path.join(root, relative_path)``)
            it accepts. Exactly one of ``extensions`` and ``is_valid_file``, as in DatasetFolder.
        allow_empty: allow classes with no samples, as in DatasetFolder.
        loader_input: ``"auto"`` (a file object; a loader that fails on it and works on a path
            gets a path to a temporary copy of each sample from then on, with a warning),
            ``"file"`` or ``"path"``.
        on_error: what a sample that cannot be read, loaded or transformed does: ``"raise"``
            (a :class:`BadSampleError` naming it), ``"skip"`` (return a :class:`BadSample`
            marker for :class:`SkipBadCollate` to drop) or ``"replace"`` (return the next
            good sample in dataset order instead).
        check_crc: check each sample's CRC-32 on its first read (by this dataset, in any of its
            worker processes), catching damage after conversion before the sample is used.
        readahead: let the OS read ahead (LMDB); turn off for random access to stores larger than RAM.
        threads: decode and transform each DataLoader batch (``__getitems__``) in this many
            threads. For loading in the training process (``num_workers=0``) on a machine with
            cores to spare: the decoders and torch release the GIL, and no batch crosses a
            process boundary. Transforms must then be thread-safe (torchvision's are).

    Raises:
        FileNotFoundError: no store at ``root``, or a class has no sample and ``allow_empty`` is False.
        InvalidStoreError: ``root`` is not a store of this backend, or is damaged.
        UnsupportedVersionError: the store was written by a newer torchpack format.
        ValueError: a bad argument, or the selection accepts files the converter left out.
    """

    backend: str | None = None
    #: How the built-in image decode returns images; :class:`StoreImageFolder` makes these arguments.
    decode: str = "pil"
    decode_size: DecodeSize = None

    def __init__(
        self,
        root: StoreRoot,
        loader: Callable[[Any], Any],
        extensions: tuple[str, ...] | str | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        loader_input: str = "auto",
        on_error: str = "raise",
        check_crc: bool = True,
        readahead: bool = True,
        threads: int = 1,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        extensions = check_selection(extensions, is_valid_file)
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self._index = load_store_index(self.root, self.backend)
        self.classes = self._index.classes
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.loader = loader
        self.extensions = extensions
        self.loader_input = loader_input
        self._loader_call = LoaderCall(loader, loader_input)
        self.on_error = on_error
        self.readahead = readahead
        if threads < 1:
            raise ValueError(f"`threads` must be >= 1, got {threads}.")
        self.threads = threads
        self._prefix = self._index.files[0] if len(self._index.files) == 1 else os.path.dirname(self._index.files[0])
        self._refuse_unconverted(extensions, is_valid_file)
        self._rows = self._select_rows(extensions, is_valid_file, allow_empty)
        self.samples = SampleSequence(self._prefix, self._index, self._rows)
        self.targets = IntSequence(self._index.targets if self._rows is None else self._index.targets[self._rows])
        self._compression = [h["storage"].get("raw_compression") for h in self._index.headers]
        self._skipped = _shared_counter() if on_error != "raise" else None
        self._verified = self._verified_view = None
        self.check_crc = check_crc
        self._uniform_raw: bool | None = None  # decided on the first stacked batch
        self._all_raw = self._index.encodings == ["raw"] and len(self._index.files) == 1
        self._raw_shape = self._one_raw_shape()
        self._builtin_decode: tuple[Callable, bool] | None = None
        self._readers: list = []
        self._readers_pid: int | None = None

    @property
    def check_crc(self) -> bool:
        """Whether each sample's CRC-32 is checked on its first read; may be changed after construction."""
        return self._verified is not None

    @check_crc.setter
    def check_crc(self, value: bool) -> None:
        if value and self._verified is None:
            self._verified = _shared_flags(len(self._index))
            self._verified_view = np.frombuffer(self._verified, dtype=np.uint8)
        elif not value:
            self._verified = self._verified_view = None
        self._all_verified: int | None = None  # the pid of a process that saw every sample checked
        self._batches_checked = 0

    # -- which samples -------------------------------------------------------------------------

    def _refuse_unconverted(self, extensions, is_valid_file) -> None:
        """Refuse ``extensions`` that accept files the converter's selection left out of the store;
        warn about an ``is_valid_file`` that accepts some (it may be meant as a filter of images)."""
        selection = self._index.headers[0].get("selection")
        if not selection or not selection.get("not_selected"):
            return
        listed = selection.get("not_selected_paths", [])
        how = (
            f"extensions={tuple(selection['extensions'])}"
            if selection.get("extensions") is not None
            else f"is_valid_file={selection.get('is_valid_file')}"
        )
        advice = f"{self._prefix} was converted with {how}; convert the tree again with the same selection to read them."
        if is_valid_file is not None:
            missing = [path for path in listed if is_valid_file(os.path.join(self._prefix, path))]
            if missing:
                warnings.warn(
                    f"is_valid_file accepts {len(missing)} file(s) of the source tree that the store does not hold, "
                    f"such as {missing[0]!r}, so this dataset lists fewer samples than DatasetFolder would on the "
                    f"tree. {advice}",
                    UserWarning,
                    stacklevel=4,
                )
            return
        missing = [path for path in listed if has_file_allowed_extension(path, extensions)]
        # Beyond the listed paths only suffixes are known: an unlisted file whose suffix an
        # extension could match counts as a file the store may lack.
        def candidate(suffix: str) -> bool:
            return any(_may_end_with(suffix, e) for e in extensions)

        possible = sum(n for suffix, n in selection.get("not_selected_suffixes", {}).items() if candidate(suffix))
        listed_possible = sum(candidate(name_suffix(path)) for path in listed)
        if missing or possible > listed_possible:
            example = f"such as {missing[0]!r}" if missing else "with suffixes these extensions match"
            raise ValueError(
                f"extensions {extensions} accept {max(len(missing), 1)} or more file(s) of the source tree that the "
                f"store does not hold, {example}. {advice}"
            )

    def _select_rows(self, extensions, is_valid_file, allow_empty: bool) -> np.ndarray | None:
        """The stored rows DatasetFolder would list with this selection (None: all), and its empty-class rule."""
        index = self._index
        if is_valid_file is not None:
            paths = (os.path.join(self._prefix, path) for path in index.paths.to_pylist())
            keep = np.fromiter((bool(is_valid_file(path)) for path in paths), dtype=bool, count=len(index))
        elif self._converted_within(extensions):
            keep = None
        else:
            keep = _extension_mask(index.paths, tuple(extensions))
        rows = None if keep is None or keep.all() else np.flatnonzero(keep)
        targets = index.targets if rows is None else index.targets[rows]
        present = np.bincount(targets, minlength=len(self.classes)) > 0
        empty_classes = {c for c, has in zip(self.classes, present) if not has}
        if empty_classes and not allow_empty:
            msg = f"Found no valid file for the classes {', '.join(sorted(empty_classes))}. "
            if extensions is not None:
                msg += f"Supported extensions are: {', '.join(extensions)}"
            raise FileNotFoundError(msg)
        return rows

    def _one_raw_shape(self) -> tuple[int, int, int] | None:
        """``(height, width, channels)`` when every sample is raw with that shape, in one shard (else None)."""
        index = self._index
        if index.encodings != ["raw"] or len(index.files) != 1 or not len(index):
            return None
        shape = []
        for values in (index.heights, index.widths, index.channels):
            if values.min() != values.max():
                return None
            shape.append(int(values[0]))
        return tuple(shape)

    def _converted_within(self, extensions: tuple[str, ...]) -> bool:
        """Whether every stored path surely ends with one of ``extensions``: the converter selected
        by extensions that each end with one of them (so no path needs checking)."""
        converted = [h.get("selection", {}).get("extensions") for h in self._index.headers]
        return all(c is not None and all(e.endswith(extensions) for e in c) for c in converted)

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
        state["_readers"], state["_readers_pid"], state["_verified_view"], state["_all_verified"] = [], None, None, None
        # Shared memory may only cross into a process being started (DataLoader workers); an
        # ordinary pickle gets fresh memory: a new count, and every sample checked again.
        if multiprocessing.context.get_spawning_popen() is None:
            for name in ("_skipped", "_verified"):
                if state.get(name) is not None:
                    state[name] = "new"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("_skipped") == "new":
            state["_skipped"] = _shared_counter()
        if state.get("_verified") == "new":
            state["_verified"] = _shared_flags(len(state["_index"]))
        if state.get("_verified") is not None:
            state["_verified_view"] = np.frombuffer(state["_verified"], dtype=np.uint8)
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
        return int(index) if self._rows is None else int(self._rows[index])

    def relative_path(self, index: int) -> str:
        """The sample's path relative to the converted tree's root, e.g. ``"cat/001.jpg"``."""
        return self._index.paths[self._row(index)].as_py()

    def read_bytes(self, index: int) -> bytes:
        """The sample's stored bytes (the original file's bytes unless the store re-encoded them)."""
        return bytes(self._read(self._row(index)))

    def _read(self, row: int):
        index = self._index
        shard, local = index.locate(row) if len(index.files) > 1 else (0, row)
        data = self._reader(shard).read(local, int(index.offsets[row]), int(index.lengths[row]))
        verified = self._verified_view
        if verified is not None and not verified[row]:
            if zlib.crc32(data) != int(index.crc32[row]):
                raise ValueError(
                    f"checksum mismatch for {index.paths[row].as_py()} in {index.files[shard]}: "
                    "the stored bytes were damaged after conversion"
                )
            verified[row] = 1
        return data

    def _decodes_images(self) -> bool:
        """Whether the loader is one the dataset decodes for (remembered per loader: it is on the hot path)."""
        known = self._builtin_decode
        if known is None or known[0] is not self.loader:
            known = self._builtin_decode = (self.loader, is_builtin_image_loader(self.loader))
        return known[1]

    def _decode(self, data, row: int) -> Any:
        index = self._index
        if not self._decodes_images():
            call = self._loader_call
            if call.loader is not self.loader:  # the loader was replaced after construction
                call = self._loader_call = LoaderCall(self.loader, self.loader_input)
            return call(data, index.paths[row].as_py())
        if self._all_raw and self.decode == "tensor":
            # Raw images, per item: one copy is all the work. Tiny ones into a contiguous CHW
            # array (default_collate stacks those fastest); larger ones into HWC, returned as a
            # channels-last CHW view, which torch's uint8 antialiased resize takes about twice as fast.
            shape = self._raw_shape or (int(index.heights[row]), int(index.widths[row]), int(index.channels[row]))
            if shape[0] * shape[1] <= _TINY_PIXELS:
                return torch.from_numpy(raw_rgb(data, shape, self._compression[0], channels_first=True))
            return torch.from_numpy(raw_rgb(data, shape, self._compression[0])).permute(2, 0, 1)
        encoding = index.encodings[index.encoding_codes[row]]
        decoder = index.decoders[index.decoder_codes[row]]
        if encoding == "raw":
            shape = (int(index.heights[row]), int(index.widths[row]), int(index.channels[row]))
            compression = self._compression[index.locate(row)[0]]
        else:
            shape, compression = (0, 0, 0), None
        if self.decode == "pil":
            return decode_pil(data, encoding, self.decode_size, shape, compression, decoder)
        pixels = decode_array(data, encoding, self.decode_size, shape, compression, decoder)
        return array_to_tensor(pixels) if self.decode == "tensor" else pixels

    def _load(self, row: int) -> tuple[Any, Any]:
        return self._finish(self._read(row), row)

    def _finish(self, data, row: int) -> tuple[Any, Any]:
        """A read sample's ``(sample, target)``: load (decode), then the transforms."""
        sample = self._decode(data, row)
        target = int(self._index.targets[row])
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """The ``(sample, target)`` pair, as ``DatasetFolder`` returns it for the same index."""
        return self._load_or_bad(index, self._row(index))

    def _rows_of(self, indices) -> np.ndarray:
        """The rows of many indices at once (``_row`` for a whole batch, without a Python loop)."""
        n = len(self)
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(positions) and positions.min() < 0:
            positions = np.where(positions < 0, positions + n, positions)
        if len(positions) and (positions.min() < 0 or positions.max() >= n):
            index = indices[int(np.argmax((positions < 0) | (positions >= n)))]
            raise IndexError(f"sample index {index} is out of range for {type(self).__name__} with {n} samples")
        return positions if self._rows is None else self._rows[positions]

    def __getitems__(self, indices: list[int]) -> list[Any] | StackedBatch:
        """A whole DataLoader batch in one call: one gather for same-size raw samples, else each in turn."""
        if type(self).__getitem__ is not StoreDatasetFolder.__getitem__:
            # A subclass decides what an item is (torchvision's wrap_dataset_for_transforms_v2 makes
            # one, with its own transforms): each item through its __getitem__.
            return [self[i] for i in np.asarray(indices).tolist()]
        rows = self._rows_of(indices)
        shape = self._stack_shape(rows)
        if shape is not None:
            try:
                return self._stacked(rows, shape)
            except Exception as exc:  # per-sample loading applies the on_error policy to each
                logger.debug("torchpack: whole-batch read failed (%s: %s); reading sample by sample", type(exc).__name__, exc)
        if isinstance(indices, np.ndarray):  # from ArrayBatchSampler
            indices = indices.tolist()
        if self.threads > 1 and len(rows) > 1:
            return self._load_in_threads(indices, rows)
        return [self._load_or_bad(index, row) for index, row in zip(indices, rows.tolist())]

    def _load_or_bad(self, index: int, row: int) -> Any:
        try:
            return self._load(row)
        except Exception as exc:
            return self._bad_sample(index, row, exc)

    def _load_in_threads(self, indices, rows: np.ndarray) -> list[Any]:
        """Decode and transform a batch's samples in ``threads`` threads of this process.

        Reads and checksums stay in the calling thread (an LMDB read transaction belongs to
        one thread); simplejpeg, Pillow and torch release the GIL while they work, so the
        threads decode and resize at the same time. Bad samples get the policy afterwards,
        in the calling thread, as :meth:`__getitem__` would give it.
        """

        def read(row: int):
            try:
                return self._read(row)
            except Exception as exc:
                return exc

        def finish(row: int, data):
            if isinstance(data, Exception):
                return data
            try:
                return self._finish(data, row)
            except Exception as exc:
                return exc

        row_list = rows.tolist()
        done = list(_thread_pool(self.threads).map(finish, row_list, [read(row) for row in row_list]))
        return [
            self._bad_sample(index, row, result) if isinstance(result, Exception) else result
            for index, row, result in zip(indices, row_list, done)
        ]

    def _stack_shape(self, rows: np.ndarray) -> tuple[int, int, int] | None:
        """``(height, width, channels)`` of raw samples ``rows`` that read as one tensor (channels 0: some
        gray, some RGB), else None."""
        index = self._index
        if not (
            len(rows)
            and self._all_raw
            and self.decode == "tensor"
            and self.transform is None
            and self.target_transform is None
            and self._decodes_images()
        ):
            return None
        if self._raw_shape is not None:
            return self._raw_shape
        height, width = int(index.heights[rows[0]]), int(index.widths[rows[0]])
        if not (np.all(index.heights[rows] == height) and np.all(index.widths[rows] == width)):
            return None
        channels = index.channels[rows]
        return height, width, int(channels[0]) if np.all(channels == channels[0]) else 0

    def _stacked(self, rows: np.ndarray, shape: tuple[int, int, int]) -> StackedBatch:
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
        return StackedBatch(images, torch.from_numpy(self._index.targets[rows].astype(np.int64)))

    def _gather_mixed(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Gray and RGB samples of one size into ``out`` (N, 3, H, W): each kind in one assignment."""
        index = self._index
        _, _, h, w = out.shape
        chunks = self._reader(0).read_batch(rows, index.offsets[rows], index.lengths[rows])
        self._check_once(rows, lambda todo: (zlib.crc32(chunks[i]) for i in todo.tolist()))
        channels = index.channels[rows]
        for c in (1, 3):
            positions = np.flatnonzero(channels == c)
            if not len(positions):
                continue
            parts = [chunks[i] for i in positions.tolist()]
            if self._compression[0] == "lz4":
                parts = list(map(functools.partial(lz4.block.decompress, uncompressed_size=h * w * c), parts))
            pixels = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(len(positions), h, w, c)
            out[positions] = pixels.transpose(0, 3, 1, 2)  # broadcasts one gray channel into three

    def _gather(self, rows: np.ndarray, out: np.ndarray, copies: int) -> None:
        """The stored pixels of each of ``rows``, ``copies`` times over, into the rows of ``out``.

        Checks the CRC-32 of samples not checked before. Whole-array calls (np.take, map over
        C functions), not Python loops: the per-sample cost is what this path is for.
        """
        index = self._index
        table = self._sample_table(out.shape[1])
        if table is not None:
            # One pass straight from the map. mode="clip" (rows are already checked): the
            # default mode="raise" buffers `out` and is about 14x slower.
            np.take(table, np.repeat(rows, copies) if copies > 1 else rows, axis=0, out=out, mode="clip")
            self._check_once(rows, lambda todo: map(zlib.crc32, out[todo * copies]))
            return
        chunks = self._reader(0).read_batch(rows, index.offsets[rows], index.lengths[rows])
        self._check_once(rows, lambda todo: (zlib.crc32(chunks[i]) for i in todo.tolist()))
        if self._compression[0] == "lz4":
            chunks = list(map(functools.partial(lz4.block.decompress, uncompressed_size=out.shape[1]), chunks))
        pixels = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(len(rows), 1, out.shape[1])
        out.reshape(len(rows), copies, out.shape[1])[...] = pixels

    def _check_once(self, rows: np.ndarray, checksums: Callable[[np.ndarray], Any]) -> None:
        """Compare ``checksums(positions)`` of the batch positions whose rows were never checked, then remember them."""
        verified = self._verified_view
        if verified is None or self._all_verified == os.getpid():
            return
        todo = np.flatnonzero(verified[rows] == 0)
        if not len(todo):
            # Every sample checked? Then later batches skip even this lookup. Asked after 1, 2,
            # 4, ... batches with nothing to check: a dataset read only in part (a Subset, one
            # rank's share) is never all checked, and the scan is over every sample.
            self._batches_checked += 1
            if self._batches_checked & (self._batches_checked - 1) == 0 and verified.all():
                self._all_verified = os.getpid()
            return
        if list(checksums(todo)) != self._index.crc32[rows[todo]].tolist():
            raise ValueError("checksum mismatch in batch: stored bytes were damaged after conversion")
        verified[rows[todo]] = 1

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
            f"Sample {index} ({path}) of {self._prefix} could not be loaded, nor any of the {tries} samples after it."
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
        """The store, storage, decode and error policy, for ``repr`` in torchvision's style."""
        lines = [f"Store: {self._index.backend}, {len(self._index.files)} file(s), {len(self.classes)} classes"]
        lines.append(f"Storage: {self.header['storage']['mode']}")
        if self._decodes_images():
            decode = self.decode
            if self.decode_size is not None:
                decode += f", JPEG scaled to cover {self.decode_size}"
        else:
            decode = f"loader {getattr(self.loader, '__qualname__', self.loader)!s}"
        lines.append(f"Decode: {decode}")
        lines.append(f"On error: {self.on_error}")
        return "\n".join(lines)


class StoreImageFolder(StoreDatasetFolder, ImageFolder):
    """An ImageFolder whose images come from a torchpack store: ImageFolder's arguments, attributes and output.

    Args:
        root: the store file; or the shards of one, as a folder, a glob pattern or a list.
        transform, target_transform, is_valid_file, allow_empty: as in ImageFolder.
        loader: torchvision's ``default_loader`` (the default) or ``pil_loader``, or
            ``torchpack.bytes_loader``: the dataset decodes, with ImageFolder's pixels, as
            ``decode`` and ``decode_size`` say. Any other loader is called as
            :class:`StoreDatasetFolder` calls it.
        decode: ``"pil"`` (RGB ``PIL.Image``, ImageFolder's output), ``"tensor"`` (CHW uint8
            tensor) or ``"numpy"`` (HWC uint8 array); the same pixels in each.
        decode_size: decode JPEGs at the smallest of 1/2, 1/4, 1/8 scale that still covers this
            short side (int) or ``(height, width)``: much faster before ``Resize``/``RandomResizedCrop``,
            and other pixels than a full decode (libjpeg's DCT scaling).
        loader_input, on_error, check_crc, readahead, threads: see :class:`StoreDatasetFolder`.
    """

    def __init__(
        self,
        root: StoreRoot,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        loader: Callable[[Any], Any] = default_loader,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        decode: str = "pil",
        decode_size: DecodeSize = None,
        loader_input: str = "auto",
        on_error: str = "raise",
        check_crc: bool = True,
        readahead: bool = True,
        threads: int = 1,
    ) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"`decode` must be one of {DECODE_MODES}, got {decode!r}.")
        _check_decode_size(decode_size)
        self.decode = decode
        self.decode_size = decode_size
        super().__init__(
            root,
            loader,
            IMG_EXTENSIONS if is_valid_file is None else None,
            transform,
            target_transform,
            is_valid_file,
            allow_empty,
            loader_input=loader_input,
            on_error=on_error,
            check_crc=check_crc,
            readahead=readahead,
            threads=threads,
        )
        self.imgs = self.samples


def _check_decode_size(decode_size: Any) -> None:
    def positive(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and n > 0

    if decode_size is None or positive(decode_size):
        return
    if isinstance(decode_size, (tuple, list)) and len(decode_size) == 2 and all(map(positive, decode_size)):
        return
    raise ValueError(f"`decode_size` must be a positive int (the short side) or (height, width), got {decode_size!r}.")


class LMDBDatasetFolder(StoreDatasetFolder):
    """DatasetFolder over an LMDB store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.DatasetFolder("data/train", loader=np.load, extensions=(".npy",))
        dataset = torchpack.LMDBDatasetFolder("data/train.lmdb", loader=np.load, extensions=(".npy",))

    Arguments and attributes are DatasetFolder's; see :class:`StoreDatasetFolder` for the extras.
    """

    backend = "lmdb"


class HDF5DatasetFolder(StoreDatasetFolder):
    """DatasetFolder over an HDF5 store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.DatasetFolder("data/train", loader=np.load, extensions=(".npy",))
        dataset = torchpack.HDF5DatasetFolder("data/train.h5", loader=np.load, extensions=(".npy",))

    Arguments and attributes are DatasetFolder's; see :class:`StoreDatasetFolder` for the extras.
    """

    backend = "hdf5"


class LMDBImageFolder(StoreImageFolder, LMDBDatasetFolder):
    """ImageFolder over an LMDB store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
        dataset = torchpack.LMDBImageFolder("data/train.lmdb", transform=tf)

    Arguments and attributes are ImageFolder's; see :class:`StoreImageFolder` for the extras.
    """


class HDF5ImageFolder(StoreImageFolder, HDF5DatasetFolder):
    """ImageFolder over an HDF5 store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
        dataset = torchpack.HDF5ImageFolder("data/train.h5", transform=tf)

    Arguments and attributes are ImageFolder's; see :class:`StoreImageFolder` for the extras.
    """
