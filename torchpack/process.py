"""Which process this is: state a forked child must drop, and whether an object is being sent to a new process.

torchpack keeps per-process state (open store readers, decode threads). A DataLoader worker
started by fork inherits a copy of it that it must not use; one started by spawn or
forkserver starts without it. Both cases are decided here and nowhere else.
"""

from __future__ import annotations

import multiprocessing.context
import os
from typing import Callable

__all__ = ["after_fork_in_child", "sending_to_new_process"]

_resets: list[Callable[[], None]] = []


def after_fork_in_child(reset: Callable[[], None]) -> Callable[[], None]:
    """Call ``reset`` in every child this process forks, before the child runs anything else.

    For per-process state: the child drops what it inherited and opens its own on first use.
    Returns ``reset``, so it can be used as a decorator.
    """
    _resets.append(reset)
    return reset


def _run_resets() -> None:
    for reset in _resets:
        reset()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere workers are spawned, never forked
    os.register_at_fork(after_in_child=_run_resets)


def sending_to_new_process() -> bool:
    """Whether the object being pickled now goes to a process being started (spawn or forkserver workers).

    Only then may shared memory (a ``multiprocessing`` value or array) go along; an ordinary
    pickle must make its own.
    """
    return multiprocessing.context.get_spawning_popen() is not None
