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

__all__ = ["ConversionInterrupted", "ignore_stop_signals", "stop_signals_raise"]

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


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
        for other in taken:
            signal.signal(other, signal.SIG_IGN)
        raise ConversionInterrupted(signum)

    for signum in taken:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum in taken:
            signal.signal(signum, previous[signum])


def ignore_stop_signals() -> None:
    """In a converter worker: leave SIGINT, SIGTERM and SIGHUP to the converting process.

    A signal sent to the whole process group (Ctrl-C, SLURM's SIGTERM) then stops the
    conversion through the main process, which lets the workers finish their chunk and exit,
    instead of each worker dying on its own and the pool reporting a crash.
    """
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)
