"""OpenAPI 3 document of one service, generated from its definition (the schemas the validator applies)."""

from __future__ import annotations

from .definition import ColumnSpec, ServiceDefinition
from .features import _ISO_DATE

_ERROR_STATUSES = {
    "400": "Malformed JSON, unknown or mistyped feature, missing lookup key or features",
    "401": "No API key",
    "403": "Wrong API key",
    "404": "No record for the key (when the endpoint's policy is fail)",
    "405": "Wrong HTTP method",
    "408": "Body not received in time",
    "409": "Several records for the key (when the endpoint's policy is fail)",
    "413": "Body or batch over the configured limit",
    "415": "Body declared as something other than JSON",
    "503": "A data source or the enrichment service is unavailable, or the service is not ready",
}


def column_schema(spec: ColumnSpec, nullable: bool = True) -> dict:
    schema: dict = {"type": {"date": "string"}.get(spec.type, spec.type)}
    if spec.type == "date":
        schema.update(format="date", pattern=_ISO_DATE.pattern)
    if spec.pattern:
        schema["pattern"] = spec.pattern
    if spec.enum is not None:
        schema["enum"] = list(spec.enum)
    if spec.example is not None:
        schema["example"] = spec.example
    if nullable:
        schema["nullable"] = True
    return schema


def _object(properties: dict, required: list[str] | None = None, closed: bool = True) -> dict:
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _operation(summary: str, request: dict, answer: dict, tag: str) -> dict:
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": answer}}}}
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return {
        "post": {
            "summary": summary,
            "tags": [tag],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": responses,
        }
    }


def _batch(item: dict, field: str, limit: int) -> dict:
    # The item limit is stated, not encoded as maxItems: over it the answer is 413, not a 400.
    items = {
        "type": "array",
        "description": f"at most {limit} items (413 PayloadTooLarge beyond)",
        "items": _object({field: item}, [field], closed=False),
    }
    return _object({"items": items}, ["items"], closed=False)


def openapi_document(definition: ServiceDefinition) -> dict:
    """The service's OpenAPI 3.0 document."""
    base = f"/public/api/v1/{definition.id}"
    limit = definition.limits.max_batch_items
    paths: dict = {}
    context = {"type": "object"}
    for name, endpoint in definition.lookups.items():
        table = definition.tables[endpoint.table]
        key = next(c for c in table.columns if c.name == table.key)
        data = _object({key.name: column_schema(key)}, [key.name])
        row = _object({c.name: column_schema(c) for c in table.columns})
        result = _object({"data": row, "notFound": {"type": "boolean"}}, ["data", "notFound"])
        answer = _object({"results": {"type": "array", "items": result}}, ["results"], closed=False)
        paths[f"{base}/{name}/lookup"] = _operation(
            f"The {table.name} record for one {key.name}",
            _object({"data": data}, ["data"], closed=False),
            answer,
            name,
        )
        paths[f"{base}/{name}/lookup-multi"] = _operation(
            f"The {table.name} records for several keys", _batch(data, "data", limit), answer, name
        )
    for name, endpoint in definition.predictions.items():
        features = _object({spec.name: column_schema(spec) for spec in endpoint.features})
        probas = {"type": "object", "additionalProperties": {"type": "number"}}
        scored = _object(
            {
                "prediction": {"type": "string"},
                "probas": probas,
                "ignored": {"type": "boolean"},
                "ignoreReason": {"type": "string"},
                "errorType": {"type": "string"},
            },
            ["ignored"],
        )
        single = _object({"result": scored, "apiContext": context}, ["result"], closed=False)
        multi = _object(
            {"results": {"type": "array", "items": scored}, "apiContext": context}, ["results"], closed=False
        )
        paths[f"{base}/{name}/predict"] = _operation(
            "Score one record; missing features are looked up by key",
            _object({"features": features}, ["features"], closed=False),
            single,
            name,
        )
        paths[f"{base}/{name}/predict-multi"] = _operation(
            "Score several records; a record that cannot be scored is returned as ignored",
            _batch(features, "features", limit),
            multi,
            name,
        )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": definition.id,
            "version": definition.version,
            "description": "Dataiku API node user API, served by apinode",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": _object(
                    {
                        "errorType": {"type": "string"},
                        "message": {"type": "string"},
                        "detailedMessage": {"type": "string"},
                    },
                    ["errorType", "message", "detailedMessage"],
                )
            },
            "securitySchemes": {
                "apiKeyBasic": {"type": "http", "scheme": "basic"},
                "apiKeyBearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKeyBasic": []}, {"apiKeyBearer": []}],
    }
