"""``convert()``: scan a DatasetFolder tree, read and check its files in a worker pool, write a store.

Crash safety: everything is written into ``<dst>.partial/`` (a journal of committed samples
plus the backend's staged data, :mod:`torchpack.staging`) and the finished store is renamed to
``dst`` only when it is whole and synced. ``resume=True`` continues from the journal's last commit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from tqdm.auto import tqdm

from torchpack.convert_options import ConvertOptions
from torchpack.format import FORMAT_VERSION
from torchpack.ingest_pool import IngestPool, refuse_convert_in_worker_start
from torchpack.interrupts import stop_signals_raise
from torchpack.scan import scan_tree
from torchpack.remote import is_url
from torchpack.shard_conversion import ShardConversion, ShardResult
from torchpack.shard_plan import ShardPlan, own_output, plan_shards, shard_paths
from torchpack.upload import RemoteDestination

__all__ = ["ConvertResult", "convert", "shard_paths"]


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
    storage_options: dict[str, Any] | None = None,
    stage_dir: str | os.PathLike | None = None,
    shuffle: int | None = None,
    long_side: int | None = None,
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
            backend unless ``backend`` is given. A URL (``s3://bucket/imagenet/train.lmdb``) writes
            each shard locally in ``stage_dir``, then uploads it whole with its index sidecar.
        backend: ``"lmdb"`` or ``"hdf5"`` (or another registered backend).
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
        long_side: cap on the long side for ``"reencode"`` and ``"raw"`` (FFCV's ``max_resolution``);
            with ``short_side`` too, the tighter of the two.
        quality: JPEG quality for ``"reencode"``.
        raw_compression: ``"lz4"`` or ``"none"`` for ``"raw"``.
        num_shards: write this many shards, ``dst``'s name plus ``-00000-of-0000N``.
        shard_size: or write shards of at most this many files each.
        shard_index: write only this shard (one job of a parallel conversion); needs
            ``num_shards`` or ``shard_size``.
        progress: show a progress bar.
        commit_every: samples per durable commit (a crash loses at most this many).
        initial_map_size: LMDB's first map size; it doubles whenever it is full.
        storage_options: for a URL ``dst``: fsspec's options (credentials, ``endpoint_url``).
        stage_dir: for a URL ``dst``: the local folder shards are converted in before they are
            uploaded (default: under ``$TORCHPACK_CACHE``); resume on a machine that sees it.
        shuffle: store the samples in a random order drawn from this seed instead of
            ImageFolder's, so that every shard mixes every class: for training from object
            storage with :class:`ShardWindowSampler`. The dataset's order is then the stored one.

    Returns:
        A :class:`ConvertResult`.

    Files that cannot be read (a dangling symlink, an I/O error, a file removed after the
    listing) are left out and reported like files that do not decode. The destination may be
    inside the tree: the converter never lists its own output.

    Raises:
        FileNotFoundError: ``src`` is missing or has no class folder, or ``dst``'s folder is missing.
        FileExistsError: ``dst`` exists and ``overwrite`` is False, or an interrupted conversion
            is in the way and ``resume`` is False.
        ConversionInProgressError: another process is converting into ``dst`` right now.
        ConversionInterrupted: SIGTERM or SIGHUP stopped the conversion (as Ctrl-C's
            ``KeyboardInterrupt`` does); the staged work is kept for ``resume``.
        ValueError: an argument is out of range, or (on resume) the tree or options changed.
        RuntimeError: a worker process died.
        OSError: writing failed (a full disk, say); the staged work is kept for ``resume``.
    """
    refuse_convert_in_worker_start()
    started = time.perf_counter()
    remote = RemoteDestination(str(dst), storage_options, stage_dir and os.fspath(stage_dir)) if is_url(dst) else None
    dst = remote.local if remote is not None else os.path.abspath(os.fspath(dst))
    options = ConvertOptions.from_arguments(
        dst,
        backend=backend,
        extensions=extensions,
        is_valid_file=is_valid_file,
        workers=workers,
        overwrite=overwrite,
        resume=resume,
        check=check,
        storage=storage,
        short_side=short_side,
        quality=quality,
        raw_compression=raw_compression,
        num_shards=num_shards,
        shard_size=shard_size,
        shard_index=shard_index,
        progress=progress,
        commit_every=commit_every,
        initial_map_size=initial_map_size,
        shuffle=shuffle,
        long_side=long_side,
    )
    if not os.path.isdir(os.path.dirname(dst)):
        raise FileNotFoundError(f"The destination folder {os.path.dirname(dst)} does not exist.")
    if not os.path.isdir(src):
        scan_tree(src, options.extensions, options.is_valid_file)  # raises the error that names the source
    with stop_signals_raise(), IngestPool(options.workers) as pool:  # workers start while the tree is scanned
        tree = scan_tree(src, options.extensions, options.is_valid_file, exclude=own_output(dst))
        if options.shuffle is not None:
            tree = tree.shuffled(options.shuffle)
        shards = plan_shards(len(tree), dst, options.num_shards, options.shard_size, options.shard_index)
        for shard in shards:
            if os.path.exists(shard.path) and not options.overwrite and not (remote is not None and options.resume):
                raise FileExistsError(f"{shard.path} already exists; pass overwrite=True (--overwrite) to replace it.")
            if os.path.isdir(shard.path):
                raise IsADirectoryError(f"{shard.path} is a folder; a store is a single file.")
        # What a resumed conversion must share with the interrupted one. Not the files the
        # selection turned down: they may change, and the header lists them as they are now.
        plan = {
            "fingerprint": tree.fingerprint,
            **options.resumable_part(),
            "selection": {"extensions": tree.extensions, "is_valid_file": tree.is_valid_file},
            "format_version": FORMAT_VERSION,
        }
        plan = json.loads(json.dumps(plan))  # as the staged copy reads back (tuples become lists)
        result = ConvertResult([], 0, len(tree.classes), [], 0, 0, 0.0)
        total = sum(len(shard) for shard in shards)
        with tqdm(total=total, unit="img", disable=not options.progress, dynamic_ncols=True) as bar:
            for shard in shards:
                if remote is None:
                    done = ShardConversion(tree, shard, options, plan).run(pool, bar.update)
                else:
                    done = convert_and_upload(remote, tree, shard, options, plan, pool, bar.update)
                result.stores.append(done.path)
                result.num_samples += done.num_samples
                result.bad_files.extend(done.bad_files)
                result.bytes_in += done.bytes_in
                result.bytes_out += done.bytes_out
                result.resumed_from += done.resumed_from
    result.seconds = time.perf_counter() - started
    return result


