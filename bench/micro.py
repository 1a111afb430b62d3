"""Where a request's CPU time goes, measured in-process without the network (project venv).

Hands a raw HTTP request to each service's server protocol (the runtime's, with its inline
answers, and uvicorn's for the bare reference) on an in-memory transport, calls the ASGI apps
directly with an in-memory request, then the pieces one by one (index, row, validation, enrichment, model,
JSON). Prints one JSON line: microseconds per call, best of a few repeats.
``python bench/micro.py --root REPO``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path


def per_call_us(function, calls: int, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - started) / calls)
    return round(best * 1e6, 2)


def asgi_call(app, path: str, body: bytes, headers: list[tuple[bytes, bytes]]):
    """A function that runs one POST through ``app`` on a private event loop."""
    loop = asyncio.new_event_loop()
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    def call():
        sent.clear()
        loop.run_until_complete(app(scope, receive, send))
        if sent[0].get("status") != 200:
            raise RuntimeError(f"{path}: {sent}")
    return call


class _Transport:
    """What the server protocol writes to, kept in memory (the socket left out)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def set_protocol(self, protocol) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def served_us(app, protocol_class, request: bytes, calls: int, repeats: int = 7) -> float:
    """µs per request handed raw to the server protocol the service runs with (``protocol_class``:
    the runtime's, or uvicorn's for the bare reference) on one keep-alive connection, the event loop
    running meanwhile as it does when serving (turned until each answer is written): the served
    path without the socket, the same way for both. Best of ``repeats``."""
    import uvloop
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = Config(app, http=protocol_class, lifespan="off", access_log=False, log_level="critical")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = _Transport()
    protocol.connection_made(transport)
    writes, feed, idle = transport.writes, protocol.data_received, asyncio.sleep

    async def run(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            writes.clear()
            feed(request)
            while not writes:
                await idle(0)
        elapsed = time.perf_counter() - started
        if not writes[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(writes[0][:300])
        return elapsed

    loop.run_until_complete(run(max(1, calls // 10)))  # warm
    best = min(loop.run_until_complete(run(calls)) for _ in range(repeats))
    loop.close()
    return round(best / calls * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    root = args.root
    sys.path[:0] = [str(root / "services" / "apinode"), str(root / "bench")]
    import orjson
    from apinode.app import create_app
    from apinode.settings import load_settings
    from bare import Bare

    env = {"APINODE_API_KEYS": "bench-key", "APINODE_ENRICHMENT": "bundled"}
    scoring = create_app(load_settings(root / "services" / "customer-scoring", env))
    features = create_app(load_settings(root / "services" / "customer-features", env))
    setup = asyncio.new_event_loop()
    setup.run_until_complete(scoring.runtime.start())
    setup.run_until_complete(features.runtime.start())
    bare = Bare(root / "services" / "customer-scoring" / "data",
                root / "services" / "customer-scoring" / "model" / "high-spender.onnx")
    auth = [(b"authorization", b"Bearer bench-key"), (b"content-type", b"application/json")]
    lookup_body = b'{"data":{"customer_id":"C0000042"}}'
    score_body = b'{"features":{"customer_id":"C0000042"}}'
    n = args.calls
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from apinode.protocol import guarded_protocol

    def raw(path: str, body: bytes, headers: bytes) -> bytes:
        return b"POST %s HTTP/1.1\r\nHost: bench\r\n%sContent-Length: %d\r\n\r\n%s" % (
            path.encode(), headers, len(body), body)

    ours_head = b"Authorization: Bearer bench-key\r\nContent-Type: application/json\r\n"
    bare_head = b"Content-Type: application/json\r\n"
    for app in (features, scoring):
        app.started()  # its inline routes, as its lifespan fills them
    served = {
        "served_lookup_us": (features, "/public/api/v1/customer-features/demographics/lookup", lookup_body, ours_head),
        "served_bare_lookup_us": (bare, "/lookup", lookup_body, bare_head),
        "served_score_us": (scoring, "/public/api/v1/customer-scoring/high-spender/predict", score_body, ours_head),
        "served_bare_score_us": (bare, "/score", score_body, bare_head),
    }
    figures = {}
    for key, (app, path, body, head) in served.items():
        protocol = HttpToolsProtocol if app is bare else guarded_protocol(
            app.settings.definition.limits, app.inline)
        figures[key] = served_us(app, protocol, raw(path, body, head), args.calls)
    figures |= {
        "app_lookup_us": per_call_us(asgi_call(features, "/public/api/v1/customer-features/demographics/lookup",
                                               lookup_body, auth), n),
        "bare_lookup_us": per_call_us(asgi_call(bare, "/lookup", lookup_body, []), n),
        "app_score_us": per_call_us(asgi_call(scoring, "/public/api/v1/customer-scoring/high-spender/predict",
                                              score_body, auth), n),
        "bare_score_us": per_call_us(asgi_call(bare, "/score", score_body, []), n),
    }
    runtime = scoring.runtime
    table = runtime.sources["demographics"].table
    handler_features = {"customer_id": "C0000042"}
    model, enricher = runtime.models["high-spender"], runtime.enrichers["high-spender"]
    complete_row = dict(handler_features)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(enricher.complete([complete_row]))
    answer = {"results": [{"data": table.row(41), "notFound": False}]}
    feed_row = {name: complete_row[name] for name, _ in model.inputs}
    # The single-row paths the handlers take, where the runtime has them.
    predict = (lambda: model.predict_one(feed_row)) if hasattr(model, "predict_one") else (
        lambda: model.predict([feed_row]))
    if hasattr(enricher, "complete_one"):
        def enrich():
            loop.run_until_complete(enricher.complete_one(dict(handler_features)))
    else:
        def enrich():
            loop.run_until_complete(enricher.complete([dict(handler_features)]))
    figures.update({
        "index_rows_us": per_call_us(lambda: table.rows("C0000042"), n * 10),
        "table_row_us": per_call_us(lambda: table.row(41), n * 10),
        "enrich_complete_us": per_call_us(enrich, n),
        "model_predict_us": per_call_us(predict, n),
        "bare_session_run_us": per_call_us(lambda: bare.score(score_body), n),
        "orjson_dumps_lookup_us": per_call_us(lambda: orjson.dumps(answer), n * 10),
        "json_dumps_lookup_us": per_call_us(lambda: json.dumps(answer).encode(), n * 10),
        "orjson_loads_request_us": per_call_us(lambda: orjson.loads(score_body), n * 10),
        "json_loads_request_us": per_call_us(lambda: json.loads(score_body), n * 10),
    })
    figures.update(trace_costs(n))
    figures.update(open_findings(features, n))
    print("MICRO " + json.dumps(figures), flush=True)


def open_findings(app, n: int) -> dict:
    """The two per-request costs bench/optimizations.md listed as open, before and after the change:
    metrics through prometheus_client's locked Counter/Histogram against the runtime's own, and read
    deadlines as two uvloop timers per request against a stamped deadline swept periodically."""
    import uvloop
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from apinode.metrics import _BUCKETS

    registry = CollectorRegistry()
    count = Counter("r", "r", ["service", "endpoint", "status"], registry=registry).labels("s", "e", "200").inc
    latency = Histogram("d", "d", ["service", "endpoint"], buckets=_BUCKETS, registry=registry).labels("s", "e").observe

    def locked() -> None:
        count()
        latency(0.0003)

    loop = uvloop.new_event_loop()
    armed: dict = {}
    late = lambda: None  # noqa: E731

    def timers() -> None:  # on_message_begin and on_headers_complete arm, on_message_complete cancels
        first = loop.call_later(5.0, late)
        first.cancel()
        second = loop.call_later(10.0, late)
        second.cancel()

    def stamps() -> None:  # the same three steps with a stamped deadline
        key = stamps
        armed[key] = loop.time() + 5.0
        armed[key] = loop.time() + 10.0
        armed.pop(key, None)

    figures = {
        "metrics_observe_us": per_call_us(lambda: app.metrics.observe("demographics/lookup", 200, 0.0003), n * 10),
        "prometheus_observe_us": per_call_us(locked, n * 10),
        "deadline_timers_us": per_call_us(timers, n * 10),
        "deadline_stamps_us": per_call_us(stamps, n * 10),
    }
    loop.close()
    return figures


def trace_costs(n: int) -> dict:
    """What carrying W3C trace context across the hop costs one two-hop score, where the runtime has
    it: scoring continues the caller's trace and hands it on, customer-features continues it."""
    try:
        from apinode import tracing
    except ImportError:
        return {}
    header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    def hop() -> None:
        trace = tracing.from_header(header)
        token = tracing.current.set(trace)
        sent = tracing.outgoing_headers()
        tracing.current.reset(token)
        tracing.from_header(sent.split(b":", 1)[1].strip())

    try:
        hop()
    except Exception as error:  # an API other than the one measured here: say so, do not guess
        return {"trace_error": f"{type(error).__name__}: {error}"}
    return {"trace_hop_us": per_call_us(hop, n * 10)}


if __name__ == "__main__":
    main()
