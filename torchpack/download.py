"""Download one remote object to a local file: in ranged chunks, each retried with backoff, resumed where a dropped connection left off."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from torchpack.remote import RemoteShard

__all__ = ["RemoteReadError", "download"]

CHUNK_BYTES = 16 << 20
RETRIES = 5
BACKOFF_SECONDS = 0.25


class RemoteReadError(OSError):
    """A remote object could not be read, after retries; the message names it and the last error."""


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
) -> None:
    """Write the bytes of ``shard`` to ``dest`` and make them durable.

    Each chunk is one ranged request. A failed or short one (a dropped connection, a 500 or
    503, a timeout from the client's settings) is asked again from the byte it stopped at,
    after ``backoff`` seconds (default :data:`BACKOFF_SECONDS`), doubling; ``retries`` failures
    in a row (default :data:`RETRIES`) end the download.

    Raises:
        RemoteReadError: the object could not be read (the message names it and the last error).
        FileNotFoundError, PermissionError: the object is gone or refused, at once.
        OSError: writing ``dest`` failed (a full disk, say).
    """
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    offset, failures = 0, 0
    with open(dest, "wb") as out:
        while offset < shard.size:
            end = min(offset + CHUNK_BYTES, shard.size)
            try:
                data = fs.cat_file(shard.path, start=offset, end=end)
                if len(data) != end - offset:
                    raise OSError(f"the server sent {len(data)} bytes for a request of {end - offset}")
            except Exception as exc:
                failures += 1
                if not _retryable(exc):
                    raise
                if failures > retries:
                    raise RemoteReadError(
                        f"Could not download {shard.url}: {failures} attempts in a row failed at byte {offset} of "
                        f"{shard.size} (the last: {type(exc).__name__}: {exc})."
                    ) from exc
                time.sleep(min(backoff * 2 ** (failures - 1), 8.0))
                continue
            out.write(data)
            offset, failures = end, 0
            if progress is not None:
                progress(len(data))
        out.flush()
        os.fsync(out.fileno())
