"""Which files of a scanned tree go into which shard file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["ShardPlan", "own_output", "plan_shards", "shard_paths"]


@dataclass(frozen=True)
class ShardPlan:
    """One shard of a conversion: the scan positions ``[start, stop)`` written to ``path``."""

    index: int
    count: int
    start: int
    stop: int
    path: str

    def __len__(self) -> int:
        return self.stop - self.start


def shard_paths(dst: str | os.PathLike, num_shards: int) -> list[str]:
    """The file names of ``num_shards`` shards of ``dst``: ``name-00000-of-00004.ext``, ... (or ``dst`` alone)."""
    dst = os.fspath(dst)
    if num_shards == 1:
        return [dst]
    stem, ext = os.path.splitext(dst)
    return [f"{stem}-{i:05d}-of-{num_shards:05d}{ext}" for i in range(num_shards)]


def own_output(dst: str) -> Callable[[str], bool]:
    """Whether a path is one a conversion into ``dst`` writes: the store, any of its shards, their staging folders.

    A destination inside the source tree must not be read as part of the tree (its staging
    folder would look like a class folder, and a resumed conversion like a changed tree).
    """
    stem, ext = os.path.splitext(os.path.abspath(dst))
    pattern = re.compile(re.escape(stem) + r"(-\d{5}-of-\d{5})?" + re.escape(ext) + r"(\.partial.*)?", re.DOTALL)
    return lambda path: pattern.fullmatch(os.path.abspath(path)) is not None


def plan_shards(
    num_files: int, dst: str, num_shards: int | None, shard_size: int | None, shard_index: int | None
) -> list[ShardPlan]:
    """The shards to write for ``num_files`` scanned files: all of them, or only ``shard_index``.

    Raises:
        ValueError: the shard arguments contradict each other or are out of range.
    """
    n = num_files
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
    shards = [ShardPlan(i, num_shards, bounds[i], bounds[i + 1], paths[i]) for i in range(num_shards)]
    if shard_index is not None:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"`shard_index` must be in [0, {num_shards}), got {shard_index}.")
        shards = [shards[shard_index]]
    return shards
