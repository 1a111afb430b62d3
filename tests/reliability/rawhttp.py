"""Raw HTTP/1.1 over a socket, for what a normal client will not do: send half a request and wait.

Used by the drain test (a request accepted before SIGTERM whose body arrives after it) and by
the hostile-input tests (slowloris-style headers and bodies, lying Content-Length).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    """A parsed answer, or what happened instead (closed, timed out)."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    closed_without_answer: bool = False
    timed_out: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    path: str,
    body: bytes,
    api_key: str | None,
    *,
    host: str = "127.0.0.1",
    content_type: str = "application/json",
    content_length: int | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[bytes, bytes]:
    """(head, body) of a POST; ``content_length`` may lie on purpose."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body) if content_length is None else content_length}",
    ]
    if api_key:
        lines.append(f"Authorization: Bearer {api_key}")
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, timeout: float) -> RawResponse:
    """Read one answer within ``timeout`` seconds (Content-Length or chunked or until close)."""
    deadline = time.monotonic() + timeout
    data = b""

    def more() -> bytes | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            return sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return None
        except (ConnectionResetError, BrokenPipeError):
            return b""

    while b"\r\n\r\n" not in data:
        chunk = more()
        if chunk is None:
            return RawResponse(None, {}, data, timed_out=True)
        if not chunk:
            return RawResponse(None, {}, data, closed_without_answer=True)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = more()
            if not chunk:
                return RawResponse(status, headers, rest, timed_out=chunk is None)
            rest += chunk
        return RawResponse(status, headers, rest[:length])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = more()
            if not chunk:
                return RawResponse(status, headers, rest, timed_out=chunk is None)
            rest += chunk
        return RawResponse(status, headers, _dechunk(rest))
    while True:
        chunk = more()
        if not chunk:
            return RawResponse(status, headers, rest, timed_out=chunk is None)
        rest += chunk


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body
