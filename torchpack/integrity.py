"""Checked once: each sample's CRC-32 is compared on its first read, and every process of a dataset remembers it passed.

The flags are a byte per sample of shared memory (a ``multiprocessing`` ``RawArray``) that
the dataset's DataLoader workers inherit or receive, across epochs and worker restarts. A
sample that fails is never marked, so it fails on every read. Later epochs pay nothing: for
28x28 raw images the CRC was two thirds of a batched read's cost.
"""

from __future__ import annotations

import multiprocessing
import zlib
from typing import Any, Callable, Iterable

import numpy as np

from torchpack.process import sending_to_new_process

__all__ = ["ChecksumGuard", "shared_flags"]


def shared_flags(count: int) -> Any:
    """``count`` process-shared bytes, zeroed, that DataLoader workers of every start method share."""
    # Made for spawn, shared memory also works in forked workers, which inherit it; made in the
    # default (fork) context, it refuses to be sent to spawn or forkserver workers.
    return multiprocessing.get_context("spawn").RawArray("B", max(count, 1))


class ChecksumGuard:
    """Compares stored bytes with the index's CRC-32s, once per sample for all of a dataset's processes.

    Args:
        crc32: the index's CRC-32 of every row.
        enabled: check at all (``check_crc``); may be changed later through :attr:`enabled`.
    """

    def __init__(self, crc32: np.ndarray, enabled: bool = True) -> None:
        self._crc32 = crc32
        self._flags = None
        self.view: np.ndarray | None = None  # the flags as an array; None when checks are off
        self.enabled = enabled

    @property
    def enabled(self) -> bool:
        """Whether samples are checked; turning checks off and on again starts over."""
        return self._flags is not None

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"`check_crc` must be True or False, got {value!r}.")
        if value and self._flags is None:
            self._flags = shared_flags(len(self._crc32))
            self.view = np.frombuffer(self._flags, dtype=np.uint8)
        elif not value:
            self._flags = self.view = None
        self._all_checked = False  # flags only ever go from 0 to 1: once all are set, they stay set
        self._batches_checked = 0

    def passes(self, row: int, data) -> bool:
        """Whether ``data`` is row ``row``'s stored bytes: checked on its first read, then remembered."""
        view = self.view
        if view is None or view[row]:
            return True
        if zlib.crc32(data) != int(self._crc32[row]):
            return False
        view[row] = 1
        return True

    def check_batch(self, rows: np.ndarray, checksums: Callable[[np.ndarray], Iterable[int]]) -> None:
        """Compare ``checksums(positions)`` for the batch positions whose rows were never checked, then remember them.

        Raises:
            ValueError: a checksum does not match (the caller reads the batch sample by sample
                to find which).
        """
        view = self.view
        if view is None or self._all_checked:
            return
        todo = np.flatnonzero(view[rows] == 0)
        if not len(todo):
            # Every sample checked? Then later batches skip even this lookup. Asked after 1, 2,
            # 4, ... batches with nothing to check: a dataset read only in part (a Subset, one
            # rank's share) is never all checked, and the scan is over every sample.
            self._batches_checked += 1
            if self._batches_checked & (self._batches_checked - 1) == 0 and view.all():
                self._all_checked = True
            return
        if list(checksums(todo)) != self._crc32[rows[todo]].tolist():
            raise ValueError("checksum mismatch in batch: stored bytes were damaged after conversion")
        view[rows[todo]] = 1

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "view": None}
        # Shared memory may only cross into a process being started (DataLoader workers); an
        # ordinary pickle starts with every sample unchecked.
        if state["_flags"] is not None and not sending_to_new_process():
            state["_flags"], state["_all_checked"] = "new", False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["_flags"] == "new":
            state["_flags"] = shared_flags(len(state["_crc32"]))
        self.__dict__.update(state)
        if self._flags is not None:
            self.view = np.frombuffer(self._flags, dtype=np.uint8)
