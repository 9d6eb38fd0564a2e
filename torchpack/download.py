"""Download one remote object to a local file: in ranged chunks, several in flight at once, each retried with backoff."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from torchpack.remote import RemoteShard

__all__ = ["RemoteReadError", "download"]

CHUNK_BYTES = 16 << 20
STREAMS = 2
RETRIES = 5
BACKOFF_SECONDS = 0.25


class RemoteReadError(OSError):
    """A remote object could not be read, after retries; the message names it and the last error."""


class _Abandoned(RemoteReadError):
    """A chunk's retries, given up because another chunk of the download failed."""


def _retryable(exc: Exception) -> bool:
    """Whether a failed request may succeed when repeated: not a missing object or a refusal (4xx but 408 and 429)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, NotImplementedError, TypeError)):
        return False
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    return not (isinstance(status, int) and 400 <= status < 500 and status not in (408, 429))


def download(
    fs: Any,
    shard: RemoteShard,
    dest: str,
    retries: int | None = None,
    backoff: float | None = None,
    progress: Callable[[int], None] | None = None,
    streams: int | None = None,
) -> None:
    """Write the bytes of ``shard`` to ``dest`` and make them durable.

    Each chunk is one ranged request, and ``streams`` chunks (default :data:`STREAMS`) are in
    flight at once: one request's round trip and first byte overlap another's transfer, so a
    lone download keeps the link busy. Each chunk is written at its offset as it arrives. A
    failed or short request (a dropped connection, a 500 or 503, a timeout from the client's
    settings) is asked again after ``backoff`` seconds (default :data:`BACKOFF_SECONDS`),
    doubling; ``retries`` failures in a row of one chunk (default :data:`RETRIES`) end the
    download, and the chunks still in flight are dropped.

    Raises:
        RemoteReadError: the object could not be read (the message names it and the last error).
        FileNotFoundError, PermissionError: the object is gone or refused, at once.
        OSError: writing ``dest`` failed (a full disk, say).
    """
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    streams = STREAMS if streams is None else streams
    chunks = _chunks(shard.size, CHUNK_BYTES, streams)
    failed = threading.Event()  # one chunk gave up: the others stop retrying, and no other chunk starts
    first_error: list[BaseException] = []  # the chunk failure that ended the download
    with open(dest, "wb") as out:

        def fetch_and_write(chunk: tuple[int, int]) -> None:
            if failed.is_set():
                return  # the download has failed already; the caller raises that failure
            try:
                data = _fetch(fs, shard, chunk, retries, backoff, failed)
                written = os.pwrite(out.fileno(), data, chunk[0])
                if written != len(data):  # pwrite on a regular file writes it all, or raises (ENOSPC)
                    raise OSError(f"wrote {written} of {len(data)} bytes at offset {chunk[0]} of {dest}")
            except BaseException as exc:
                if not isinstance(exc, _Abandoned) and not first_error:
                    first_error.append(exc)
                failed.set()
                raise
            if progress is not None:
                progress(len(data))

        if streams <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                fetch_and_write(chunk)
        else:
            stopped: BaseException | None = None
            with ThreadPoolExecutor(min(streams, len(chunks)), thread_name_prefix="torchpack-download") as pool:
                futures = [pool.submit(fetch_and_write, chunk) for chunk in chunks]
                try:
                    for future in futures:
                        future.result()
                except BaseException as exc:  # a chunk failed, or this thread was interrupted (Ctrl-C)
                    failed.set()
                    for future in futures:
                        future.cancel()
                    stopped = exc
            if stopped is not None:  # the requests in flight have ended: raise what caused it
                raise first_error[0] if isinstance(stopped, Exception) and first_error else stopped
        out.flush()
        os.fsync(out.fileno())


def _chunks(size: int, chunk_bytes: int, streams: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each ranged request. The first ``streams - 1`` are 1/streams, 2/streams, ...
    of a chunk, so that streams sharing a link finish their requests evenly apart, and one's round
    trip overlaps the others' transfers instead of all waiting at once."""
    sizes = [chunk_bytes * i // streams for i in range(1, streams)]
    starts, position = [], 0
    while position < size:
        starts.append(position)
        position += sizes.pop(0) if sizes else chunk_bytes
    return [(start, min(end, size)) for start, end in zip(starts, [*starts[1:], size])]


def _fetch(fs: Any, shard: RemoteShard, chunk: tuple[int, int], retries: int, backoff: float, failed: threading.Event) -> bytes:
    """The bytes of one chunk, asked again after a failed or short answer (see :func:`download`)."""
    start, end = chunk
    failures = 0
    while True:
        try:
            data = fs.cat_file(shard.path, start=start, end=end)
            if len(data) != end - start:
                raise OSError(f"the server sent {len(data)} bytes for a request of {end - start}")
            return data
        except Exception as exc:
            failures += 1
            if not _retryable(exc):
                raise
            if failures > retries:
                raise RemoteReadError(
                    f"Could not download {shard.url}: {failures} attempts in a row failed at byte {start} of "
                    f"{shard.size} (the last: {type(exc).__name__}: {exc})."
                ) from exc
            if failed.wait(min(backoff * 2 ** (failures - 1), 8.0)):  # the backoff, cut short if the download failed
                raise _Abandoned(
                    f"Could not download {shard.url}: another part of it failed (this part's last error: "
                    f"{type(exc).__name__}: {exc})."
                ) from exc
