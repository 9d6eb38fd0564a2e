"""``convert()``: scan a DatasetFolder tree, read and check its files in a worker pool, write a store.

Crash safety: everything is written into ``<dst>.partial/`` (a journal of committed samples
plus the backend's staged data) and the finished store is renamed to ``dst`` only when it is
whole and synced. ``resume=True`` continues from the journal's last commit.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.reduction import ForkingPickler
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

from torchpack.backends import backend_for_destination, writer_class
from torchpack.format import FORMAT_NAME, FORMAT_VERSION, INDEX_SCHEMA, encode_header, encode_index
from torchpack.ingest import RAW_COMPRESSIONS, STORAGE_MODES, IngestOptions, Ingested, ingest_files
from torchpack.scan import MAX_NOT_SELECTED_LISTED, ScannedTree, check_selection, scan_tree

__all__ = ["ConvertResult", "convert", "shard_paths"]

_PLAN = "plan.json"
_JOURNAL = "journal.jsonl"
_COMMIT_BYTES = 64 << 20


@dataclass
class ConvertResult:
    """What a conversion did."""

    stores: list[str]
    num_samples: int
    num_classes: int
    bad_files: list[dict[str, str]]
    bytes_in: int  # the source files' sizes
    bytes_out: int  # the stores' size as allocated on disk
    seconds: float
    resumed_from: int = 0

    @property
    def images_per_second(self) -> float:
        """Files processed (stored or reported bad) per second of this run, resumed ones not counted."""
        return (self.num_samples + len(self.bad_files) - self.resumed_from) / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data (what ``torchpack convert --json`` prints)."""
        return {**asdict(self), "images_per_second": self.images_per_second}


@dataclass
class _Shard:
    index: int
    count: int
    start: int  # scan positions [start, stop)
    stop: int
    path: str


@dataclass
class _Progress:
    """The journal's state: what is durably in the staged store."""

    next_position: int
    rows: list[tuple] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    data_size: int = 0


