"""OpenAPI 3 document of one service, generated from its definition (the schemas the validator applies).

It describes what the server accepts, no more and no less: lenient typing's alternatives (a
number as a string, a date as a timestamp) are spelled out, a lookup key is not nullable (null is
refused), and the request envelope (``context``, ``explanations``, ``dispatch``) is typed.
"""

from __future__ import annotations

from .definition import EXPLANATION_METHODS, MONTE_CARLO_STEPS, ColumnSpec, ServiceDefinition
from .features import BOOLEAN_STRINGS, ISO_DATE_PATTERN, ISO_TIMESTAMP_PATTERN, NUMBER_PATTERN
from .handlers import Timing

_ERROR_STATUSES = {
    "400": "Malformed JSON, an empty features object, an unknown or mistyped feature, invalid explanations "
    "settings, a missing lookup key (lookups, or enrichment policy error)",
    "401": "No API key",
    "403": "Wrong API key",
    "404": "No record for the key (when the policy is fail on a lookup, error on an enrichment)",
    "405": "Wrong HTTP method",
    "408": "Body not received in time",
    "409": "Several records for the key (when the policy is fail on a lookup, error on an enrichment)",
    "413": "Body, batch or explanation cost over the configured limit",
    "415": "Body declared as something other than JSON (JSON, form-urlencoded, text/plain and no "
    "content type are read as JSON)",
    "503": "A data source or the enrichment service is unavailable, or the service is not ready",
}
_REF = "#/components/schemas/"


def _ref(name: str) -> dict:
    return {"$ref": _REF + name}


def column_schema(spec: ColumnSpec, nullable: bool = True, lenient: bool = False) -> dict:
    """The JSON schema of one column's values; lenient adds the coercions the validator makes."""
    schema: dict = {"type": {"date": "string"}.get(spec.type, spec.type)}
    if spec.type == "date":
        schema.update(format="date", pattern=ISO_DATE_PATTERN)
    if spec.pattern:
        schema["pattern"] = spec.pattern
    if spec.enum is not None:
        schema["enum"] = list(spec.enum)
    if spec.example is not None:
        schema["example"] = spec.example
    alternatives = [schema]
    if spec.type == "integer":
        # An integral JSON number (3.0) is read as the integer: draft 4 types it number, not integer.
        alternatives.append({"type": "number", "multipleOf": 1})
    if lenient and _lenient_alternative(spec) is not None:
        alternatives.append(_lenient_alternative(spec))
    if len(alternatives) > 1:
        schema = {"anyOf": alternatives}
        if spec.example is not None:
            schema["example"] = spec.example
    if nullable:
        schema["nullable"] = True
    return schema


def _lenient_alternative(spec: ColumnSpec) -> dict | None:
    if spec.type in ("integer", "number"):
        return {"type": "string", "pattern": NUMBER_PATTERN, "description": "a number written as a string"}
    if spec.type == "date":
        timestamp = "an ISO timestamp (its UTC date)"
        return {"type": "string", "pattern": ISO_TIMESTAMP_PATTERN, "description": timestamp}
    if spec.type == "boolean":
        return {"type": "string", "enum": list(BOOLEAN_STRINGS)}
    if spec.type == "string" and spec.pattern is None and spec.enum is None:
        return {"type": "number", "description": "read as its decimal text"}
    return None


def _object(properties: dict, required: list[str] | None = None, closed: bool = True) -> dict:
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _operation(summary: str, request: dict, answer: dict, tag: str) -> dict:
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": answer}}}}
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    for response in responses.values():
        response["headers"] = {
            "DSS-API-Version": {"schema": {"type": "string"}, "description": "API version"}
        }
    return {
        "post": {
            "summary": summary,
            "tags": [tag],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": responses,
        }
    }


def _batch(item: dict, field: str, limit: int, extra: dict | None = None) -> dict:
    # The item limit is stated, not encoded as maxItems: over it the answer is 413, not a 400.
    items = {
        "type": "array",
        "description": f"at most {limit} items (413 PayloadTooLarge beyond)",
        "items": _object({field: item, "context": _ref("Context")}, [field], closed=False),
    }
    return _object({"items": items, **(extra or {})}, ["items"], closed=False)


def _components(feature_count: int) -> dict:
    low, high = MONTE_CARLO_STEPS
    return {
        "Error": _object(
            {
                "errorType": {"type": "string"},
                "message": {"type": "string"},
                "detailedMessage": {"type": "string"},
            },
            ["errorType", "message", "detailedMessage"],
        ),
        "Context": {
            "type": "object",
            "nullable": True,
            "additionalProperties": True,
            "description": "free-form information about the caller; accepted and not used (as Dataiku)",
        },
        "Explanations": _nullable(
            _object(
                {
                    "enabled": {"type": "boolean", "nullable": True},
                    # OpenAPI 3.0: an enum must list null itself for nullable to admit it.
                    "method": {"type": "string", "enum": [*EXPLANATION_METHODS, None], "nullable": True},
                    "nExplanations": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": feature_count,
                        "nullable": True,
                    },
                    "nMonteCarloSteps": {
                        "type": "integer",
                        "minimum": low,
                        "maximum": high,
                        "nullable": True,
                    },
                }
            )
        ),
        "Dispatch": _nullable(
            _object(
                {
                    "forcedGeneration": {"type": "string", "nullable": True},
                    "dispatchKey": {"type": "string", "nullable": True},
                }
            )
        ),
        "ApiContext": _object(
            {
                "serviceId": {"type": "string"},
                "endpointId": {"type": "string"},
                "serviceGeneration": {"type": "string"},
            },
            ["serviceId", "endpointId", "serviceGeneration"],
        ),
        "Timing": {
            **_object(
                {key: {"type": "integer", "minimum": 0} for key in Timing.KEYS}, list(Timing.KEYS)
            ),
            "description": "where the request's time went, in microseconds",
        },
    }


