"""A local S3 server that serves at a fixed bandwidth: moto's S3 app behind a token-bucket WSGI middleware, in its own process.

The bucket is the one link of a node: every response body of every connection takes its bytes
from one token bucket, so two downloads at once share the bandwidth as on a real NIC. Each
request can also wait a fixed delay before it is answered, to mimic an object store's round
trip. The server runs in a spawned process, so that serving never competes with the reader for
the GIL; it is steered, and its counters read, over HTTP at ``/__throttle__`` (from any
process: the job interpreters read the counters around each epoch).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
import urllib.request
from typing import Any, Callable, Iterable

CONTROL = "/__throttle__"
# Pieces a response body is cut into before each takes its tokens: small enough that two
# connections interleave finely, large enough that pacing costs little CPU.
PIECE = 64 << 10
# What the bucket may hold when idle: a burst of at most this many seconds of the bandwidth.
BURST_SECONDS = 0.005
# moto keeps objects larger than its buffer size in temporary files, and reads the whole object
# for every ranged GET: in memory, that read is a copy, not a disk read.
MOTO_BUFFER_BYTES = 1 << 30


class TokenBucket:
    """``rate`` bytes/s shared by every thread; ``rate`` 0: no limit."""

    def __init__(self, rate: float = 0.0) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = 0.0  # when the link is free again, on the monotonic clock

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes may go out (first come, first served)."""
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - BURST_SECONDS)
            self._next = start + n / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)


class Throttle:
    """WSGI middleware: a per-request delay before the app answers, and every body byte through one TokenBucket.

    ``GET /__throttle__`` answers the counters (bytes sent, requests, the server's CPU seconds);
    ``GET /__throttle__?bandwidth=B&delay=D`` sets bytes/s (0: no limit) and seconds per request;
    ``GET /__throttle__/log?since=T`` answers the requests done since ``T`` (``time.monotonic()``,
    which on Linux every process reads alike), each ``[method, path, arrived, first byte, done, bytes]``.
    """

    def __init__(self, app: Callable, bandwidth: float = 0.0, delay: float = 0.0) -> None:
        self.app = app
        self.bucket = TokenBucket(bandwidth)
        self.delay = delay
        self.sent = 0
        self.requests = 0
        # (method, path, arrived, first body byte out or None, done, body bytes), on the system-wide monotonic clock
        self.log: list[tuple[str, str, float, float | None, float, int]] = []
        self._count = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(CONTROL):
            return self._control(environ, start_response)
        with self._count:
            self.requests += 1
        arrived = time.monotonic()
        if self.delay > 0:
            time.sleep(self.delay)
        entry = [environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), arrived]
        return self._paced(self.app(environ, start_response), entry)

    def _paced(self, body: Iterable[bytes], entry: list[Any]) -> Iterable[bytes]:
        sent, first = 0, None
        try:
            for chunk in body:
                view = memoryview(chunk)
                for start in range(0, len(view), PIECE):
                    piece = view[start : start + PIECE]
                    self.bucket.take(len(piece))
                    first = time.monotonic() if first is None else first
                    sent += len(piece)
                    with self._count:
                        self.sent += len(piece)
                    yield bytes(piece)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            with self._count:
                self.log.append((*entry, first, time.monotonic(), sent))

    def _control(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        from urllib.parse import parse_qs

        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if "bandwidth" in query:
            self.bucket.rate = float(query["bandwidth"])
        if "delay" in query:
            self.delay = float(query["delay"])
        if environ.get("PATH_INFO") == CONTROL + "/log":
            since = float(query.get("since", 0))
            with self._count:
                body = json.dumps([e for e in self.log if e[4] >= since]).encode()
        else:
            body = json.dumps(self.stats()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def stats(self) -> dict[str, float]:
        return {
            "bytes": self.sent,
            "requests": self.requests,
            "cpu_seconds": time.process_time(),
            "bandwidth": self.bucket.rate,
            "delay": self.delay,
        }


def serve(port_out: Any, bandwidth: float, delay: float) -> None:
    """The server process: moto's S3 app (as s3fs's own tests run it), throttled, until killed."""
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(MOTO_BUFFER_BYTES))
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = Throttle(DomainDispatcherApplication(create_backend_app), bandwidth, delay)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    port_out.send(server.server_port)
    port_out.close()
    server.serve_forever()


class ThrottledS3Server:
    """The parent's handle on the server process: its endpoint, its settings, its counters.

    Args:
        bandwidth: bytes/s of the link (0: no limit).
        delay: seconds before each request is answered.
    """

    def __init__(self, bandwidth: float = 0.0, delay: float = 0.0) -> None:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=serve, args=(send, bandwidth, delay), daemon=True, name="throttled-s3")
        self.process.start()
        send.close()
        if not receive.poll(120):
            self.process.kill()
            raise RuntimeError("The throttled S3 server did not start within 120 s.")
        self.endpoint = f"http://127.0.0.1:{receive.recv()}"
        self.storage_options = {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}
        # What every client library reads: boto3 (LitData), S3_ENDPOINT_URL (Mosaic Streaming).
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",  # obstore (LitData's downloader) refuses plain HTTP otherwise
        }

    def set(self, bandwidth: float | None = None, delay: float | None = None) -> dict[str, float]:
        """Change the bandwidth (bytes/s, 0: no limit) and/or the per-request delay (s); returns the counters."""
        query = "&".join(f"{k}={v}" for k, v in (("bandwidth", bandwidth), ("delay", delay)) if v is not None)
        return server_stats(self.endpoint, query)

    def stats(self) -> dict[str, float]:
        return server_stats(self.endpoint)

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)

    def stop(self) -> None:
        self.process.kill()
        self.process.join(10)


def server_stats(endpoint: str, query: str = "") -> dict[str, float]:
    """The server's counters (and settings), read over HTTP: bytes sent, requests, its CPU seconds."""
    with urllib.request.urlopen(f"{endpoint}{CONTROL}{'?' + query if query else ''}", timeout=30) as answer:
        return json.loads(answer.read())


def server_log(endpoint: str, since: float) -> list[list[Any]]:
    """The requests the server finished since ``since`` (``time.monotonic()``), as ``Throttle`` logs them."""
    with urllib.request.urlopen(f"{endpoint}{CONTROL}/log?since={since}", timeout=30) as answer:
        return json.loads(answer.read())
