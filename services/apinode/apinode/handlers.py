"""Endpoint handlers: take a parsed body, delegate to tables, enricher and model, return the answer."""

from __future__ import annotations

import asyncio
import time

from .definition import LookupEndpoint, PredictionEndpoint, ServiceDefinition
from .errors import (
    ApiError,
    InvalidFeatures,
    MalformedRequest,
    MissingLookupKey,
    PayloadTooLarge,
    RecordNotFound,
    SeveralMatches,
)
from .audit import NO_QUERY
from .explanations import InvalidExplanations, request_settings
from .features import FeatureValidator
from .generations import Dispatcher
from .inline import NotNow
from .runtime import Runtime

_now = time.perf_counter_ns
# Explanations up to this many model rows (a tree ensemble's ICE of a record or two, about 0.2 ms
# each) run on the event loop: a thread hop would cost about as much as the work.
_INLINE_ROWS = 128


class Timing:
    """Dataiku's ``timing`` object: where a request's time went, in microseconds.

    wait: receiving the body; preProcessing: parsing and validating it; enrich: lookups and
    derived features; preparation: building the model's input arrays; prediction: the model run
    (explanations included); postProcessing: shaping the answer.
    """

    __slots__ = ("marks", "last")

    KEYS = ("preProcessing", "wait", "enrich", "preparation", "prediction", "postProcessing")

    def __init__(self, started_ns: int, body_received_ns: int) -> None:
        self.marks = dict.fromkeys(self.KEYS, 0)
        self.marks["wait"] = (body_received_ns - started_ns) // 1000
        self.last = body_received_ns

    def lap(self, key: str) -> None:
        now = _now()
        self.marks[key] += (now - self.last) // 1000
        self.last = now

    def done(self) -> dict[str, int]:
        self.lap("postProcessing")
        return self.marks


def api_context(definition: ServiceDefinition, endpoint: str) -> dict[str, str]:
    """Dataiku's ``apiContext``: which service, endpoint and generation answered."""
    return {"serviceId": definition.id, "endpointId": endpoint, "serviceGeneration": definition.version}


def _items(body: object, max_items: int, field: str) -> list:
    if type(body) is not dict:
        raise MalformedRequest("the body must be a JSON object")
    items = body.get("items")
    if type(items) is not list:
        raise MalformedRequest("'items' must be an array", 'the body must be {"items": [...]}')
    if len(items) > max_items:
        raise PayloadTooLarge(
            f"too many items: {len(items)} > {max_items}",
            f"a batch holds at most {max_items} items; split it",
        )
    for i, item in enumerate(items):
        if type(item) is not dict or field not in item:
            raise MalformedRequest(f"items[{i}] must be an object with {field!r}")
        _optional_object(item, "context", f"items[{i}].context")
    return items


def _optional_object(body: dict, key: str, where: str) -> None:
    """``context`` (logged by Dataiku, not used) and the like: absent, null or an object."""
    value = body.get(key)
    if value is not None and type(value) is not dict:
        raise MalformedRequest(f"{where} must be a JSON object")


def _dispatch(body: dict) -> None:
    """``dispatch``: {"forcedGeneration": str} or {"dispatchKey": str}, as dataikuapi sends it."""
    _optional_object(body, "dispatch", "dispatch")
    for key, value in (body.get("dispatch") or {}).items():
        if key not in ("forcedGeneration", "dispatchKey"):
            raise MalformedRequest(
                f"unknown dispatch setting {key!r}", "known: forcedGeneration, dispatchKey"
            )
        if value is not None and type(value) is not str:
            raise MalformedRequest(f"dispatch.{key} must be a string")


