"""The service-to-service HTTP client: the runtime's own (apinode/httpclient.py) against aiohttp's.

Two questions (issue 15): does each meet the hostile-upstream rules, and at what CPU cost per
call. A tiny upstream runs in a child process on 127.0.0.1 (so its CPU is not counted); the
clients run here on uvloop, as in the service. Prints one JSON document.
``python bench/client_micro.py --root REPO`` (needs aiohttp, see bench/requirements-peers.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

BODY = json.dumps(
    {"results": [{"data": {"customer_id": "C0000001", "birthdate": "1991-02-22", "gender": "F",
                           "region": "london", "household_size": 3}, "notFound": False}]}
).encode()
OTHER = BODY.replace(b"C0000001", b"C0000002")
CAP = 4 * 1024 * 1024


def _ok(body: bytes = BODY) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body


ANSWERS = {
    "honest": [_ok()],
    "extra-response": [_ok() + _ok(OTHER)],
    "negative-length": [b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n" + BODY],
    "junk-length": [b"HTTP/1.1 200 OK\r\ncontent-length: %dabc\r\n\r\n" % len(BODY) + BODY],
    "duplicate-length": [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-length: 5\r\n\r\n" % len(BODY) + BODY],
    "huge-length": [b"HTTP/1.1 200 OK\r\ncontent-length: 4000000000\r\n\r\n"] + [b"x" * 65536] * 500,
    "huge-chunked": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    + [b"10000\r\n" + b"x" * 65536 + b"\r\n"] * 500,
    "extra-response-later": [_ok(), ("later", _ok(OTHER))],
    "huge-head": [b"HTTP/1.1 200 OK\r\n"] + [b"x-pad: " + b"p" * 65529 + b"\r\n"] * 200,
}


def upstream(port_out, mode) -> None:
    """Answer every request on every connection with ANSWERS[mode.value]."""
    import uvloop

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""

        def late(self, data):
            if not self.transport.is_closing():
                self.transport.write(data)

        def data_received(self, data):
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, _, rest = self.buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    return
                self.buffer = rest[length:]
                for piece in ANSWERS[mode.value.decode()]:
                    if isinstance(piece, tuple):  # after the answer, while the connection is idle
                        asyncio.get_running_loop().call_later(0.05, self.late, piece[1])
                    else:
                        self.transport.write(piece)

    async def main():
        server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0)
        port_out.value = server.sockets[0].getsockname()[1]
        await server.serve_forever()

    uvloop.run(main())


class Ours:
    name = "apinode.httpclient"

    def __init__(self, url: str) -> None:
        from apinode.httpclient import HttpPool

        self.pool = HttpPool(url, {"Content-Type": "application/json"}, 64, 2.0, CAP)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        return await self.pool.post("/x/lookup", body)

    async def close(self) -> None:
        await self.pool.close()


class Aiohttp:
    """aiohttp's client used as carefully as we can: a body cap, a total timeout, keep-alive."""

    name = "aiohttp"

    def __init__(self, url: str) -> None:
        import aiohttp

        self.url = url + "/x/lookup"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=2.0),
            headers={"Content-Type": "application/json"},
            auto_decompress=False,
        )

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(self.url, data=body) as response:
            if response.content_length is not None and response.content_length > CAP:
                raise ValueError("declared body over the cap")
            chunks, size = [], 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > CAP:
                    raise ValueError("body over the cap")
                chunks.append(chunk)
            return response.status, b"".join(chunks)

    async def close(self) -> None:
        await self.session.close()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def cost(client_class, url: str, calls: int, concurrency: int) -> dict:
    client = client_class(url)
    body = json.dumps({"data": {"customer_id": "C0000001"}}).encode()
    for _ in range(200):
        await client.post(body)
    per_worker = calls // concurrency

    async def worker():
        for _ in range(per_worker):
            status, answer = await client.post(body)
            assert status == 200 and answer == BODY

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.close()
    done = per_worker * concurrency
    return {"cpu_us_per_call": round(cpu / done * 1e6, 1), "calls_per_s": round(done / wall)}


async def verdict(client_class, url: str, mode: str) -> str:
    """What the client made of two calls to an upstream in ``mode``: 'refused', 'ok' or 'WRONG ...'."""
    client = client_class(url)
    body = json.dumps({"data": {"customer_id": "C0000001"}}).encode()
    seen = []
    for _ in range(2):
        await asyncio.sleep(0.2)  # an unsolicited answer arrives while the connection is idle
        try:
            status, answer = await client.post(body)
            seen.append("ok" if (status, answer) == (200, BODY) else f"WRONG ({status}, {answer[:40]!r})")
        except Exception as error:  # any refusal counts, whatever its class
            seen.append(f"refused ({type(error).__name__})")
    await client.close()
    return "; ".join(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    sys.path.insert(0, str(args.root / "services" / "apinode"))
    import uvloop

    port, mode = multiprocessing.Value("i", 0), multiprocessing.Array("c", 32)
    report: dict = {"cost": {}, "hostile": {}}
    for name in ANSWERS:
        mode.value = name.encode()
        child = multiprocessing.Process(target=upstream, args=(port, mode), daemon=True)
        port.value = 0
        child.start()
        while port.value == 0:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port.value}"
        for client_class in (Ours, Aiohttp):
            if name == "honest":
                for concurrency in (1, 16):
                    figures = uvloop.run(cost(client_class, url, args.calls, concurrency))
                    report["cost"][f"{client_class.name} c={concurrency}"] = figures
            else:
                before = rss_mib()
                outcome = uvloop.run(verdict(client_class, url, name))
                grown = rss_mib() - before
                report["hostile"][f"{name} / {client_class.name}"] = (
                    outcome + (f"; peak RSS +{grown:.0f} MiB" if grown >= 1 else "")
                )
        child.terminate()
        child.join()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
