"""The converter's worker processes: they read and check chunks of files, and results come back in order."""

from __future__ import annotations

import collections
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

from torchpack.ingest import IngestOptions, Ingested, ingest_files
from torchpack.interrupts import ConversionInterrupted, ignore_stop_signals, received_stop_signal

__all__ = ["IngestPool"]


class IngestPool:
    """Runs :func:`torchpack.ingest.ingest_files` on chunks of files in ``workers`` processes (0: inline).

    A context manager: the processes start (with their imports) on entry, so they warm up while
    the caller scans the tree.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> IngestPool:
        if self.workers > 0:
            # forkserver, not fork: the caller may be a training script with threads and CUDA.
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context(method), initializer=ignore_stop_signals
            )
            try:
                for _ in range(self.workers):  # start the workers (and their imports) now, not on the first chunk
                    self._submit([], IngestOptions(), None)
            except BaseException:
                self._shut_down(failed=True)
                raise
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if self._executor is not None:
            self._shut_down(failed=exc_type is not None)

    def _shut_down(self, failed: bool) -> None:
        assert self._executor is not None
        if failed:
            # Stopped or failed: end the workers now. Waiting for their chunks could wait forever
            # (a file on a hung mount, a FIFO), and the chunks' results are not wanted any more.
            for process in list(getattr(self._executor, "_processes", {}).values()):
                process.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None

    def _submit(self, chunk: list[str], options: IngestOptions, first_pending: list[str] | None) -> Future:
        assert self._executor is not None
        try:
            return self._executor.submit(ingest_files, chunk, options)
        except (BrokenProcessPool, OSError, EOFError) as exc:
            # submit() also starts missing workers; a worker killed meanwhile breaks the pool, or
            # the forkserver's hand-over of the next one (EOFError, EBADF).
            raise _worker_died(first_pending or chunk or None) from exc

    def map(self, chunks: Iterator[list[str]], options: IngestOptions) -> Iterator[list[Ingested]]:
        """Each chunk's results, in the chunks' order, with a few chunks in flight per worker."""
        if self._executor is None:
            for chunk in chunks:
                yield ingest_files(chunk, options)
            return
        window: collections.deque[tuple[Future, list[str]]] = collections.deque()
        for chunk in chunks:
            window.append((self._submit(chunk, options, window[0][1] if window else None), chunk))
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


def _worker_died(chunk: list[str] | None) -> Exception:
    if received_stop_signal() is not None:  # the same signal reached the workers: a stop, not a crash
        return ConversionInterrupted(received_stop_signal())
    script = unguarded_main_script()
    if script is not None:
        return RuntimeError(
            f"The converter's worker processes could not start: {script} calls torchpack.convert() without an "
            '`if __name__ == "__main__":` guard. Worker processes start by importing that script again (the '
            "forkserver and spawn start methods), which runs the conversion again inside each of them. Put the "
            "call under the guard, or pass workers=0."
        )
    where = f"while reading {chunk[0]} or the files after it" if chunk else "while the workers were starting"
    return RuntimeError(
        f"A converter worker process died (killed, or out of memory) {where}. The work committed so far is kept: "
        "run again with resume=True (--resume), with fewer workers if memory is short."
    )


def unguarded_main_script() -> str | None:
    """The running script's path, if it has no ``if __name__ == "__main__":`` guard (else None)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None or not os.path.isfile(path):
        return None  # an interactive session, python -c, or a frozen program
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
    except OSError:
        return None
    return None if "__name__" in source and "__main__" in source else path


def refuse_convert_in_worker_start() -> None:
    """Raise a clear error when a starting worker process (importing the user's script) calls ``convert()``.

    Raises:
        RuntimeError: this process is a worker importing the main script, which calls ``convert()``
            at module level.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "torchpack.convert() was called while a worker process was starting: the script that calls it has no "
            '`if __name__ == "__main__":` guard, and worker processes import it again. Put the call under the guard.'
        )
