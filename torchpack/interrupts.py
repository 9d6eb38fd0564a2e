"""SIGTERM and SIGHUP stop a conversion the way Ctrl-C does: an exception that unwinds it, so its workers stop.

SLURM sends SIGTERM at a job's time limit and on preemption. Python's default for SIGTERM
kills the process at once: the converter's worker processes, its forkserver and the
resource tracker are left running, holding the caller's pipes. As an exception instead, the
conversion shuts its pool down and leaves its staging folder resumable, like SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["ConversionInterrupted", "ignore_stop_signals", "received_stop_signal", "stop_signals_raise"]

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_received: list[int] = []  # the stop signal that arrived during the current conversion, if one did


def received_stop_signal() -> int | None:
    """The stop signal this conversion received, if any (a worker dying of the same group-wide
    signal is then the stop, not a crash)."""
    return _received[-1] if _received else None


class ConversionInterrupted(KeyboardInterrupt):
    """A conversion was stopped by a signal (SIGTERM, SIGHUP); what it committed is kept for ``resume``.

    A ``KeyboardInterrupt``, as Ctrl-C is: ``except Exception`` does not swallow it.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`ConversionInterrupted` in the main thread.

    Only signals left at their default action are taken over: a handler the program installed
    itself (a training script that saves a checkpoint, say) stays in charge. A second signal
    while the first unwinds is ignored, so the clean-up runs to its end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    taken = [signum for signum, handler in previous.items() if handler is signal.SIG_DFL]

    def handler(signum: int, frame: object) -> None:
        _received.append(signum)
        for other in taken:
            signal.signal(other, signal.SIG_IGN)
        raise ConversionInterrupted(signum)

    _received.clear()
    for signum in taken:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum in taken:
            signal.signal(signum, previous[signum])


def ignore_stop_signals() -> None:
    """In a converter worker: leave SIGINT and SIGHUP to the converting process.

    A Ctrl-C or a closed terminal, sent to the whole process group, then stops the conversion
    through the main process, which stops its workers. SIGTERM keeps its default: the pool
    itself ends its workers with it.
    """
    for signum in (signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGINT)):
        signal.signal(signum, signal.SIG_IGN)
