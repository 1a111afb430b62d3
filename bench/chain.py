"""The peers' scoring chain as a user builds it: Feast lookup, then MLflow ``/invocations``.

A small asyncio client (keep-alive HTTP/1.1 over 127.0.0.1, N workers, bounded
time) that measures the whole chain per request. Run pinned to the load core:
``python -m bench.chain --feast URL --mlflow URL --concurrency N --seconds S``.
It prints one JSON line with the same figures as the wrk runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from bench.peers import MODEL_FEATURES, feast_refs_for_model

AS_OF = (2026, 6, 30)


def months_since(iso_date: str) -> int:
    """Whole months from an ISO date to AS_OF (the same rule as apinode.transforms.months_since)."""
    year, month, day = int(iso_date[:4]), int(iso_date[5:7]), int(iso_date[8:10])
    whole = (AS_OF[0] * 12 + AS_OF[1]) - (year * 12 + month)
    return whole - (1 if day > AS_OF[2] else 0)


class Connection:
    """One keep-alive HTTP/1.1 connection to a 127.0.0.1 server."""

    def __init__(self, url: str) -> None:
        host_port, _, path = url.split("://", 1)[1].partition("/")
        self.host, port = host_port.split(":")
        if self.host != "127.0.0.1":
            raise ValueError(f"load only goes to 127.0.0.1, not {self.host}")
        self.port, self.path = int(port), "/" + path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        parts = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                await self.reader.readline()
                return status, b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()


def model_row(feast_answer: dict) -> list:
    """Feast's answer (demographics + behavior refs) to one MLflow row in MODEL_FEATURES order."""
    names = feast_answer["metadata"]["feature_names"]
    values = {name: result["values"][0] for name, result in zip(names, feast_answer["results"])}
    values["age"] = months_since(values.pop("birthdate")) // 12
    values["tenure_months"] = months_since(values.pop("signup_date"))
    return [values[name] for name in MODEL_FEATURES]


async def _worker(feast_url: str, mlflow_url: str, customers: int, deadline: float, seed: int,
                  latencies: list[float], errors: list[int]) -> None:
    feast, mlflow = Connection(feast_url), Connection(mlflow_url)
    refs = feast_refs_for_model()
    draw = random.Random(seed)
    while time.perf_counter() < deadline:
        customer = f"C{draw.randint(1, customers):07d}"
        started = time.perf_counter()
        try:
            status, body = await feast.post(json.dumps(
                {"features": refs, "entities": {"customer_id": [customer]}}).encode())
            if status != 200:
                raise RuntimeError(f"feast {status}: {body[:200]!r}")
            row = model_row(json.loads(body))
            status, body = await mlflow.post(json.dumps(
                {"dataframe_split": {"columns": list(MODEL_FEATURES), "data": [row]}}).encode())
            if status != 200:
                raise RuntimeError(f"mlflow {status}: {body[:200]!r}")
            json.loads(body)["predictions"]
        except (OSError, RuntimeError, KeyError, ValueError, asyncio.IncompleteReadError) as error:
            errors.append(1)
            if len(errors) == 1:
                print(f"chain error: {error}", flush=True)
            feast, mlflow = Connection(feast_url), Connection(mlflow_url)
            continue
        latencies.append(time.perf_counter() - started)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def run_chain(feast_url: str, mlflow_url: str, concurrency: int, seconds: float, customers: int) -> dict:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(feast_url, mlflow_url, customers, deadline, 42 + n, latencies, errors)
                           for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency, "requests": len(latencies), "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(latencies, 0.50) * 1000, "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000, "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feast", required=True, help="http://127.0.0.1:PORT/get-online-features")
    parser.add_argument("--mlflow", required=True, help="http://127.0.0.1:PORT/invocations")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    result = asyncio.run(run_chain(args.feast, args.mlflow, args.concurrency, min(args.seconds, 60.0),
                                   args.customers))
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
