"""``StoreDatasetFolder``: a DatasetFolder over a store, composed of one part per job.

Which rows (:mod:`torchpack.selection`), this process's readers (:mod:`torchpack.handles`),
checked-once CRC-32s (:mod:`torchpack.integrity`), image decoding (:mod:`torchpack.image_decode`),
whole batches of raw samples (:mod:`torchpack.raw_batch`) and the bad-sample policy
(:mod:`torchpack.bad_samples`). The class reads, decodes and transforms; the parts decide.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, Callable

import numpy as np
from torchvision.datasets import DatasetFolder
from torchvision.datasets.vision import VisionDataset

from torchpack.backends import BackendMismatchError
from torchpack.bad_samples import ON_ERROR, BadSamplePolicy, TransformFailed
from torchpack.batch import StackedBatch
from torchpack.decode import DecodeSize
from torchpack.handles import ShardHandles
from torchpack.image_decode import ImageDecode
from torchpack.integrity import ChecksumGuard
from torchpack.loaders import LoaderCall
from torchpack.raw_batch import RawBatchGather
from torchpack.scan import check_selection
from torchpack.selection import Selection, refuse_unconverted, select_rows
from torchpack.shard_cache import ShardCache
from torchpack.store import StoreIndex, StoreRoot, load_store_index
from torchpack.threads import read_then_finish_in_threads
from torchpack.views import IntSequence, SampleSequence

__all__ = ["StoreDatasetFolder"]

logger = logging.getLogger("torchpack")


class StoreDatasetFolder(DatasetFolder, metaclass=abc.ABCMeta):
    """A DatasetFolder whose samples come from a torchpack store instead of a directory tree.

    It subclasses ``DatasetFolder`` for ``isinstance`` checks but never scans a folder: the
    store's index gives the classes and samples, as arrays.

    Args:
        root: the store file; or the shards of one, as a folder, a glob pattern or a list; or a URL
            of a store in object storage (``s3://bucket/train/``), read through the node's ``cache``.
        loader: called with a binary file object over one sample's stored bytes, whose ``name``
            is the sample's path relative to the converted tree (``np.load``, ``torch.load`` with
            ``weights_only=True``, ``soundfile.read`` and ``PIL.Image.open`` take it as it is).
            torchvision's ``pil_loader`` and ``default_loader`` are not called: the dataset decodes
            for them, with the same pixels. A loader that insists on a path gets one (``loader_input``).
        extensions, is_valid_file: keep the samples DatasetFolder would keep (exactly one of them;
            ``is_valid_file`` gets ``os.path.join(root, relative_path)``).
        transform, target_transform: as in DatasetFolder, read at call time.
        allow_empty: allow classes with no samples, as in DatasetFolder.
        loader_input: ``"auto"`` (a file object; a loader that fails on it and works on a path gets a
            path to a temporary copy of each sample from then on, with a warning), ``"file"`` or ``"path"``.
        on_error: a sample that cannot be read, loaded or transformed: ``"raise"`` (a
            :class:`BadSampleError` naming it), ``"skip"`` (a :class:`BadSample` marker for
            :class:`SkipBadCollate` to drop) or ``"replace"`` (the next good sample instead).
        check_crc: check each sample's CRC-32 on its first read by this dataset, in any of its processes.
        readahead: let the OS read ahead; turn off for random access to stores larger than RAM.
        threads: decode and transform each DataLoader batch (``__getitems__``) in this many threads,
            for loading in the training process on spare cores (thread-safe transforms: torchvision's).
        image_decode: how torchvision's own image loaders are served (default: PIL images, exactly
            ImageFolder's); :class:`StoreImageFolder` makes it from ``decode``, ``decode_size`` and ``decode_crop``.
        storage_options, cache: for a URL: fsspec's options (credentials, ``endpoint_url``), and the
            node's :class:`torchpack.ShardCache` (default: ``$TORCHPACK_CACHE``, no limit).

    Raises:
        FileNotFoundError: no store at ``root``, or a class has no sample and ``allow_empty`` is False.
        InvalidStoreError: ``root`` is not a store of this backend, or is damaged (``UnsupportedVersionError``:
            written by a newer torchpack format).
        ValueError: a bad argument, or the selection accepts files the converter left out.
    """

    #: The backend this class reads; None: whichever the store's files are.
    backend: str | None = None

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
        image_decode: ImageDecode | None = None,
        storage_options: dict[str, Any] | None = None,
        cache: ShardCache | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        if threads < 1:
            raise ValueError(f"`threads` must be >= 1, got {threads}.")
        extensions = check_selection(extensions, is_valid_file)
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self._index = index = _load_index(type(self), self.root, storage_options, cache)
        self.classes = index.classes
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.loader, self.extensions, self.loader_input = loader, extensions, loader_input
        self._loader_call = LoaderCall(loader, loader_input)
        self.readahead, self.threads = readahead, threads
        refuse_unconverted(index, extensions, is_valid_file)
        rows = select_rows(index, self.classes, extensions, is_valid_file, allow_empty)
        self._selection = Selection(rows, len(index), type(self).__name__)
        self.samples = SampleSequence(index.prefix, index, rows)
        self.targets = IntSequence(index.targets if rows is None else index.targets[rows])
        self._handles = ShardHandles(index.files, index.backend, index.identities, index.source, readahead=readahead)
        self._guard = ChecksumGuard(index.crc32, check_crc)
        self._policy = BadSamplePolicy(on_error, index.prefix)
        self._image = image_decode or ImageDecode()
        self._raw_batches = RawBatchGather(index, self._handles, self._guard) if index.all_raw else None

    @property
    def check_crc(self) -> bool:
        """Whether each sample's CRC-32 is checked on its first read; may be changed after construction."""
        return self._guard.enabled

    @check_crc.setter
    def check_crc(self, value: bool) -> None:
        self._guard.enabled = value

    @property
    def on_error(self) -> str:
        """The bad-sample policy: ``"raise"``, ``"skip"`` or ``"replace"``."""
        return self._policy.on_error

    @property
    def decode(self) -> str:
        """How the built-in image decode returns images: ``"pil"``, ``"tensor"`` or ``"numpy"``."""
        return self._image.mode

    @property
    def decode_size(self) -> DecodeSize:
        """The short side (or size) JPEGs are decoded to cover, or None for a full decode."""
        return self._image.size

    @property
    def header(self) -> dict[str, Any]:
        """The store's header (the first shard's, for a sharded store)."""
        return self._index.headers[0]

    @property
    def skipped_count(self) -> int:
        """Bad samples skipped or replaced so far, summed over all DataLoader worker processes."""
        return self._policy.skipped_count

    def reset_skipped_count(self) -> None:
        """Set :attr:`skipped_count` back to zero (say, at the start of an epoch)."""
        self._policy.reset_skipped_count()

    def open_handles(self) -> None:
        """Open this process's handles now (they otherwise open on first access)."""
        self._handles.open_all()

    def index_shards(self) -> np.ndarray:
        """The shard each sample is stored in, by dataset index (for shard-aware samplers)."""
        rows = self._selection.rows if self._selection.rows is not None else np.arange(len(self._index))
        return np.searchsorted(self._index.shard_starts, rows, side="right") - 1

    def prefetch_shards(self, shards: list[int]) -> None:
        """Start downloading these shards of a store in object storage into the node's cache (local stores: nothing)."""
        if self._index.source is not None:
            self._index.source.prefetch(shards)

    def plan_remote_reads(self, open_shards: int, ahead: int) -> None:
        """Each process keeps ``open_shards`` shards open (pinned in the node's cache), ``ahead`` more are
        prefetched; raises :class:`CacheFullError` now if the cache's limit cannot hold that many."""
        self._handles.max_open = max(1, open_shards)
        if self._index.source is not None:
            self._index.source.require_room(open_shards + ahead)

    # -- samples --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._selection)

    def relative_path(self, index: int) -> str:
        """The sample's path relative to the converted tree's root, e.g. ``"cat/001.jpg"``."""
        return self._index.path(self._selection.row(index))

    def read_bytes(self, index: int) -> bytes:
        """The sample's stored bytes (the original file's bytes unless the store re-encoded them)."""
        return bytes(self._read(self._selection.row(index)))

    def _read(self, row: int):
        index = self._index
        shard, local = index.locate(row)
        data = self._handles.reader(shard).read(local, int(index.offsets[row]), int(index.lengths[row]))
        if not self._guard.passes(row, data):
            raise ValueError(
                f"checksum mismatch for {index.path(row)} in {index.files[shard]}: "
                "the stored bytes were damaged after conversion"
            )
        return data

    def _loader(self) -> LoaderCall:
        if self._loader_call.loader is not self.loader:  # the loader was replaced after construction
            self._loader_call = LoaderCall(self.loader, self.loader_input)
        return self._loader_call

    def _decode(self, data, row: int) -> Any:
        call = self._loader()
        return self._image(data, self._index, row) if call.builtin_image else call(data, self._index.path(row))

    def _finish(self, data, row: int) -> tuple[Any, Any]:
        """A read sample's ``(sample, target)``: load (decode), then the transforms."""
        sample, target = self._decode(data, row), int(self._index.targets[row])
        try:
            if self.transform is not None:
                sample = self.transform(sample)
            if self.target_transform is not None:
                target = self.target_transform(target)
        except Exception as exc:
            raise TransformFailed(exc) from exc
        return sample, target

    def _load(self, row: int) -> tuple[Any, Any]:
        return self._finish(self._read(row), row)

    def _bad(self, index: int, row: int, exc: Exception) -> Any:
        load = lambda i: self._load(self._selection.row(i))  # noqa: E731
        return self._policy.bad_sample(index, self._index.path(row), exc, len(self), load)

    def _load_or_bad(self, index: int, row: int) -> Any:
        try:
            sample = self._load(row)
        except Exception as exc:
            return self._bad(index, row, exc)
        self._policy.seen_good = True
        return sample

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """The ``(sample, target)`` pair, as ``DatasetFolder`` returns it for the same index."""
        return self._load_or_bad(index, self._selection.row(index))

    def __getitems__(self, indices: list[int]) -> list[Any] | StackedBatch:
        """A whole DataLoader batch in one call: one gather for same-size raw samples, else each in turn."""
        if type(self).__getitem__ is not StoreDatasetFolder.__getitem__:
            # A subclass decides what an item is (torchvision's wrap_dataset_for_transforms_v2 makes
            # one, with its own transforms): each item through its __getitem__.
            return [self[i] for i in np.asarray(indices).tolist()]
        rows = self._selection.rows_of(indices)
        shape = self._stackable(rows)
        if shape is not None:
            try:
                return self._raw_batches.read(rows, shape)
            except Exception as exc:  # per-sample loading applies the on_error policy to each
                logger.debug("torchpack: whole-batch read failed (%s: %s); reading sample by sample", type(exc).__name__, exc)
        indices = indices.tolist() if isinstance(indices, np.ndarray) else indices  # from ArrayBatchSampler
        if self.threads > 1 and len(rows) > 1:
            return self._load_in_threads(indices, rows.tolist())
        return [self._load_or_bad(index, row) for index, row in zip(indices, rows.tolist())]

    def _stackable(self, rows: np.ndarray) -> tuple[int, int, int] | None:
        """The shape of one tensor that rows ``rows`` read as, when the output is untransformed raw pixels."""
        plain = self._image.mode == "tensor" and self._image.crop is None
        plain = plain and self.transform is None and self.target_transform is None
        if self._raw_batches is None or not plain or not self._loader().builtin_image:
            return None
        return self._raw_batches.shape(rows)

    def _load_in_threads(self, indices: list[int], rows: list[int]) -> list[Any]:
        """A batch read here, decoded and transformed in ``threads`` threads; bad samples get the policy here."""
        done = read_then_finish_in_threads(self.threads, rows, self._read, self._finish)
        if not any(isinstance(result, Exception) for result in done):
            self._policy.seen_good = True
            return done
        return [self._bad(i, row, result) if isinstance(result, Exception) else result for i, row, result in zip(indices, rows, done)]

    def extra_repr(self) -> str:
        """The store, storage, decode and error policy, for ``repr`` in torchvision's style."""
        index = self._index
        decode = self._image.describe() if self._loader().builtin_image else f"loader {getattr(self.loader, '__qualname__', self.loader)!s}"
        return (
            f"Store: {index.backend}, {len(index.files)} file(s), {len(self.classes)} classes\n"
            f"Storage: {self.header['storage']['mode']}\nDecode: {decode}\nOn error: {self.on_error}"
        )


def _load_index(cls: type[StoreDatasetFolder], root: StoreRoot, storage_options: Any, cache: Any) -> StoreIndex:
    """The index of the store at ``root``, for a dataset of class ``cls``; a store of another
    backend is refused with the name of the class that reads it."""
    try:
        return load_store_index(root, cls.backend, storage_options, cache)
    except BackendMismatchError as exc:
        generic = _generic(cls)
        siblings = [c.__name__ for c in _subclasses(generic) if c.backend == exc.found and _generic(c) is generic]
        advice = f"Open it with {siblings[0]}, or" if siblings else "Open it with"
        raise BackendMismatchError(f"{exc} {advice} {generic.__name__}, which opens any backend.", exc.found) from None


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _generic(cls: type) -> type:
    """The backend-independent class of ``cls`` (StoreImageFolder, or StoreDatasetFolder): the first up its line with no backend."""
    return next(c for c in cls.__mro__ if issubclass(c, StoreDatasetFolder) and c.backend is None)
