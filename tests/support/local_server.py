"""A real HTTP(S) server on 127.0.0.1 for tests that talk to outside systems.

`LocalServer` is a threaded stdlib server with a random port, serving
configurable routes (status, headers, body, delays, trickling bytes, huge or
chunked bodies, redirects) and recording every request it saw. Tests reach it
through the `local_server` and `local_server_factory` fixtures of
tests/conftest.py, or use it as a context manager.

A route is a `Route` or a callable taking the `Seen` request and returning a
`Route`, for answers that depend on the request (or on how many came before).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["LocalServer", "Route", "Seen"]


@dataclass
class Route:
    """One canned answer."""

    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None  # default: application/json for dict/list bodies
    delay: float = 0.0  # seconds before the status line
    trickle_headers: float = 0.0  # seconds between bytes of the status line and headers
    trickle: float = 0.0  # seconds between bytes of the body
    content_length: bool = True  # without it the body ends when the connection closes
    chunked: bool = False
    repeat: int = 1  # the body, sent this many times (huge bodies)
    location: str | None = None  # a redirect target


@dataclass
class Seen:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def route(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def form(self) -> dict[str, str]:
        """The body as application/x-www-form-urlencoded fields."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early are part of the tests


class LocalServer:
    """A threaded HTTP server on 127.0.0.1; with `tls`, an HTTPS one."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route | Callable[[Seen], Route]] = {}
        self.seen: list[Seen] = []
        self.sni: list[str | None] = []
        self.httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port: int = self.httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, route: Route | Callable[[Seen], Route] | None = None, **kwargs: Any) -> None:
        self.routes[path] = route if route is not None else Route(**kwargs)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_PUT = do_PATCH = do_HEAD = do_DELETE = do_GET

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            server.seen.append(seen)
            route = server.routes.get(self.path.split("?", 1)[0])
            if callable(route):
                route = route(seen)
            if route is None:
                route = Route(status=404, body={"error": "no such route"})
            self.close_connection = True
            # Clients that give up early (caps, timeouts) hang up mid-answer.
            with contextlib.suppress(OSError):
                self._respond(route)

        def _respond(self, route: Route) -> None:
            body = route.body
            content_type = route.content_type
            if isinstance(body, dict | list):
                body = json.dumps(body).encode()
                content_type = content_type or "application/json"
            elif isinstance(body, str):
                body = body.encode()
            headers = {"Connection": "close", **route.headers}
            if content_type:
                headers["Content-Type"] = content_type
            if route.location:
                headers["Location"] = route.location
            if route.chunked:
                headers["Transfer-Encoding"] = "chunked"
            elif route.content_length:
                headers["Content-Length"] = str(len(body) * route.repeat)
            phrase = HTTPStatus(route.status).phrase if route.status in HTTPStatus._value2member_map_ else "X"
            head = f"HTTP/1.1 {route.status} {phrase}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            if route.delay:
                time.sleep(route.delay)
            self._write(head.encode(), route.trickle_headers)
            if self.command == "HEAD":
                return
            for _ in range(route.repeat):
                if route.chunked:
                    self._write(f"{len(body):x}\r\n".encode() + body + b"\r\n", route.trickle)
                else:
                    self._write(body, route.trickle)
            if route.chunked:
                self._write(b"0\r\n\r\n", 0)

        def _write(self, data: bytes, pause: float) -> None:
            if not pause:
                self.wfile.write(data)
                return
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                time.sleep(pause)

    return Handler
