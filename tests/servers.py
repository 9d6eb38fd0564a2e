"""Real servers on 127.0.0.1 for the remote-store tests: moto's S3 server, and a plain HTTP server with Range support.

Both count the requests they serve, by path, so a test can say "one download per shard per
node" from the server's side; the HTTP server also records how many GETs of a path it ever
answered at once. The HTTP server can also misbehave on request, as real ones do:
answer 500 or 503, drop the connection part-way through a body, answer slowly, or flip a byte
of what it sends.
"""

from __future__ import annotations

import collections
import email.utils
import http.server
import logging
import os
import threading
import time
from typing import Any

from werkzeug.serving import make_server


class S3Server:
    """moto's S3 server (the one s3fs's own tests use) in a thread, counting GET requests per object key."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.gets: collections.Counter[str] = collections.Counter()
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ, start_response):
            if environ["REQUEST_METHOD"] == "GET" and not environ.get("QUERY_STRING"):
                self.gets[environ["PATH_INFO"].lstrip("/")] += 1
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self.storage_options = {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}
        # Subprocesses find the server the standard way: the environment.
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


class Faults:
    """What the HTTP server does wrong, per path suffix (a shard's name): set by a test, read by the handler."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, list[int]] = {}  # answer these statuses to the next GETs, one each
        self.drop_after: dict[str, int] = {}  # close the connection after this many body bytes, once
        self.delay: dict[str, float] = {}  # sleep this long before each answer
        self.flip: dict[str, int] = {}  # flip the byte at this file offset in every answer

    def clear(self) -> None:
        with self.lock:
            self.statuses.clear(), self.drop_after.clear(), self.delay.clear(), self.flip.clear()

    def find(self, table: dict[str, Any], path: str) -> str | None:
        return next((key for key in table if path.endswith(key)), None)


class _Handler(http.server.SimpleHTTPRequestHandler):
    server_version = "TestRangeHTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _file(self) -> str | None:
        path = self.translate_path(self.path)
        return path if os.path.isfile(path) else None

    def _headers(self, path: str, status: int, start: int, end: int, size: int) -> None:
        stat = os.stat(path)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"')
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()

    def _range(self, size: int) -> tuple[int, int, int]:
        header = self.headers.get("Range")
        if not header or not header.startswith("bytes="):
            return 200, 0, size
        first, _, last = header[len("bytes=") :].partition("-")
        start = int(first) if first else size - int(last)
        end = min(int(last) + 1, size) if first and last else size
        return 206, start, end

    def do_HEAD(self) -> None:  # noqa: N802
        path = self._file()
        if path is None:
            return super().do_HEAD()
        size = os.path.getsize(path)
        self._headers(path, 200, 0, size, size)

    def do_GET(self) -> None:  # noqa: N802
        path = self._file()
        if path is None:
            return super().do_GET()  # folder listings, 404s
        faults: Faults = self.server.faults
        self.server.gets[self.path] += 1
        with self.server.flight_lock:
            self.server.in_flight[self.path] += 1
            self.server.most_in_flight[self.path] = max(self.server.most_in_flight[self.path], self.server.in_flight[self.path])
        try:
            self._answer(path, faults)
        finally:
            with self.server.flight_lock:
                self.server.in_flight[self.path] -= 1

    def _answer(self, path: str, faults: Faults) -> None:
        with faults.lock:
            key = faults.find(faults.delay, self.path)
            delay = faults.delay.get(key, 0.0) if key else 0.0
            key = faults.find(faults.statuses, self.path)
            status = faults.statuses[key].pop(0) if key and faults.statuses[key] else None
            key = faults.find(faults.drop_after, self.path)
            drop = faults.drop_after.pop(key) if key else None
            key = faults.find(faults.flip, self.path)
            flip = faults.flip.get(key) if key else None
        time.sleep(delay)
        if status is not None:
            self.send_error(status)
            return
        size = os.path.getsize(path)
        code, start, end = self._range(size)
        with open(path, "rb") as f:
            f.seek(start)
            body = bytearray(f.read(end - start))
        if flip is not None and start <= flip < end:
            body[flip - start] ^= 0xFF
        self._headers(path, code, start, end, size)
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the connection drops mid-body
            return
        self.wfile.write(body)


class HTTPServer:
    """A plain HTTP server for a folder, with Range requests, ETags and injectable faults."""

    def __init__(self, folder: str) -> None:
        handler = lambda *args, **kwargs: _Handler(*args, directory=folder, **kwargs)  # noqa: E731
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.faults = self.faults = Faults()
        self._server.gets = self.gets = collections.Counter()
        # GETs of a path being answered at once, and the most there ever were
        self._server.in_flight, self._server.flight_lock = collections.Counter(), threading.Lock()
        self._server.most_in_flight = self.most_in_flight = collections.Counter()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
