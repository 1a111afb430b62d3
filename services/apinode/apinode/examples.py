"""Request examples for the OpenAPI document, so the docs' "try it" starts from a query that works:
the key columns' declared examples (a real customer id), and for a prediction only the keys that
enrichment completes the record from."""

from __future__ import annotations

from .definition import ServiceDefinition


def _key_example(definition: ServiceDefinition, table_name: str) -> dict:
    table = definition.tables[table_name]
    column = next(c for c in table.columns if c.name == table.key)
    return {table.key: column.example if column.example is not None else ""}


def _set(document: dict, path: str, example: dict) -> None:
    operation = document["paths"].get(path, {}).get("post")
    if operation is not None:
        operation["requestBody"]["content"]["application/json"]["example"] = example


def with_examples(document: dict, definition: ServiceDefinition) -> dict:
    """The document with an ``example`` on every operation's JSON request body."""
    base = f"/public/api/v1/{definition.id}"
    for name, endpoint in definition.lookups.items():
        data = _key_example(definition, endpoint.table)
        _set(document, f"{base}/{name}/lookup", {"data": data})
        _set(document, f"{base}/{name}/lookup-multi", {"items": [{"data": data}]})
    for name, endpoint in definition.predictions.items():
        features: dict = {}
        for lookup in endpoint.lookups:
            table = _key_example(definition, lookup.table)
            for field, column in lookup.key:
                features.setdefault(field, table.get(column, ""))
        _set(document, f"{base}/{name}/predict", {"features": features})
        _set(document, f"{base}/{name}/predict-multi", {"items": [{"features": features}]})
    return document