def convert_and_upload(
    remote: RemoteDestination, tree, shard: ShardPlan, options: ConvertOptions, plan: dict[str, Any], pool, advance
) -> ShardResult:
    """One shard of a conversion into object storage: skipped if this conversion already published it
    (with ``resume``), uploaded if it was converted but not uploaded, else converted and uploaded."""
    published = remote.published_header(shard.path)
    if published is not None:
        if published["shard"].get("dataset_id") != tree.fingerprint or not options.resume:
            if not options.overwrite:
                raise FileExistsError(
                    f"{remote.url_of(shard.path)} already exists; pass overwrite=True (--overwrite) to replace it"
                    + (" (it is another conversion's)." if options.resume else ", or resume=True (--resume) if it is this conversion's.")
                )
        else:
            advance(len(shard))
            return ShardResult(
                remote.url_of(shard.path), published["num_samples"], published.get("bad_files", []),
                published.get("source", {}).get("bytes", 0), 0, resumed_from=len(shard),
            )
    if os.path.exists(shard.path):  # converted by an interrupted run, not uploaded yet
        advance(len(shard))
        header = _local_header(shard.path)
        if header["shard"].get("dataset_id") != tree.fingerprint:
            raise ValueError(
                f"{shard.path} holds a shard of another conversion than this one (another tree, or the tree changed); "
                "delete it to convert again."
            )
        done = ShardResult(shard.path, header["num_samples"], header.get("bad_files", []),
                           header.get("source", {}).get("bytes", 0), os.path.getsize(shard.path), resumed_from=len(shard))
    else:
        done = ShardConversion(tree, shard, options, plan).run(pool, advance)
    done.path = remote.publish(shard.path)
    return done


def _local_header(path: str) -> dict[str, Any]:
    from torchpack.backends import open_reader

    with open_reader(path) as reader:
        return reader.read_header()
