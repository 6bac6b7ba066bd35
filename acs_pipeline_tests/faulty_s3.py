"""A fault-injecting HTTP proxy on loopback in front of the moto S3 server.

Point a :class:`~acs_pipeline.io.storage.Storage` at ``proxy.endpoint`` and tell the proxy which
requests to break: ``proxy.inject("slowdown", "/bucket/raw/", times=2)`` answers the first two
matching requests of each object with ``503 SlowDown``; every other request is forwarded to the
real server. Every request is logged, so tests count attempts (``proxy.count(...)``).

Faults: ``slowdown`` (503 SlowDown), ``error500`` (500 InternalError), ``reset`` (the real
response's headers and half its body, then the connection closes), ``stall`` (no answer for
``stall_s`` seconds, then the connection closes), ``denied`` (403 AccessDenied), ``expired``
(400 ExpiredToken), ``no_bucket`` (404 NoSuchBucket).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest

_ERRORS = {  # fault -> (HTTP status, S3 error code)
    "slowdown": (503, "SlowDown"),
    "error500": (500, "InternalError"),
    "denied": (403, "AccessDenied"),
    "expired": (400, "ExpiredToken"),
    "no_bucket": (404, "NoSuchBucket"),
}
FAULTS = (*_ERRORS, "reset", "stall")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
               "upgrade", "trailer"}


@dataclass
class Rule:
    """Break the first ``times`` requests of each object whose target contains ``match``."""

    fault: str
    match: str
    times: int
    method: str | None = "GET"
    seen: dict[str, int] = field(default_factory=dict)  # object path -> requests broken


@dataclass(frozen=True)
class Logged:
    method: str
    target: str  # unquoted path and query
    outcome: str  # "forwarded" or the fault


class FaultyS3Proxy:
    """A threaded proxy on 127.0.0.1 forwarding to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, stall_s: float = 2.0):
        parsed = urlparse(upstream)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the proxy forwards to loopback only, not {upstream}")
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.stall_s = stall_s
        self.rules: list[Rule] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"

    def start(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def inject(self, fault: str, match: str, times: int = 1, method: str | None = "GET") -> None:
        """Break the first ``times`` matching requests of each object (``method`` None: any)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self._lock:
            self.rules.append(Rule(fault, match, times, method))

    def clear(self) -> None:
        """No more faults (the log stays)."""
        with self._lock:
            self.rules.clear()

    def count(self, match: str = "", method: str | None = None, outcome: str | None = None
              ) -> int:
        """Logged requests whose target contains ``match`` (and of that method / outcome)."""
        with self._lock:
            return sum(1 for e in self.log if match in e.target
                       and method in (None, e.method) and outcome in (None, e.outcome))

    def _note(self, method: str, target: str, outcome: str) -> None:
        with self._lock:
            self.log.append(Logged(method, target, outcome))

    def _decide(self, method: str, target: str) -> str:
        path = target.partition("?")[0]
        with self._lock:
            fault = "forwarded"
            for rule in self.rules:
                if rule.method in (None, method) and rule.match in target \
                        and rule.seen.get(path, 0) < rule.times:
                    rule.seen[path] = rule.seen.get(path, 0) + 1
                    fault = rule.fault
                    break
            self.log.append(Logged(method, target, fault))
            return fault


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(proxy: FaultyS3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args) -> None:  # quiet
            pass

        def _serve(self) -> None:
            body = _read_body(self)
            fault = proxy._decide(self.command, unquote(self.path))
            if fault in _ERRORS:
                return self._error(*_ERRORS[fault])
            if fault == "stall":
                time.sleep(proxy.stall_s)
                return self._drop()
            try:
                status, headers, data = self._forward(body)
            except OSError as exc:  # the server went away: say so, as a gateway does
                proxy._note(self.command, unquote(self.path), f"upstream_error: {exc}")
                return self._error(502, "BadGateway")
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            length = headers_length(headers, data, self.command)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return None
            if fault == "reset":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return self._drop()
            self.wfile.write(data)
            return None

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            finally:
                conn.close()

        def _error(self, status: int, code: str) -> None:
            data = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>injected by the test proxy</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    return Handler


def headers_length(headers: list[tuple[str, str]], data: bytes, method: str) -> int:
    """The Content-Length to announce: the upstream's for HEAD, the body's otherwise."""
    if method == "HEAD":
        return next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    return len(data)


@pytest.fixture
def faulty_s3(s3_server: str) -> Iterator[FaultyS3Proxy]:
    """A fault-injecting proxy in front of the session's moto server, for one test."""
    proxy = FaultyS3Proxy(s3_server, stall_s=1.5).start()
    try:
        yield proxy
    finally:
        proxy.stop()
