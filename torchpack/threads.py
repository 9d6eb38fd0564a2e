"""Decode threads in the process that reads: one pool per thread count, never carried across a fork."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from torchpack.process import after_fork_in_child

__all__ = ["read_then_finish_in_threads", "thread_pool"]

_pools: dict[int, ThreadPoolExecutor] = {}


@after_fork_in_child
def _forget_pools() -> None:
    _pools.clear()  # a forked child has none of its parent's threads


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` decode threads, started on first use."""
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="torchpack")
    return pool


def read_then_finish_in_threads(
    threads: int, rows: list[int], read: Callable[[int], Any], finish: Callable[[Any, int], Any]
) -> list[Any]:
    """``finish(read(row), row)`` for each row, reads in this thread and finishes in ``threads`` threads.

    Reads stay in the calling thread (an LMDB read transaction belongs to one thread);
    simplejpeg, Pillow and torch release the GIL, so the threads decode and resize at once.
    A row whose read or finish raised gives its exception, in its place.
    """

    def safe_read(row: int) -> Any:
        try:
            return read(row)
        except Exception as exc:
            return exc

    def safe_finish(row: int, data: Any) -> Any:
        try:
            return data if isinstance(data, Exception) else finish(data, row)
        except Exception as exc:
            return exc

    return list(thread_pool(threads).map(safe_finish, rows, [safe_read(row) for row in rows]))
