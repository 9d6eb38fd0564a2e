"""What ``convert()`` was asked to do, checked once and carried as one object."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable

from torchvision.datasets.folder import IMG_EXTENSIONS

from torchpack.backends import backend_for_destination
from torchpack.ingest import RAW_COMPRESSIONS, STORAGE_MODES, IngestOptions
from torchpack.scan import check_selection

__all__ = ["ConvertOptions"]


@dataclass(frozen=True)
class ConvertOptions:
    """The options of one conversion, validated; see :func:`torchpack.convert` for each."""

    backend: str
    extensions: tuple[str, ...] | None
    is_valid_file: Callable[[str], bool] | None
    workers: int
    overwrite: bool
    resume: bool
    ingest: IngestOptions
    num_shards: int | None
    shard_size: int | None
    shard_index: int | None
    progress: bool
    commit_every: int
    shuffle: int | None = None
    writer_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arguments(
        cls,
        dst: str,
        *,
        backend: str | None,
        extensions: tuple[str, ...] | str | None,
        is_valid_file: Callable[[str], bool] | None,
        workers: int | None,
        overwrite: bool,
        resume: bool,
        check: bool | Callable[[str], object] | None,
        storage: str,
        short_side: int | None,
        quality: int,
        raw_compression: str,
        num_shards: int | None,
        shard_size: int | None,
        shard_index: int | None,
        progress: bool,
        commit_every: int,
        initial_map_size: int,
        shuffle: int | None = None,
        long_side: int | None = None,
    ) -> ConvertOptions:
        """``convert()``'s arguments, checked.

        Raises:
            ValueError: an argument is out of range, or ``check`` cannot go to the worker processes.
        """
        backend = backend_for_destination(dst, backend)
        check_images = check if isinstance(check, bool) else extensions is None
        if extensions is None and is_valid_file is None:
            extensions = IMG_EXTENSIONS
        extensions = check_selection(extensions, is_valid_file)
        ingest = _ingest_options(storage, check_images, check if callable(check) else None, short_side, long_side, quality, raw_compression)
        if workers is not None and workers < 0:
            raise ValueError(f"`workers` must be >= 0, got {workers}.")
        if commit_every < 1:
            raise ValueError(f"`commit_every` must be >= 1, got {commit_every}.")
        if shuffle is not None and (not isinstance(shuffle, int) or isinstance(shuffle, bool)):
            raise ValueError(f"`shuffle` must be an int seed or None, got {shuffle!r}.")
        workers = (os.cpu_count() or 1) if workers is None else workers
        if ingest.check_file is not None and workers != 0:
            try:
                ForkingPickler.dumps(ingest.check_file)  # as the pool will send it; nothing here is ever unpickled
            except Exception as exc:
                raise ValueError(
                    f"`check` must be picklable to run in the worker processes (a module-level function, not a "
                    f"lambda or a local function), got {ingest.check_file!r}: {exc}"
                ) from exc
        return cls(
            backend=backend,
            extensions=extensions,
            is_valid_file=is_valid_file,
            workers=workers,
            overwrite=overwrite,
            resume=resume,
            ingest=ingest,
            num_shards=num_shards,
            shard_size=shard_size,
            shard_index=shard_index,
            progress=progress,
            commit_every=commit_every,
            shuffle=shuffle,
            writer_options={"initial_map_size": initial_map_size},
        )

    def resumable_part(self) -> dict[str, Any]:
        """What a resumed conversion must share with the interrupted one, as JSON data."""
        ingest = {**dataclasses.asdict(dataclasses.replace(self.ingest, check_file=None)), "check_file": _name(self.ingest.check_file)}
        return {"backend": self.backend, "options": ingest, "shuffle": self.shuffle}


def _name(function: Callable | None) -> str | None:
    if function is None:
        return None
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _ingest_options(
    storage: str,
    check_images: bool,
    check_file: Callable[[str], object] | None,
    short_side: int | None,
    long_side: int | None,
    quality: int,
    raw_compression: str,
) -> IngestOptions:
    if storage not in STORAGE_MODES:
        raise ValueError(f"`storage` must be one of {STORAGE_MODES}, got {storage!r}.")
    if raw_compression not in RAW_COMPRESSIONS:
        raise ValueError(f"`raw_compression` must be one of {RAW_COMPRESSIONS}, got {raw_compression!r}.")
    for name, side in (("short_side", short_side), ("long_side", long_side)):
        if side is not None and side < 1:
            raise ValueError(f"`{name}` must be a positive number of pixels, got {side}.")
    if not 1 <= quality <= 100:
        raise ValueError(f"`quality` must be between 1 and 100, got {quality}.")
    if storage == "encoded" and (short_side is not None or long_side is not None):
        raise ValueError("`short_side` and `long_side` need storage='reencode' or storage='raw' (encoded files are stored untouched).")
    return IngestOptions(
        storage=storage,
        check=check_images or storage != "encoded",
        check_file=check_file,
        image_extensions=IMG_EXTENSIONS,
        short_side=short_side,
        long_side=long_side,
        quality=quality,
        raw_compression=raw_compression,
    )