def shard_paths(dst: str | os.PathLike, num_shards: int) -> list[str]:
    """The file names of ``num_shards`` shards of ``dst``: ``name-00000-of-00004.ext``, ... (or ``dst`` alone)."""
    dst = os.fspath(dst)
    if num_shards == 1:
        return [dst]
    stem, ext = os.path.splitext(dst)
    return [f"{stem}-{i:05d}-of-{num_shards:05d}{ext}" for i in range(num_shards)]


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    backend: str | None = None,
    extensions: tuple[str, ...] | str | None = None,
    is_valid_file: Callable[[str], bool] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    check: bool | Callable[[str], object] | None = None,
    storage: str = "encoded",
    short_side: int | None = None,
    quality: int = 90,
    raw_compression: str = "lz4",
    num_shards: int | None = None,
    shard_size: int | None = None,
    shard_index: int | None = None,
    progress: bool = False,
    commit_every: int = 1000,
    initial_map_size: int = 1 << 30,
) -> ConvertResult:
    """Convert the DatasetFolder tree at ``src`` into one store (or shards) at ``dst``.

    The tree is listed exactly as ``torchvision.datasets.DatasetFolder`` lists it with the
    same ``extensions`` or ``is_valid_file`` (neither: ImageFolder's ``IMG_EXTENSIONS``). Each
    file's bytes are stored untouched by default. In an ImageFolder conversion (no
    ``extensions``), every image is decoded once first, as the readers will decode it; images
    ImageFolder cannot load are left out and listed in the store header (``bad_files``).

    Args:
        src: root of the tree, ``src/<class>/**/<file>``.
        dst: the store file to write; its extension (``.lmdb``, ``.h5``/``.hdf5``) picks the
            backend unless ``backend`` is given.
        backend: ``"lmdb"`` or ``"hdf5"``.
        extensions: convert the files with these extensions (``(".wav", ".flac")``), as DatasetFolder
            lists them.
        is_valid_file: or convert the files this accepts (called with each file's path).
        workers: processes that read and check files (default: one per CPU; 0 reads in this process).
        overwrite: replace an existing store at ``dst``.
        resume: continue an interrupted conversion of the same tree into ``dst``.
        check: ``None`` (the default): decode every image (a file with one of ImageFolder's
            extensions, or whose content starts like a JPEG, PNG, GIF, BMP, TIFF or WebP) and
            leave out those that fail, unless ``extensions`` is given: a DatasetFolder tree's files
            are its loader's business. ``True``: decode images in either case. ``False``: trust
            the data. A callable is also called with each file's path in the worker processes (it
            must be picklable: a module-level function), and files for which it raises are left
            out and reported, as bad images are.
        storage: ``"encoded"`` (the files' bytes), ``"reencode"`` (JPEG at ``quality``, short side
            capped at ``short_side``) or ``"raw"`` (decoded uint8 RGB pixels, for tiny images).
        short_side: cap on the short side for ``"reencode"`` and ``"raw"``.
        quality: JPEG quality for ``"reencode"``.
        raw_compression: ``"lz4"`` or ``"none"`` for ``"raw"``.
        num_shards: write this many shards, ``dst``'s name plus ``-00000-of-0000N``.
        shard_size: or write shards of at most this many files each.
        shard_index: write only this shard (one job of a parallel conversion); needs
            ``num_shards`` or ``shard_size``.
        progress: show a progress bar.
        commit_every: samples per durable commit (a crash loses at most this many).
        initial_map_size: LMDB's first map size; it doubles whenever it is full.

    Returns:
        A :class:`ConvertResult`.

    Raises:
        FileNotFoundError: ``src`` is missing or has no class folder, or ``dst``'s folder is missing.
        FileExistsError: ``dst`` exists and ``overwrite`` is False, or an interrupted conversion
            is in the way and ``resume`` is False.
        ValueError: an argument is out of range, or (on resume) the tree or options changed.
        RuntimeError: a worker process died.
        OSError: writing failed (a full disk, say); the staged work is kept for ``resume``.
    """
    started = time.perf_counter()
    backend = backend_for_destination(dst, backend)
    check_images = check if isinstance(check, bool) else extensions is None
    if extensions is None and is_valid_file is None:
        extensions = IMG_EXTENSIONS
    extensions = check_selection(extensions, is_valid_file)
    options = _ingest_options(storage, check_images, check if callable(check) else None, short_side, quality, raw_compression)
    dst = os.path.abspath(os.fspath(dst))
    _check_destination_folder(dst)
    if workers is not None and workers < 0:
        raise ValueError(f"`workers` must be >= 0, got {workers}.")
    if commit_every < 1:
        raise ValueError(f"`commit_every` must be >= 1, got {commit_every}.")
    if options.check_file is not None and workers != 0:
        try:
            ForkingPickler.dumps(options.check_file)  # as the pool will send it; nothing here is ever unpickled
        except Exception as exc:
            raise ValueError(
                f"`check` must be picklable to run in the worker processes (a module-level function, not a "
                f"lambda or a local function), got {options.check_file!r}: {exc}"
            ) from exc
    if not os.path.isdir(src):
        scan_tree(src, extensions, is_valid_file)  # raises the error that names the missing or wrong source
    with _Pool(workers) as pool:  # its workers start up while the tree is scanned
        tree = scan_tree(src, extensions, is_valid_file)
        shards = _plan_shards(tree, dst, num_shards, shard_size, shard_index)
        for shard in shards:
            if os.path.exists(shard.path) and not overwrite:
                raise FileExistsError(f"{shard.path} already exists; pass overwrite=True (--overwrite) to replace it.")
            if os.path.isdir(shard.path):
                raise IsADirectoryError(f"{shard.path} is a folder; a store is a single file.")
        # What a resumed conversion must share with the interrupted one. Not the files the
        # selection turned down: they may change, and the header lists them as they are now.
        plan = {
            "fingerprint": tree.fingerprint,
            "backend": backend,
            "options": {**asdict(dataclasses.replace(options, check_file=None)), "check_file": _name(options.check_file)},
            "selection": {"extensions": tree.extensions, "is_valid_file": tree.is_valid_file},
            "format_version": FORMAT_VERSION,
        }
        plan = json.loads(json.dumps(plan))  # as the staged copy reads back (tuples become lists)
        result = ConvertResult([], 0, len(tree.classes), [], 0, 0, 0.0)
        total = sum(shard.stop - shard.start for shard in shards)
        with tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for shard in shards:
                _convert_shard(tree, shard, backend, options, plan, pool, bar, resume, commit_every, initial_map_size, result)
    result.seconds = time.perf_counter() - started
    return result


