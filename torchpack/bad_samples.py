"""What a sample that cannot be read, loaded or transformed does: raise, be skipped, or be replaced.

Bad data is sparse; a bug is not. A transform that is not callable, or that raises on every
sample, would turn ``on_error="skip"`` into an epoch of empty batches, one log line per
sample. So when a process's first samples all load and then all fail in the transforms with
the same kind of error, that error is raised instead of skipped.
"""

from __future__ import annotations

import logging
import multiprocessing
import weakref
from typing import Any, Callable

from torchpack.errors import BadSample, BadSampleError
from torchpack.process import after_fork_in_child, sending_to_new_process

__all__ = ["ON_ERROR", "BadSamplePolicy", "TransformFailed"]

logger = logging.getLogger("torchpack")

ON_ERROR = ("raise", "skip", "replace")
_MAX_REPLACEMENT_TRIES = 64
#: Samples whose transforms fail in a row, with the same kind of error, before any sample of the
#: process succeeded, after which ``skip`` and ``replace`` raise: that is a bug, not bad data.
SAME_ERROR_LIMIT = 3

_policies: weakref.WeakSet[BadSamplePolicy] = weakref.WeakSet()


@after_fork_in_child
def _start_counting_again() -> None:
    for policy in list(_policies):
        policy.forget_reads()


class TransformFailed(Exception):
    """Raised by a dataset when a sample loaded and a transform raised ``cause``: a bug is told from bad data by it."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


def _shared_counter() -> Any:
    """A process-shared int64 that DataLoader workers of every start method can receive."""
    # Made in the default (fork) context, its lock refuses to be sent to spawn or forkserver
    # workers ("A SemLock created in a fork context is being shared with a process in a spawn
    # context"); made for spawn, it also works in forked workers, which inherit it.
    return multiprocessing.get_context("spawn").Value("q", 0)


class BadSamplePolicy:
    """A dataset's ``on_error`` policy, and the count of samples it skipped in all its processes.

    Args:
        on_error: ``"raise"``, ``"skip"`` or ``"replace"``.
        store: the store's name, for messages.
    """

    def __init__(self, on_error: str, store: str) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        self.on_error = on_error
        self.store = store
        self._skipped = _shared_counter() if on_error != "raise" else None
        self.forget_reads()
        _policies.add(self)

    def forget_reads(self) -> None:
        """Start this process's count of failed reads over (a new process reads on its own)."""
        #: Set by the dataset after each good read: then failures are bad data, not a bug.
        self.seen_good = False
        self._same_failures = 0
        self._last_failure: type | None = None

    def bad_sample(self, index: int, path: str, exc: Exception, size: int, load: Callable[[int], Any]) -> Any:
        """What dataset index ``index`` (stored at ``path``), which failed with ``exc``, gives instead.

        ``load(i)`` loads dataset index ``i`` (for ``"replace"``); ``size`` is the dataset's length.
        A :class:`TransformFailed` (from ``exc`` or ``load``) counts towards the bug rule.

        Raises:
            BadSampleError: with ``"raise"``; with ``"replace"`` when no later sample loads either;
                with any policy when the process's reads have all failed the same way (a bug).
        """
        in_transform = isinstance(exc, TransformFailed)
        exc = exc.cause if in_transform else exc
        if self.on_error == "raise":
            raise BadSampleError(
                f"Sample {index} ({path}) of {self.store} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if in_transform:
            self._refuse_repeated_failure(index, path, exc)
        self._count_skipped()
        logger.warning("torchpack: skipped bad sample %d (%s): %s: %s", index, path, type(exc).__name__, exc)
        if self.on_error == "skip":
            return BadSample(index, path, f"{type(exc).__name__}: {exc}")
        tries = min(_MAX_REPLACEMENT_TRIES, size) - 1
        for step in range(1, tries + 1):
            try:
                sample = load((index + step) % size)
            except TransformFailed as failed:
                self._refuse_repeated_failure((index + step) % size, path, failed.cause)
                self._count_skipped()
                continue
            except Exception:
                self._count_skipped()
                continue
            self.seen_good = True
            return sample
        raise BadSampleError(
            f"Sample {index} ({path}) of {self.store} could not be loaded, nor any of the {tries} samples after it."
        ) from exc

    def _refuse_repeated_failure(self, index: int, path: str, exc: Exception) -> None:
        if self.seen_good:
            return
        kind = type(exc)
        self._same_failures = self._same_failures + 1 if kind is self._last_failure else 1
        self._last_failure = kind
        if self._same_failures >= SAME_ERROR_LIMIT:
            raise BadSampleError(
                f"The transforms failed with {kind.__name__} on each of the first {self._same_failures} samples this "
                f"process loaded from {self.store} (the last: sample {index}, {path}: {exc}). That is a bug in a "
                f"transform, not bad data, so on_error={self.on_error!r} raises it instead of skipping."
            ) from exc

    def _count_skipped(self) -> None:
        with self._skipped.get_lock():
            self._skipped.value += 1

    @property
    def skipped_count(self) -> int:
        """Samples skipped or replaced so far, summed over all DataLoader worker processes."""
        return 0 if self._skipped is None else int(self._skipped.value)

    def reset_skipped_count(self) -> None:
        """Set :attr:`skipped_count` back to zero."""
        if self._skipped is not None:
            with self._skipped.get_lock():
                self._skipped.value = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # The shared count crosses only into a process being started (DataLoader workers); an
        # ordinary pickle starts a count of its own.
        if state["_skipped"] is not None and not sending_to_new_process():
            state["_skipped"] = "new"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["_skipped"] == "new":
            state["_skipped"] = _shared_counter()
        self.__dict__.update(state)
        self.forget_reads()
        _policies.add(self)
