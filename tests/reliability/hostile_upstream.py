"""A fake customer-features on 127.0.0.1 that answers right, or misbehaves the way a broken or
malicious neighbour does. Runs its own event loop in a thread; ``mode`` switches its behaviour
between requests.

It answers the lookup and lookup-multi routes (single tables and `profile`) from the golden rows (read from the real
customer-features), so an honest answer is exactly what the real service would say.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

HONEST = "honest"
# A string that must never reach a caller of scoring: the upstream's own error text.
LEAK = "upstream-secret db at 192.0.2.10:5432"
HUGE_STREAM_BYTES = 256 * 1024 * 1024  # what a "huge" answer sends at most, so a bug cannot eat the box


def _response(body: bytes, status: str = "200 OK", headers: str | None = None) -> bytes:
    head = headers if headers is not None else f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


class HostileUpstream:
    """The fake service; ``url`` once started, ``mode`` settable from the test thread."""

    MODES = (
        HONEST,
        "extra-response-same-write",
        "extra-response-later",
        "negative-length",
        "junk-length",
        "duplicate-length",
        "huge-length",
        "no-length",
        "huge-chunked",
        "huge-head",
        "slow-drip",
        "truncated",
        "another-customer",
        "wrong-types",
        "missing-column",
        "error-with-internal-text",
        "not-http",
    )

    def __init__(self, lookups: dict[str, dict[str, Any]], ids: list[str]) -> None:
        self._lookups = lookups
        self._ids = ids
        self.mode = HONEST
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-upstream", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # Answers ------------------------------------------------------------------------------

    def _result(self, endpoint: str, cid: str) -> dict:
        """What the real service answers for ``cid``; ``profile`` is both tables in one row."""
        if endpoint != "profile":
            return json.loads(json.dumps(self._lookups[f"{endpoint}/{cid}"]))
        data = {}
        for table in ("demographics", "behavior"):
            data.update(self._lookups[f"{table}/{cid}"]["data"])
        return {"data": data, "notFound": False, "notFoundIn": []}

    def _results(self, endpoint: str, keys: list[str], mode: str) -> list[dict]:
        results = []
        for cid in keys:
            result = self._result(endpoint, cid)
            data = result["data"]
            if mode == "another-customer":
                other = self._ids[(self._ids.index(cid) + 1) % len(self._ids)]
                result = self._result(endpoint, other)
            elif mode == "wrong-types":
                for column, value in data.items():
                    if column != "customer_id" and not isinstance(value, str):
                        data[column] = str(value) + "x"  # "3x" where an integer is declared
                    elif column != "customer_id":
                        data[column] = 7  # a number where a string or date is declared
            elif mode == "missing-column":
                data.pop(next(c for c in data if c != "customer_id"))
            results.append(result)
        return results

    def _other_answer(self, endpoint: str, keys: list[str], multi: bool) -> bytes:
        """A well-formed answer to a request nobody made: other customers' rows."""
        others = [self._ids[(self._ids.index(cid) + 7) % len(self._ids)] for cid in keys]
        return _response(json.dumps({"results": self._results(endpoint, others, HONEST)}).encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
                )
                request = json.loads(await reader.readexactly(length))
                self.requests += 1
                endpoint, action = path.rstrip("/").split("/")[-2:]
                multi = action == "lookup-multi"
                keys = [item["data"]["customer_id"] for item in request["items"]] if multi else [
                    request["data"]["customer_id"]
                ]
                if not await self._answer(writer, self.mode, endpoint, keys, multi):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, mode: str, endpoint: str, keys, multi) -> bool:
        """Write this mode's answer; False when the connection is to be closed."""
        body = json.dumps({"results": self._results(endpoint, keys, mode)}).encode()
        honest = _response(body)
        if mode in (HONEST, "another-customer", "wrong-types", "missing-column"):
            writer.write(honest)
        elif mode == "extra-response-same-write":
            writer.write(honest + self._other_answer(endpoint, keys, multi))
        elif mode == "extra-response-later":
            writer.write(honest)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(self._other_answer(endpoint, keys, multi))
        elif mode == "negative-length":
            writer.write(_response(body, headers="content-type: application/json\r\ncontent-length: -1\r\n"))
        elif mode == "junk-length":
            writer.write(_response(body, headers=f"content-length: {len(body)}abc\r\n"))
        elif mode == "duplicate-length":
            writer.write(_response(body, headers=f"content-length: {len(body)}\r\ncontent-length: 5\r\n"))
        elif mode == "no-length":
            writer.write(_response(body, headers="content-type: application/json\r\nconnection: close\r\n"))
            await writer.drain()
            return False
        elif mode == "huge-length":
            writer.write(_response(b"", headers="content-length: 4000000000\r\n"))
            await self._stream(writer, b"x" * 65536)
            return False
        elif mode == "huge-chunked":
            writer.write(_response(b"", headers="transfer-encoding: chunked\r\n"))
            await self._stream(writer, b"10000\r\n" + b"x" * 65536 + b"\r\n")
            return False
        elif mode == "huge-head":
            writer.write(b"HTTP/1.1 200 OK\r\n")
            await self._stream(writer, b"x-pad: " + b"p" * 65529 + b"\r\n")
            return False
        elif mode == "slow-drip":
            writer.write(_response(b"", headers=f"content-length: {len(body)}\r\n"))
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        elif mode == "truncated":
            writer.write(honest[: len(honest) - len(body) // 2])
            await writer.drain()
            return False
        elif mode == "error-with-internal-text":
            page = f'{{"errorType": "InternalError", "message": "<html>{LEAK}</html>"}}'.encode()
            writer.write(_response(page, status="502 Bad Gateway"))
        elif mode == "not-http":
            writer.write(b"SSH-2.0-OpenSSH_9.6 " + LEAK.encode() + b"\r\n\r\n")
            await writer.drain()
            return False
        else:
            raise AssertionError(f"unknown mode {mode}")
        await writer.drain()
        return True

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, piece: bytes) -> None:
        """Send ``piece`` again and again, as fast as the reader takes it, up to HUGE_STREAM_BYTES."""
        sent = 0
        try:
            while sent < HUGE_STREAM_BYTES:
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
        except ConnectionError:
            pass
