"""What the query audit records cost: time per prediction through the real ASGI app with
APINODE_QUERY_LOG off and writing to a file, in one process, without the network.

``python -m bench.audit_cost [--calls 3000] [--rounds 5]`` from the repository root (PYTHONPATH
holding the root and services/apinode, as the Makefile sets it).

CPU time, not the wall clock: the process's (event loop and writer thread together) per
prediction, and the audit work alone on one thread. On a pod with one CPU the extra CPU per
prediction is the throughput cost. The modes alternate and each takes the best of its rounds
(the least disturbed, on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import time
from pathlib import Path

import orjson

from tests.apinode_proc import API_KEY, SCORING_DIR

PATH = "/public/api/v1/customer-scoring/high-spender/predict"


def _app(destination: str):
    from apinode.app import create_app
    from apinode.settings import load_settings

    env = {"APINODE_API_KEYS": API_KEY, "APINODE_ENRICHMENT": "bundled", "APINODE_QUERY_LOG": destination}
    app = create_app(load_settings(SCORING_DIR, env))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(app.runtime.start())
    app.query_log.start()
    return app, loop


def _caller(app, loop):
    token = base64.b64encode(f"{API_KEY}:".encode())
    headers = [(b"authorization", b"Basic " + token), (b"content-type", b"application/json"),
               (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    bodies = [orjson.dumps({"features": {"customer_id": f"C{n:07d}"}, "context": {"caller": "bench", "n": n}})
              for n in range(1, 2001)]
    sent: list = []
    state = {"n": 0}

    async def receive():
        state["n"] += 1
        return {"type": "http.request", "body": bodies[state["n"] % len(bodies)], "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": PATH, "headers": headers, "query_string": b""}

    def call():
        sent.clear()
        loop.run_until_complete(app(scope, receive, send))
        if sent[0]["status"] != 200:
            raise RuntimeError(sent)
    return call


def per_call_us(call, calls: int) -> float:
    """CPU microseconds of this process per call, the writer thread's included (process_time:
    unlike the wall clock, it does not count the time other jobs on the machine hold the core)."""
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def audit_work_us(count: int = 5000, repeats: int = 5) -> tuple[float, float]:
    """Microseconds of the audit work alone per query, best of ``repeats``: what the event loop
    adds (trace, record holder, the record rendered: built, redacted, serialized; the hand-off to
    the queue) and what the writer thread does per record (join its batch; the write itself is
    one system call per batch)."""
    from apinode import tracing
    from apinode.audit import Query, QueryLog, QueryLogSpec

    full = {"customer_id": "C0000042", "age": 41, "tenure_months": 30, "orders_12m": 7, "spend_12m": 812.5,
            "avg_basket": 116.1, "recency_days": 12, "distinct_categories": 4, "return_rate": 0.05, "gender": "F",
            "region": "wales", "campaign_status": "none", "birthdate": "1985-03-02", "signup_date": "2024-01-09"}
    result = {"prediction": "0", "probas": {"0": 0.93, "1": 0.07}, "ignored": False}
    spec = QueryLogSpec(redact=frozenset({"birthdate"}))
    header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    log = QueryLog("off", "customer-scoring")  # no thread: submit is timed as the hand-off alone
    log._thread = True  # noqa: SLF001 - let submit enqueue without a writer
    loop_side, writer = [], []
    for _ in range(repeats):
        started = time.thread_time()
        for _ in range(count):
            query = Query("predict", "high-spender", spec, time.time())
            query.trace = tracing.from_header(header)
            query.add({"customer_id": "C0000042"}, full, result, {"caller": "bench"})
            log.submit(query, 200, None, 0.0004)
        loop_side.append((time.thread_time() - started) / count * 1e6)
        queued = [log._queue.get_nowait() for _ in range(count)]
        started = time.thread_time()
        b"".join(queued).count(b"\n")  # the writer's batch: one bytes per query, records counted
        writer.append((time.thread_time() - started) / count * 1e6)
    return min(loop_side), min(writer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="audit-cost-") as folder:
        file = Path(folder) / "queries.jsonl"
        apps = {"file": _app(str(file)), "off": _app("off")}
        calls = {mode: _caller(*pair) for mode, pair in apps.items()}
        results: dict[str, list[float]] = {mode: [] for mode in calls}
        for call in calls.values():
            per_call_us(call, 300)  # warm-up
        for _ in range(args.rounds):
            for mode, call in calls.items():
                results[mode].append(per_call_us(call, args.calls))
        for app, _ in apps.values():
            app.query_log.close()
        written = len(file.read_text().splitlines())
    best = {mode: min(values) for mode, values in results.items()}
    print(f"{'mode':<6} {'CPU us/prediction':>21} {'vs off':>8}   all rounds")
    for mode, values in results.items():
        print(f"{mode:<6} {best[mode]:>21.1f} {best[mode] / best['off'] - 1:>+8.1%}   "
              + ", ".join(f"{v:.1f}" for v in values))
    print(f"records written: {written}")
    loop_side, writer = audit_work_us()
    print(f"audit work alone per query (best of 5): event loop {loop_side:.1f} us, writer thread {writer:.1f} us; "
          f"together {(loop_side + writer) / best['off']:.1%} of a prediction with the log off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