def _name(function: Callable | None) -> str | None:
    if function is None:
        return None
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


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


def _ingest_options(
    storage: str,
    check_images: bool,
    check_file: Callable[[str], object] | None,
    short_side: int | None,
    quality: int,
    raw_compression: str,
) -> IngestOptions:
    if storage not in STORAGE_MODES:
        raise ValueError(f"`storage` must be one of {STORAGE_MODES}, got {storage!r}.")
    if raw_compression not in RAW_COMPRESSIONS:
        raise ValueError(f"`raw_compression` must be one of {RAW_COMPRESSIONS}, got {raw_compression!r}.")
    if short_side is not None and short_side < 1:
        raise ValueError(f"`short_side` must be a positive number of pixels, got {short_side}.")
    if not 1 <= quality <= 100:
        raise ValueError(f"`quality` must be between 1 and 100, got {quality}.")
    if storage == "encoded" and short_side is not None:
        raise ValueError("`short_side` needs storage='reencode' or storage='raw' (encoded files are stored untouched).")
    return IngestOptions(
        storage=storage,
        check=check_images or storage != "encoded",
        check_file=check_file,
        image_extensions=IMG_EXTENSIONS,
        short_side=short_side,
        quality=quality,
        raw_compression=raw_compression,
    )


def _check_destination_folder(dst: str) -> None:
    folder = os.path.dirname(dst)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The destination folder {folder} does not exist.")


def _plan_shards(
    tree: ScannedTree, dst: str, num_shards: int | None, shard_size: int | None, shard_index: int | None
) -> list[_Shard]:
    n = len(tree)
    if num_shards is not None and shard_size is not None:
        raise ValueError("Pass `num_shards` or `shard_size`, not both.")
    if shard_size is not None:
        if shard_size < 1:
            raise ValueError(f"`shard_size` must be >= 1, got {shard_size}.")
        num_shards = max(1, -(-n // shard_size))
    elif num_shards is None:
        if shard_index is not None:
            raise ValueError("`shard_index` needs `num_shards` or `shard_size`.")
        num_shards = 1
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1, got {num_shards}.")
    bounds = [round(i * n / num_shards) for i in range(num_shards + 1)]
    if shard_size is not None:
        bounds = [min(i * shard_size, n) for i in range(num_shards + 1)]
    paths = shard_paths(dst, num_shards)
    shards = [_Shard(i, num_shards, bounds[i], bounds[i + 1], paths[i]) for i in range(num_shards)]
    if shard_index is not None:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"`shard_index` must be in [0, {num_shards}), got {shard_index}.")
        shards = [shards[shard_index]]
    return shards


class _Pool:
    """Reads chunks of files in worker processes (or inline), yielding results in order."""

    def __init__(self, workers: int | None) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Pool:
        if self.workers > 0:
            # forkserver, not fork: the caller may be a training script with threads and CUDA.
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method))
            for _ in range(self.workers):  # start the workers (and their imports) now, not on the first chunk
                self._executor.submit(ingest_files, [], IngestOptions())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def map(self, chunks: Iterator[list[str]], options: IngestOptions) -> Iterator[list[Ingested]]:
        if self._executor is None:
            for chunk in chunks:
                yield ingest_files(chunk, options)
            return
        window: collections.deque[tuple[Future, list[str]]] = collections.deque()
        for chunk in chunks:
            try:
                window.append((self._executor.submit(ingest_files, chunk, options), chunk))
            except BrokenProcessPool as exc:  # a worker died before its chunk's result was asked for
                raise _worker_died(window[0][1] if window else chunk) from exc
            if len(window) >= 4 * self.workers:
                yield self._result(*window.popleft())
        while window:
            yield self._result(*window.popleft())

    @staticmethod
    def _result(future: Future, chunk: list[str]) -> list[Ingested]:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise _worker_died(chunk) from exc


