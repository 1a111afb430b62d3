"""The ASGI application: a small router over raw ASGI, auth, body limits, one error renderer."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import orjson

from . import tracing
from .audit import Query, QueryLog, QueryLogCollector, QueryLogSpec
from .auth import ApiKeys
from .docs import DocsPages
from .errors import (
    ApiError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from .examples import with_examples
from .handlers import LookupHandler, PredictionHandler, Timing
from .inline import NotNow
from .metrics import Metrics
from .openapi import openapi_document
from .runtime import Runtime
from .settings import Settings

log = logging.getLogger("apinode")
# Dataiku's API node sends DSS-API-Version on every answer (doc.dataiku.com/dss/api/13/apinode-user);
# the user API is version 1 (the /public/api/v1/ prefix).
API_VERSION = [(b"dss-api-version", b"1")]
_JSON = [(b"content-type", b"application/json"), *API_VERSION]
_PREFIX = "/public/api/v1/"


class _ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class _Route:
    """One API route: its handler method, metric label and the tables whose staleness it reports."""

    __slots__ = ("call", "now", "label", "tables", "refreshing", "endpoint", "kind", "audit", "generation")

    def __init__(self, call, label: str, tables: tuple[str, ...], audit=None, generation=None, now=None) -> None:
        self.call, self.label, self.tables = call, label, tables
        # The handler's method that answers without waiting (inline.py; None once started if it cannot).
        self.now = now
        self.refreshing: tuple = ()  # its sources that can go stale, known once started
        self.endpoint, _, self.kind = label.partition("/")
        self.audit = audit or QueryLogSpec()  # sampling and redaction of its query records
        self.generation = generation  # lookups: the service's; predictions: set by the dispatch


# A JSON body under the form type is what `curl --data '{...}'` sends, as in Dataiku's own samples.
_JSON_MEDIA = (b"application/json", b"application/x-www-form-urlencoded", b"text/plain", b"*/*", b"")


def _json_content_type(value: bytes) -> bool:
    media = value.split(b";", 1)[0].strip().lower()
    return media in _JSON_MEDIA or media.endswith(b"+json")


class ApiNodeApp:
    """Hosts one service definition."""

    def __init__(self, settings: Settings) -> None:
        definition = settings.definition
        self.settings = settings
        self.runtime = Runtime(definition, settings.env)
        self.metrics = Metrics(definition.id, self.runtime)
        self.query_log = QueryLog(settings.env.get("APINODE_QUERY_LOG") or "stdout", definition.id)
        self.metrics.registry.register(QueryLogCollector(definition.id, self.query_log))
        self._keys = ApiKeys(settings.api_keys)
        self._limits = definition.limits
        self._service = definition.id
        base = f"{_PREFIX}{definition.id}/"
        self._routes: dict[str, _Route] = {}
        for name, endpoint in definition.lookups.items():
            handler = LookupHandler(definition, endpoint, self.runtime)
            extra = (endpoint.query_log, definition.version)
            self._routes[f"{base}{name}/lookup"] = _Route(
                handler.one, f"{name}/lookup", handler.tables, *extra, now=handler.one_now
            )
            self._routes[f"{base}{name}/lookup-multi"] = _Route(
                handler.many, f"{name}/lookup-multi", handler.tables, *extra, now=handler.many_now
            )
        for name, endpoint in definition.predictions.items():
            handler = PredictionHandler(definition, endpoint, self.runtime)
            audit = endpoint.query_log
            self._routes[f"{base}{name}/predict"] = _Route(
                handler.one, f"{name}/predict", handler.tables, audit, now=handler.one_now
            )
            self._routes[f"{base}{name}/predict-multi"] = _Route(
                handler.many, f"{name}/predict-multi", handler.tables, audit
            )
        self._swagger = orjson.dumps(with_examples(openapi_document(definition), definition))
        self._gets = {
            "/isAlive": self._alive,
            "/healthz": self._alive,
            "/readyz": self._ready,
            "/metrics": self._metrics,
            f"{base}swagger": self._openapi,
        }
        # Raw request path -> inline route (inline.py), filled once started; read by the protocol.
        self.inline: dict[bytes, Callable] = {}
        self.docs = DocsPages(definition, self.runtime, settings.env)
        self._gets.update(self.docs.routes(base, _send_page))

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            route = self._routes.get(scope["path"])
            if route is not None:
                await self._api(route, scope, receive, send)
            else:
                await self._other(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _admit(self, route: _Route, query: Query, headers) -> None:
        """The checks before the body: ready, headers (auth, type, length), the trace; raises ApiError."""
        if not self.runtime.loaded:
            raise NotReady("the service is still loading its data and models")
        authorization = content_type = length = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"traceparent":
                query.trace = tracing.from_header(value)
        if query.trace is None:
            query.trace = tracing.from_header(None)
        query.recording = self.query_log.sampled(query.spec, query.trace, query.kind)
        query.key_id = self._keys.check(authorization)
        if content_type is not None and content_type != b"application/json" and not _json_content_type(
            content_type
        ):
            raise UnsupportedMediaType(
                f"unsupported content type {content_type.decode('latin-1')!r}",
                "send the body as JSON (Content-Type: application/json)",
            )
        limit = self._limits.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"body of {int(length)} bytes is over the limit of {limit}")

    @staticmethod
    def _parsed(body: bytes, query: Query) -> object:
        try:
            parsed = query.body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise MalformedRequest("the body is not valid JSON", f"the body is not valid JSON: {error}") from None
        return parsed

    @staticmethod
    def _stale(route: _Route) -> list:
        if route.refreshing:
            stale = [source.spec.name for source in route.refreshing if source.stale]
            if stale:
                return _JSON + [(b"x-apinode-stale-data", ",".join(stale).encode())]
        return _JSON

    @staticmethod
    def _refused(error: ApiError) -> tuple[int, bytes, str, list]:
        headers = _JSON
        if error.status == 405:
            headers = _JSON + [(b"allow", b"POST")]
        elif error.status == 413:  # the rest of the body may still be coming: do not reuse
            headers = _JSON + [(b"connection", b"close")]
        return error.status, orjson.dumps(error.body()), error.error_type, headers

    @staticmethod
    def _bug(path: str) -> tuple[int, bytes, str, list]:
        # A bug: answer JSON anyway, and leave the stack trace in the log.
        log.exception("unhandled error on %s", path)
        failure = ApiError("internal error", "an unexpected error occurred; see the server log")
        return 500, orjson.dumps(failure.body()), failure.error_type, _JSON

    def _done(self, route: _Route, query: Query, status: int, error_type, started_ns: int) -> None:
        seconds = (time.perf_counter_ns() - started_ns) / 1e9
        self.metrics.observe(route.label, status, seconds, error_type, query.generation or "")
        self._record(query, status, error_type, seconds)

    def answer_now(self, route: _Route, path: str, headers: list, body: bytes, write):
        """An inline route (inline.py): the ASGI path's answer, written with ``write(status, headers,
        body)``, and None; or, when the request has to wait, a coroutine that answers it."""
        if route.now is None:
            return self._answer_later(route, path, headers, body, write)
        started_ns = time.perf_counter_ns()
        query = self._query(route)
        error_type = None
        token = None
        try:
            self._admit(route, query, headers)
            token = tracing.current.set(query.trace)  # reset below: no task context of its own here
            timing = Timing(started_ns, time.perf_counter_ns())
            answer = route.now(self._parsed(body, query), timing, query)
            status, out, sent = 200, orjson.dumps(answer), self._stale(route)
        except ApiError as error:
            status, out, error_type, sent = self._refused(error)
        except NotNow:  # raised before anything was observable: answered from scratch by a task
            return self._answer_later(route, path, headers, body, write)
        except Exception:
            status, out, error_type, sent = self._bug(path)
        finally:
            if token is not None:
                tracing.current.reset(token)
        write(status, sent, out)
        self._done(route, query, status, error_type, started_ns)
        return None

    async def _answer_later(self, route: _Route, path: str, headers: list, body: bytes, write) -> None:
        """``answer_now`` for a request that waits (enrichment over HTTP, a worker thread), as a task."""
        started_ns = time.perf_counter_ns()
        query = self._query(route)
        try:
            self._admit(route, query, headers)
            tracing.current.set(query.trace)  # the task's own context
        except ApiError as error:
            status, out, error_type, sent = self._refused(error)
        else:
            status, out, error_type, sent = await self._call(route, path, query, started_ns, body)
        write(status, sent, out)
        self._done(route, query, status, error_type, started_ns)

    async def _call(self, route: _Route, path: str, query: Query, started_ns: int, body: bytes) -> tuple:
        """The route's answer to a received body, or its error's: (status, body, error type, headers)."""
        try:
            timing = Timing(started_ns, time.perf_counter_ns())
            answer = await route.call(self._parsed(body, query), timing, query)
            return 200, orjson.dumps(answer), None, self._stale(route)
        except ApiError as error:
            return self._refused(error)
        except Exception:
            return self._bug(path)

    @staticmethod
    def _query(route: _Route) -> Query:
        query = Query(route.kind, route.endpoint, route.audit, time.time())
        query.generation = route.generation
        return query

    async def _api(self, route: _Route, scope, receive, send) -> None:
        started_ns = time.perf_counter_ns()
        query = self._query(route)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed here; use POST")
            self._admit(route, query, scope["headers"])
            tracing.current.set(query.trace)
            # A body read at once (the usual case) needs no loop: see _body for the others.
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body") or message["type"] != "http.request" or len(body) > self._limits.max_body_bytes:
                body = await self._body(receive, message)
        except ApiError as error:
            status, out, error_type, headers = self._refused(error)
        except _ClientGone:
            seconds = (time.perf_counter_ns() - started_ns) / 1e9
            self.metrics.observe(route.label, 499, seconds, "ClientGone", query.generation or "")
            self._record(query, 499, "ClientGone", seconds)
            return
        except Exception:
            status, out, error_type, headers = self._bug(scope["path"])
        else:
            status, out, error_type, headers = await self._call(route, scope["path"], query, started_ns, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + [(b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})
        self._done(route, query, status, error_type, started_ns)

    def _record(self, query: Query, status: int, error_type: str | None, seconds: float) -> None:
        if query.trace is None:  # refused before its headers were read (405, 503 while loading)
            query.trace = tracing.from_header(None)
            query.recording = self.query_log.sampled(query.spec, query.trace, query.kind)
        if query.recording:
            self.query_log.submit(query, status, error_type, seconds)

    async def _body(self, receive, message: dict) -> bytes:
        """The whole body from its first message on (its Content-Length, if any, was checked)."""
        limit = self._limits.max_body_bytes
        # A body that never completes is cut by the protocol's read deadline (protocol.py):
        # the connection closes and receive() answers http.disconnect.
        chunks, size = [], 0
        while True:
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            message = await receive()

    async def _other(self, scope, send) -> None:
        started = time.perf_counter()
        path = scope["path"]
        handler = self._gets.get(path)
        if handler is None:
            error = NotFound(*self._unknown(path))
            await _send(send, error.status, orjson.dumps(error.body()))
            self.metrics.observe("unknown", error.status, time.perf_counter() - started, error.error_type)
            return
        if scope["method"] not in ("GET", "HEAD"):
            error = MethodNotAllowed(f"{scope['method']} is not allowed here; use GET")
            await _send(send, error.status, orjson.dumps(error.body()), extra=[(b"allow", b"GET")])
            return
        await handler(send)

    def _unknown(self, path: str) -> tuple[str, str]:
        if not path.startswith(_PREFIX):
            return f"no route {path}", f"no route {path}; the API is under {_PREFIX}{self._service}/"
        service, _, rest = path[len(_PREFIX) :].partition("/")
        if service != self._service:
            return f"unknown service {service!r}", f"this server hosts the service {self._service!r}"
        endpoint, _, action = rest.partition("/")
        known = sorted({route.label.split("/")[0] for route in self._routes.values()})
        if endpoint not in known:
            return (
                f"unknown endpoint {endpoint!r}",
                f"service {self._service} has endpoints {', '.join(known)}",
            )
        return (
            f"unknown action {action!r} for endpoint {endpoint!r}",
            "see the service's swagger for its routes",
        )

    async def _alive(self, send) -> None:
        await _send(send, 200, b'{"status":"alive"}')

    async def _ready(self, send) -> None:
        runtime = self.runtime
        if runtime.is_ready():
            await _send(send, 200, b'{"status":"ready"}')
            return
        if runtime.draining:
            reason = "draining: the server is shutting down"
        else:
            waiting = [name for name, source in runtime.sources.items() if not source.ready]
            reason = f"loading: waiting for {', '.join(waiting) or 'models'}"
        await _send(send, 503, orjson.dumps(NotReady("not ready", reason).body()))

    async def _metrics(self, send) -> None:
        await _send(
            send, 200, self.metrics.render(), content_type=b"text/plain; version=0.0.4; charset=utf-8"
        )

    async def _openapi(self, send) -> None:
        await _send(send, 200, self._swagger)

    def started(self) -> None:
        """The runtime has started: what each route can tell only now (stale sources, inline or not)."""
        for path, route in self._routes.items():
            route.refreshing = self.runtime.refreshing(route.tables)
            if route.now is not None and not route.now.__self__.in_memory():
                route.now = None  # it always waits: answered by a task
            self.inline[path.encode()] = functools.partial(self.answer_now, route, path)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.query_log.start()
                    await self.runtime.start()
                    self.started()
                except Exception as error:  # any load failure must stop the server with its reason
                    log.error("start-up failed: %s", error)
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                self.query_log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send, status: int, body: bytes, content_type: bytes = b"application/json", extra=()) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *API_VERSION,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_page(send, status: int, body: bytes, content_type: bytes, extra: list) -> None:
    await _send(send, status, body, content_type=content_type, extra=[(b"x-content-type-options", b"nosniff"), *extra])


def create_app(settings: Settings) -> ApiNodeApp:
    """The ASGI app for one service; data and models load in its lifespan start-up."""
    return ApiNodeApp(settings)