def _lookups(definition: ServiceDefinition, base: str, limit: int, paths: dict) -> None:
    for name, endpoint in definition.lookups.items():
        tables = [definition.tables[t] for t in endpoint.tables]
        key = next(c for c in tables[0].columns if c.name == tables[0].key)
        lenient = not endpoint.strict_types
        data = _object({key.name: column_schema(key, nullable=False, lenient=lenient)}, [key.name])
        columns = {c.name: column_schema(c) for table in tables for c in table.columns}
        properties = {"data": _object(columns), "notFound": {"type": "boolean"}}
        required = ["data", "notFound"]
        if len(tables) > 1:
            properties["notFoundIn"] = {
                "type": "array",
                "items": {"type": "string", "enum": list(endpoint.tables)},
                "description": "the tables without a record for the key",
            }
            required.append("notFoundIn")
        result = _object(properties, required)
        answer = _object(
            {
                "results": {"type": "array", "items": result},
                "apiContext": _ref("ApiContext"),
                "timing": _ref("Timing"),
            },
            ["results", "apiContext", "timing"],
            closed=False,
        )
        what = " and ".join(endpoint.tables)
        paths[f"{base}/{name}/lookup"] = _operation(
            f"The {what} record for one {key.name}",
            _object({"data": data, "context": _ref("Context")}, ["data"], closed=False),
            answer,
            name,
        )
        paths[f"{base}/{name}/lookup-multi"] = _operation(
            f"The {what} records for several keys", _batch(data, "data", limit), answer, name
        )


def _predictions(definition: ServiceDefinition, base: str, limit: int, paths: dict) -> int:
    feature_count = 1
    for name, endpoint in definition.predictions.items():
        inputs = endpoint.metadata.get("inputs") or ()
        feature_count = max(feature_count, len(inputs) or len(endpoint.features))
        lenient = not endpoint.strict_types
        features = _object({spec.name: column_schema(spec, lenient=lenient) for spec in endpoint.features})
        features["minProperties"] = 1
        features["description"] = "a lookup key and/or model inputs; an empty object is a 400 InvalidFeatures"
        scored = _object(
            {
                "prediction": {"type": "string"},
                "probas": {"type": "object", "additionalProperties": {"type": "number"}},
                "probaPercentile": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 100,
                    "description": "percentile of the positive-class probability among the holdout scores",
                },
                "explanations": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                    "description": "top features and their contributions, in log-odds of the positive class",
                },
                "ignored": {"type": "boolean"},
                "ignoreReason": {
                    "type": "string",
                    "enum": [
                        "MISSING_LOOKUP_KEY",
                        "NO_LOOKUP_MATCH",
                        "MULTIPLE_LOOKUP_MATCHES",
                        "MISSING_FEATURES",
                    ],
                },
                "errorType": {"type": "string"},
                "message": {"type": "string"},
            },
            ["ignored"],
        )
        envelope = {"explanations": _ref("Explanations"), "dispatch": _ref("Dispatch")}
        context = {"apiContext": _ref("ApiContext"), "timing": _ref("Timing")}
        single = _object({"result": scored, **context}, ["result", "apiContext", "timing"], closed=False)
        multi = _object(
            {"results": {"type": "array", "items": scored}, **context},
            ["results", "apiContext", "timing"],
            closed=False,
        )
        paths[f"{base}/{name}/predict"] = _operation(
            "Score one record; missing features are looked up by key",
            _object(
                {"features": features, "context": _ref("Context"), **envelope}, ["features"], closed=False
            ),
            single,
            name,
        )
        paths[f"{base}/{name}/predict-multi"] = _operation(
            "Score several records; a record that cannot be scored is returned as ignored",
            _batch(features, "features", limit, envelope),
            multi,
            name,
        )
    return feature_count


def openapi_document(definition: ServiceDefinition) -> dict:
    """The service's OpenAPI 3.0 document."""
    base = f"/public/api/v1/{definition.id}"
    limit = definition.limits.max_batch_items
    paths: dict = {}
    _lookups(definition, base, limit, paths)
    feature_count = _predictions(definition, base, limit, paths)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": definition.id,
            "version": definition.version,
            "description": "Dataiku API node user API, served by apinode",
        },
        "paths": paths,
        "components": {
            "schemas": _components(feature_count),
            "securitySchemes": {
                "apiKeyBasic": {"type": "http", "scheme": "basic"},
                "apiKeyBearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKeyBasic": []}, {"apiKeyBearer": []}],
    }