def _worker_died(chunk: list[str]) -> RuntimeError:
    return RuntimeError(
        f"A converter worker process died (killed, or out of memory) while reading {chunk[0]} "
        f"or the files after it. The work committed so far is kept: "
        "run again with resume=True (--resume), with fewer workers if memory is short."
    )


def _convert_shard(
    tree: ScannedTree,
    shard: _Shard,
    backend: str,
    options: IngestOptions,
    plan: dict[str, Any],
    pool: _Pool,
    bar: tqdm,
    resume: bool,
    commit_every: int,
    initial_map_size: int,
    result: ConvertResult,
) -> None:
    staging = shard.path + ".partial"
    shard_plan = {**plan, "shard": [shard.index, shard.count, shard.start, shard.stop]}
    progress = _open_staging(staging, shard_plan, shard, resume)
    writer = writer_class(backend)(staging, initial_map_size=initial_map_size)
    try:
        writer.truncate(len(progress.rows), progress.data_size)
        result.resumed_from += progress.next_position - shard.start
        bar.update(progress.next_position - shard.start)
        with open(os.path.join(staging, _JOURNAL), "a", encoding="utf-8") as journal:
            _ingest_range(tree, shard, options, pool, bar, writer, journal, progress, commit_every)
        header = _header(tree, shard, backend, options, progress)
        index = encode_index(_index_table(progress.rows))
        built = writer.finish(encode_header(header, index), index, progress.data_size)
    except BaseException:
        writer.abort()
        raise
    os.replace(built, shard.path)
    _fsync_folder(os.path.dirname(shard.path))
    shutil.rmtree(staging)
    result.stores.append(shard.path)
    result.num_samples += len(progress.rows)
    result.bad_files.extend(progress.bad)
    result.bytes_in += sum(tree.sizes[shard.start : shard.stop])
    result.bytes_out += os.stat(shard.path).st_blocks * 512  # allocated: LMDB's tail padding is sparse


def _open_staging(staging: str, plan: dict[str, Any], shard: _Shard, resume: bool) -> _Progress:
    plan_path = os.path.join(staging, _PLAN)
    if not os.path.exists(staging):
        os.mkdir(staging)
        _write_durably(plan_path, json.dumps(plan, sort_keys=True).encode())
        return _Progress(shard.start)
    if not resume:
        raise FileExistsError(
            f"{staging} holds an interrupted conversion: pass resume=True (--resume) to continue it, "
            "or delete that folder to start over."
        )
    try:
        with open(plan_path, encoding="utf-8") as f:
            staged_plan = json.load(f)
    except (OSError, ValueError):
        # Killed before the plan was durable: nothing was committed yet.
        shutil.rmtree(staging)
        return _open_staging(staging, plan, shard, resume=False)
    if staged_plan.get("format_version") != plan["format_version"]:
        raise ValueError(
            f"The interrupted conversion in {staging} was begun by a torchpack that writes format "
            f"{staged_plan.get('format_version', '1.0')!r}, not {plan['format_version']!r}, so it cannot be "
            "resumed; delete that folder to start over."
        )
    if staged_plan.get("fingerprint") != plan["fingerprint"]:
        raise ValueError(
            f"The source tree changed since the interrupted conversion in {staging} began (files were added, "
            "removed or modified), so it cannot be resumed; delete that folder to start over."
        )
    if staged_plan != plan:
        raise ValueError(
            f"The interrupted conversion in {staging} used other options ({staged_plan['options']}, "
            f"backend {staged_plan['backend']!r}); resume with the same options or delete that folder."
        )
    return _read_journal(os.path.join(staging, _JOURNAL), shard)