class LookupHandler:
    """Rows of one or several tables by key, shaped like a Dataiku dataset-lookup endpoint."""

    def __init__(self, definition: ServiceDefinition, endpoint: LookupEndpoint, runtime: Runtime) -> None:
        self.endpoint = endpoint
        self.specs = [definition.tables[name] for name in endpoint.tables]
        self.spec = self.specs[0]
        self.key = self.spec.key
        key_spec = next(c for c in self.spec.columns if c.name == self.key)
        self._validate = FeatureValidator([key_spec], what="lookup column", strict=endpoint.strict_types)
        self._runtime = runtime
        self._max_items = definition.limits.max_batch_items
        self._empty = {c.name: None for spec in self.specs for c in spec.columns}
        self._single = len(self.specs) == 1
        self.tables = endpoint.tables
        self._context = api_context(definition, endpoint.name)

    def _key(self, data: object, where: str) -> object:
        clean = self._validate(data, where)
        if self.key not in clean:
            raise MissingLookupKey(f"missing lookup key {self.key!r}", f"{where} must contain {self.key!r}")
        return clean[self.key]

    def _result(self, key: object, found: list[list[dict]], whole: bool = False) -> dict:
        """``whole``: the rows are tables in memory's (``Table.row``: a fresh dict of every declared
        column in order, the key among them), so one table's one row is the answer's data as it is,
        and several tables' one row each make it merged in their order, as the general path does."""
        if whole:
            if self._single:
                if len(found[0]) == 1:
                    return {"data": found[0][0], "notFound": False}
            elif all(len(rows) == 1 for rows in found):  # profile: the first table's row, the others' over it
                data = found[0][0]
                for rows in found[1:]:
                    data.update(rows[0])
                return {"data": data, "notFound": False, "notFoundIn": []}
        data = {**self._empty, self.key: key}
        missing = []
        for spec, rows in zip(self.specs, found):
            if not rows:
                missing.append(spec.name)
                continue
            if len(rows) > 1 and self.endpoint.on_several == "fail":
                raise SeveralMatches(f"{len(rows)} {spec.name} records for {self.key}={key!r}")
            data.update(rows[0])
        if len(missing) == len(self.specs) and self.endpoint.on_not_found == "fail":
            raise RecordNotFound(f"no record for {self.key}={key!r}")
        result = {"data": data, "notFound": len(missing) == len(self.specs)}
        if len(self.specs) > 1:
            result["notFoundIn"] = missing
        return result

    def in_memory(self) -> bool:
        """Its tables are all held in memory (once started): nothing to wait for (inline.py)."""
        return all(self._runtime.sources[name].in_memory for name in self.endpoint.tables)

    def _rows_now(self, keys: list) -> list[list[list[dict]]]:
        """Per key, per table, the matching rows, from tables in memory (``in_memory()``, checked at start)."""
        sources = [self._runtime.sources[name] for name in self.endpoint.tables]
        return [[source.rows(key) for source in sources] for key in keys]

    async def _rows(self, keys: list) -> list[list[list[dict]]]:
        """Per key, per table, the matching rows."""
        per_table = []
        for name in self.endpoint.tables:
            source = self._runtime.sources[name]
            if source.in_memory:
                per_table.append([source.rows(key) for key in keys])
            else:
                per_table.append(await source.rows_many(keys) if keys else [])
        return [list(found) for found in zip(*per_table)] if keys else []

    def _one_key(self, body: object, timing: Timing) -> object:
        if type(body) is not dict:
            raise MalformedRequest("the body must be a JSON object", 'the body must be {"data": {...}}')
        _optional_object(body, "context", "context")
        key = self._key(body.get("data"), "data")
        timing.lap("preProcessing")
        return key

    def _one_answer(self, body: dict, key: object, found: list, timing: Timing, query,
                    whole: bool = False) -> dict:
        timing.lap("enrich")
        result = self._result(key, found, whole)
        query.add(body["data"], None, result, body.get("context"))
        return {"results": [result], "apiContext": self._context, "timing": timing.done()}

    def one_now(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        """``one`` without waiting, for tables in memory (``in_memory()``)."""
        key = self._one_key(body, timing)
        return self._one_answer(body, key, self._rows_now([key])[0], timing, query, whole=True)

    async def one(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        key = self._one_key(body, timing)
        (found,) = await self._rows([key])
        return self._one_answer(body, key, found, timing, query)

    def _many_keys(self, body: object, timing: Timing) -> tuple[list, list]:
        items = _items(body, self._max_items, "data")
        keys = [self._key(item["data"], f"items[{i}].data") for i, item in enumerate(items)]
        timing.lap("preProcessing")
        return items, keys

    def many_now(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        """``many`` without waiting, for tables in memory (``in_memory()``)."""
        items, keys = self._many_keys(body, timing)
        return self._many_answer(body, items, keys, self._rows_now(keys), timing, query, whole=True)

    async def many(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        items, keys = self._many_keys(body, timing)
        return self._many_answer(body, items, keys, await self._rows(keys), timing, query)

    def _many_answer(self, body: dict, items: list, keys: list, found: list, timing: Timing, query,
                     whole: bool = False) -> dict:
        timing.lap("enrich")
        results = [self._result(key, rows, whole) for key, rows in zip(keys, found)]
        if query.recording:
            for item, result in zip(items, results):
                query.add(item["data"], None, result, item.get("context", body.get("context")))
        return {"results": results, "apiContext": self._context, "timing": timing.done()}


class PredictionHandler:
    """Scores records, filling missing features by enrichment first; explains them on request."""

    def __init__(self, definition: ServiceDefinition, endpoint: PredictionEndpoint, runtime: Runtime) -> None:
        self.endpoint = endpoint
        self._validate = FeatureValidator(endpoint.features, strict=endpoint.strict_types)
        self._runtime = runtime
        self._max_items = definition.limits.max_batch_items
        self._context = api_context(definition, endpoint.name)
        self.tables = tuple(lookup.table for lookup in endpoint.lookups)
        self._dispatch = Dispatcher(endpoint.name, endpoint.dispatch or ((definition.version, 1.0),))
        # apiContext per generation, built once: serviceGeneration says which one answered.
        self._contexts = {g: {**self._context, "serviceGeneration": g} for g in self._dispatch.ids}

    def _generation(self, body: dict, query) -> tuple[str, object]:
        """The generation that answers this request (generations.py), and its model."""
        generation = self._dispatch.choose(body)
        query.generation = generation
        return generation, self._runtime.generations[self.endpoint.name][generation]

    def _settings(self, body: dict, records: int, model):
        settings = request_settings(body.get("explanations"), self.endpoint.explanations, len(model.inputs))
        if not settings.enabled:
            return None
        if model.explainer is None:
            raise InvalidExplanations(
                "this endpoint cannot explain predictions",
                "its model has no reference background (service.yaml: reference)",
            )
        model.explainer.check_cost(settings, records)
        return settings

    def _envelope(self, body: object, field: str, example: str) -> dict:
        if type(body) is not dict or field not in body:
            raise MalformedRequest(
                f"the body must be a JSON object with {field!r}", f"the body must be {example}"
            )
        _dispatch(body)
        return body

    def _features(self, value: object, where: str) -> dict:
        features = self._validate(value, where)
        if type(value) is dict and not value:
            raise InvalidFeatures(
                f"{where} is empty", f"{where} needs at least a lookup key or the model's inputs"
            )
        return features

    def _score(self, rows: list[dict], settings, timing: Timing, model) -> list[dict]:
        if settings is None and len(rows) == 1:
            timing.lap("preparation")
            scored = [model.predict_one(rows[0])]
            timing.lap("prediction")
            explained = [None]
        elif settings is None:
            scored = model.predict(rows)
            timing.lap("prediction")
            explained = [None] * len(rows)
        else:
            plan = model.explainer.plan(settings, rows)
            timing.lap("preparation")
            scored, explained = model.explain(plan, rows)
            timing.lap("prediction")
        results = []
        for (prediction, probas), explanations in zip(scored, explained):
            result = {"prediction": prediction, "probas": probas}
            percentile = model.percentile(probas)
            if percentile is not None:
                result["probaPercentile"] = percentile
            if explanations is not None:
                result["explanations"] = explanations
            result["ignored"] = False
            results.append(result)
        return results

    @staticmethod
    def _inline(settings, records: int, model) -> bool:
        """Cheap enough to run on the event loop (no explanations, or few model rows of them)."""
        return settings is None or model.explainer.rows_needed(settings, records) <= _INLINE_ROWS

    async def _scored(self, rows: list[dict], settings, timing: Timing, model) -> list[dict]:
        if self._inline(settings, len(rows), model):
            return self._score(rows, settings, timing, model)
        # Explanations cost up to max_rows model rows (a second or more): off the event loop, so
        # other requests keep being answered meanwhile (onnxruntime's run is thread-safe).
        return await asyncio.to_thread(self._score, rows, settings, timing, model)

    def in_memory(self) -> bool:
        """Its enrichment reads tables in memory (once started): a score may need no waiting (inline.py)."""
        return not self._runtime.enrichers[self.endpoint.name].waits

    def _one_request(self, body: object, timing: Timing, query) -> tuple:
        body = self._envelope(body, "features", '{"features": {...}}')
        _optional_object(body, "context", "context")
        generation, model = self._generation(body, query)
        features = self._features(body["features"], "features")
        settings = self._settings(body, 1, model)
        sent = dict(features) if query.recording else None
        timing.lap("preProcessing")
        return body, generation, model, features, settings, sent

    def _one_answer(self, request: tuple, problem: ApiError | None, timing: Timing, query, scored=None) -> dict:
        body, generation, model, features, settings, sent = request
        if problem is not None:
            if not problem.record_level:
                raise problem
            result = _ignored(problem)
        else:
            (result,) = scored if scored is not None else self._score([features], settings, timing, model)
        query.add(sent, features, result, body.get("context"))
        return {"result": result, "apiContext": self._contexts[generation], "timing": timing.done()}

    def one_now(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        """``one`` without waiting, for enrichment in memory (``in_memory()``): the model on the event
        loop, or ``NotNow`` (raised before anything is done) for explanations worth a worker thread."""
        request = self._one_request(body, timing, query)
        if not self._inline(request[4], 1, request[2]):
            raise NotNow
        problem = self._runtime.enrichers[self.endpoint.name].complete_one_now(request[3])
        timing.lap("enrich")
        return self._one_answer(request, problem, timing, query)

    async def one(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        request = self._one_request(body, timing, query)
        try:
            await self._runtime.enrichers[self.endpoint.name].complete_one(request[3])
        except ApiError as problem:
            if not problem.record_level:
                raise
            timing.lap("enrich")
            return self._one_answer(request, problem, timing, query)
        timing.lap("enrich")
        scored = await self._scored([request[3]], request[4], timing, request[2])
        return self._one_answer(request, None, timing, query, scored)

    async def many(self, body: object, timing: Timing, query=NO_QUERY) -> dict:
        items = _items(body, self._max_items, "features")
        _dispatch(body)
        generation, model = self._generation(body, query)
        rows = [self._features(item["features"], f"items[{i}].features") for i, item in enumerate(items)]
        settings = self._settings(body, len(rows), model)
        sent = [dict(row) for row in rows] if query.recording else None
        timing.lap("preProcessing")
        problems = await self._runtime.enrichers[self.endpoint.name].complete(rows)
        timing.lap("enrich")
        scorable = [row for row, problem in zip(rows, problems) if problem is None]
        scores = iter(await self._scored(scorable, settings, timing, model) if scorable else [])
        results = [next(scores) if problem is None else _ignored(problem) for problem in problems]
        if sent is not None:
            for item, before, row, result in zip(items, sent, rows, results):
                query.add(before, row, result, item.get("context", body.get("context")))
        return {"results": results, "apiContext": self._contexts[generation], "timing": timing.done()}


def _ignored(problem: ApiError) -> dict:
    """A record not scored, as Dataiku answers it: ignored, with a reason code (and ours in words)."""
    return {
        "ignored": True,
        "ignoreReason": problem.ignore_reason,
        "errorType": problem.error_type,
        "message": problem.detail,
    }
