"""Endpoint handlers: take a parsed body, delegate to tables, enricher and model, return the answer."""

from __future__ import annotations

from .definition import LookupEndpoint, PredictionEndpoint, ServiceDefinition
from .errors import (
    ApiError,
    MalformedRequest,
    MissingLookupKey,
    PayloadTooLarge,
    RecordNotFound,
    SeveralMatches,
)
from .features import FeatureValidator
from .runtime import Runtime


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
    return items


class LookupHandler:
    """Rows of one table by key, shaped like a Dataiku dataset-lookup endpoint."""

    def __init__(self, definition: ServiceDefinition, endpoint: LookupEndpoint, runtime: Runtime) -> None:
        self.endpoint = endpoint
        self.spec = definition.tables[endpoint.table]
        self.key = self.spec.key
        key_spec = next(c for c in self.spec.columns if c.name == self.key)
        self._validate = FeatureValidator([key_spec], what="lookup column")
        self._runtime = runtime
        self._max_items = definition.limits.max_batch_items
        self._empty = {c.name: None for c in self.spec.columns}
        self.tables = (endpoint.table,)

    def _key(self, data: object, where: str) -> object:
        clean = self._validate(data, where)
        if self.key not in clean:
            raise MissingLookupKey(f"missing lookup key {self.key!r}", f"{where} must contain {self.key!r}")
        return clean[self.key]

    def _result(self, key: object, rows: list[dict]) -> dict:
        if not rows:
            if self.endpoint.on_not_found == "fail":
                raise RecordNotFound(f"no record for {self.key}={key!r}")
            return {"data": {**self._empty, self.key: key}, "notFound": True}
        if len(rows) > 1 and self.endpoint.on_several == "fail":
            raise SeveralMatches(f"{len(rows)} records for {self.key}={key!r}")
        return {"data": rows[0], "notFound": False}

    async def one(self, body: object) -> dict:
        if type(body) is not dict:
            raise MalformedRequest("the body must be a JSON object", 'the body must be {"data": {...}}')
        key = self._key(body.get("data"), "data")
        source = self._runtime.sources[self.endpoint.table]
        rows = source.rows(key) if source.in_memory else (await source.rows_many([key]))[0]
        return {"results": [self._result(key, rows)]}

    async def many(self, body: object) -> dict:
        items = _items(body, self._max_items, "data")
        keys = [self._key(item["data"], f"items[{i}].data") for i, item in enumerate(items)]
        source = self._runtime.sources[self.endpoint.table]
        found = await source.rows_many(keys) if keys else []
        return {"results": [self._result(key, rows) for key, rows in zip(keys, found)]}


class PredictionHandler:
    """Scores records, filling missing features by enrichment first."""

    def __init__(self, definition: ServiceDefinition, endpoint: PredictionEndpoint, runtime: Runtime) -> None:
        self.endpoint = endpoint
        self._validate = FeatureValidator(endpoint.features)
        self._runtime = runtime
        self._max_items = definition.limits.max_batch_items
        self._context = {
            "serviceId": definition.id,
            "endpointId": endpoint.name,
            "serviceGeneration": definition.version,
        }
        self.tables = tuple(lookup.table for lookup in endpoint.lookups)

    async def one(self, body: object) -> dict:
        if type(body) is not dict or "features" not in body:
            raise MalformedRequest(
                "the body must be a JSON object with 'features'", 'the body must be {"features": {...}}'
            )
        features = self._validate(body["features"], "features")
        await self._runtime.enrichers[self.endpoint.name].complete_one(features)
        prediction, probas = self._runtime.models[self.endpoint.name].predict_one(features)
        return {
            "result": {"prediction": prediction, "probas": probas, "ignored": False},
            "apiContext": self._context,
        }

    async def many(self, body: object) -> dict:
        items = _items(body, self._max_items, "features")
        rows = [self._validate(item["features"], f"items[{i}].features") for i, item in enumerate(items)]
        problems = await self._runtime.enrichers[self.endpoint.name].complete(rows)
        scorable = [row for row, problem in zip(rows, problems) if problem is None]
        scores = iter(self._runtime.models[self.endpoint.name].predict(scorable) if scorable else [])
        results = []
        for problem in problems:
            if problem is None:
                prediction, probas = next(scores)
                results.append({"prediction": prediction, "probas": probas, "ignored": False})
            else:
                results.append(_ignored(problem))
        return {"results": results, "apiContext": self._context}


def _ignored(problem: ApiError) -> dict:
    return {"ignored": True, "ignoreReason": problem.message, "errorType": problem.error_type}