def _read_journal(path: str, shard: _Shard) -> _Progress:
    """Replay the journal's complete commits; a torn last line (a crash mid-write) is cut off."""
    progress = _Progress(shard.start)
    good_size = 0
    if os.path.exists(path):
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    commit = json.loads(line)
                except ValueError:
                    break
                progress.rows.extend(tuple(row) for row in commit["rows"])
                progress.bad.extend(commit["bad"])
                progress.next_position = commit["next"]
                progress.data_size = commit["data_size"]
                good_size += len(line)
        with open(path, "r+b") as f:
            f.truncate(good_size)
    return progress


def _ingest_range(
    tree: ScannedTree,
    shard: _Shard,
    options: IngestOptions,
    pool: _Pool,
    bar: tqdm,
    writer,
    journal,
    progress: _Progress,
    commit_every: int,
) -> None:
    start = progress.next_position
    chunk_size = max(1, min(64, commit_every, (shard.stop - start) // (4 * max(pool.workers, 1)) or 1))
    chunks = (
        [os.path.join(tree.root, p) for p in tree.paths[i : min(i + chunk_size, shard.stop)]]
        for i in range(start, shard.stop, chunk_size)
    )
    position = start
    new_rows: list[tuple] = []
    new_bad: list[dict[str, str]] = []
    pending_bytes = 0
    for results in pool.map(chunks, options):
        for item in results:
            path, target = tree.paths[position], tree.targets[position]
            position += 1
            if item.ok:
                row = len(progress.rows) + len(new_rows)
                writer.append(row, item.data)
                offset = progress.data_size + pending_bytes
                new_rows.append(
                    (
                        path,
                        target,
                        offset,
                        len(item.data),
                        item.crc32,
                        item.encoding,
                        item.decoder,
                        item.height,
                        item.width,
                        item.channels,
                    )
                )
                pending_bytes += len(item.data)
            else:
                new_bad.append({"path": path, "error_type": item.error_type, "error": item.error})
            if len(new_rows) + len(new_bad) >= commit_every or pending_bytes >= _COMMIT_BYTES:
                _commit(writer, journal, progress, position, new_rows, new_bad)
                new_rows, new_bad, pending_bytes = [], [], 0
        bar.update(len(results))
    _commit(writer, journal, progress, position, new_rows, new_bad)


def _commit(writer, journal, progress: _Progress, position: int, rows: list[tuple], bad: list[dict[str, str]]) -> None:
    """Make the samples durable in the backend first, then record them in the journal."""
    data_size = writer.commit()
    journal.write(json.dumps({"next": position, "data_size": data_size, "rows": rows, "bad": bad}, ensure_ascii=False) + "\n")
    journal.flush()
    os.fsync(journal.fileno())
    progress.rows.extend(rows)
    progress.bad.extend(bad)
    progress.next_position = position
    progress.data_size = data_size


def _index_table(rows: Sequence[tuple]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in INDEX_SCHEMA]
    return pa.table([pa.array(list(col), type=f.type) for col, f in zip(columns, INDEX_SCHEMA)], schema=INDEX_SCHEMA)


def _header(tree: ScannedTree, shard: _Shard, backend: str, options: IngestOptions, progress: _Progress) -> dict[str, Any]:
    from torchpack import __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "created_by": f"torchpack {__version__}",
        "classes": tree.classes,
        "class_to_idx": tree.class_to_idx,
        "num_samples": len(progress.rows),
        "storage": {
            "mode": options.storage,
            "checked": options.check,
            "short_side": options.short_side,
            "quality": options.quality if options.storage == "reencode" else None,
            "raw_compression": options.raw_compression if options.storage == "raw" else None,
        },
        "shard": {
            "index": shard.index,
            "count": shard.count,
            "scan_start": shard.start,
            "scan_stop": shard.stop,
            "scan_total": len(tree),
            "dataset_id": tree.fingerprint,
        },
        "source": {"files": shard.stop - shard.start, "bytes": sum(tree.sizes[shard.start : shard.stop])},
        "selection": _selection(tree, shard.index == 0),
        "bad_files": progress.bad,
    }


def _write_durably(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
