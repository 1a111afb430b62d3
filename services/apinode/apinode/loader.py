"""Reads service.yaml, applies the environment's overrides, and builds the ServiceDefinition."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .definition import (
    ColumnSpec,
    DefinitionError,
    EnrichmentLookup,
    Limits,
    LookupEndpoint,
    PredictionEndpoint,
    PreprocessStep,
    RemoteSpec,
    ServiceDefinition,
    TableSpec,
    _columns,
    _policy,
    _Reader,
    _table,
    explanation_settings,
)
from .audit import read_query_log
from .generations import apply_dispatch_env, read_generations, read_weights
from .secrets import read_secret
from .transforms import TRANSFORMS

# Environment variable -> key inside each table's ``sql`` block, with its parser.
_SQL_ENV = {
    "APINODE_SQL_URL": ("url", str),
    "APINODE_SQL_MODE": ("mode", str),
    "APINODE_SQL_REFRESH_SECONDS": ("refresh_seconds", float),
    "APINODE_SQL_POOL_SIZE": ("pool_size", int),
    "APINODE_SQL_TIMEOUT_SECONDS": ("timeout_seconds", float),
}
_LIMITS_ENV = {
    "APINODE_MAX_BODY_BYTES": ("max_body_bytes", int),
    "APINODE_MAX_BATCH_ITEMS": ("max_batch_items", int),
    "APINODE_REQUEST_TIMEOUT_SECONDS": ("request_timeout_seconds", float),
    "APINODE_BODY_TIMEOUT_SECONDS": ("body_timeout_seconds", float),
    "APINODE_HEADER_TIMEOUT_SECONDS": ("header_timeout_seconds", float),
    "APINODE_KEEP_ALIVE_SECONDS": ("keep_alive_seconds", float),
    "APINODE_MAX_CONNECTIONS": ("max_connections", int),
    "APINODE_MAX_CONNECTIONS_PER_CLIENT": ("max_connections_per_client", int),
    "APINODE_MAX_REQUEST_LINE_BYTES": ("max_request_line_bytes", int),
    "APINODE_MAX_HEADER_COUNT": ("max_header_count", int),
    "APINODE_MAX_HEADER_BYTES": ("max_header_bytes", int),
}


def _env_value(env: Mapping[str, str], name: str, parse: type) -> Any:
    try:
        return parse(env[name])
    except ValueError:
        raise DefinitionError(f"environment: {name}: expected {parse.__name__}, got {env[name]!r}") from None


def _merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise DefinitionError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise DefinitionError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    return raw


def apply_environment(raw: dict, env: Mapping[str, str]) -> dict:
    """Overlay file first, then the single-purpose variables (they win)."""
    raw = copy.deepcopy(raw)
    if env.get("APINODE_OVERLAY"):
        raw = _merge(raw, _read_yaml(Path(env["APINODE_OVERLAY"])))
    tables = raw.get("tables") or {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            continue
        if env.get("APINODE_SOURCE"):
            table["source"] = env["APINODE_SOURCE"]
            if env["APINODE_SOURCE"] == "sql" and not table.get("sql"):
                table["sql"] = {"table": name}
        for variable, (key, parse) in _SQL_ENV.items():
            if env.get(variable) and isinstance(table.get("sql"), dict):
                table["sql"][key] = _env_value(env, variable, parse)
    apply_dispatch_env(raw, env)
    if env.get("APINODE_ENRICHMENT"):
        for endpoint in (raw.get("endpoints") or {}).values():
            if isinstance(endpoint, dict) and isinstance(endpoint.get("enrichment"), dict):
                endpoint["enrichment"]["via"] = env["APINODE_ENRICHMENT"]
    limits = raw.setdefault("limits", {}) or {}
    for variable, (key, parse) in _LIMITS_ENV.items():
        if env.get(variable):
            limits[key] = _env_value(env, variable, parse)
    raw["limits"] = limits
    return raw


def _remote(name: str, reader: _Reader, env: Mapping[str, str]) -> RemoteSpec:
    url_env = reader.get("url_env", str, None)
    url = env.get(url_env) if url_env and env.get(url_env) else reader.get("url", str, None)
    if not url:
        reader.fail(f"{reader.path}.url", f"required (or set {url_env or 'url_env'})")
    if not url.startswith("http://"):
        reader.fail(
            f"{reader.path}.url", f"only http:// URLs are supported (in-cluster traffic), got {url!r}"
        )
    key_env = reader.get("api_key_env", str, None)
    return RemoteSpec(
        name=name,
        url=url.rstrip("/"),
        api_key=read_secret(env, key_env) if key_env else None,
        timeout_seconds=reader.get("timeout_seconds", float, 1.0),
        max_connections=reader.get("max_connections", int, 64),
        max_response_bytes=reader.get("max_response_bytes", int, 4 * 1024 * 1024),
        batches_in_flight=reader.get("batches_in_flight", int, RemoteSpec.batches_in_flight),
        batch_wait_seconds=reader.get("batch_wait_seconds", float, RemoteSpec.batch_wait_seconds),
    )


def _pairs(reader: _Reader, default: dict[str, str]) -> tuple[tuple[str, str], ...]:
    raw = reader.raw or default
    for key, value in raw.items():
        if not isinstance(value, str):
            reader.fail(f"{reader.path}.{key}", f"expected a name, got {value!r}")
    return tuple((str(k), v) for k, v in raw.items())


def _enrichment_lookup(reader: _Reader, tables: dict[str, TableSpec], remotes: dict) -> EnrichmentLookup:
    table_name = reader.get("table", str)
    table = tables.get(table_name)
    if table is None:
        reader.fail(f"{reader.path}.table", f"unknown table {table_name!r}")
    remote = reader.child("remote")
    remote_name = remote.get("service", str, None)
    if remote_name is not None and remote_name not in remotes:
        remote.fail(f"{remote.path}.service", f"unknown remote {remote_name!r}")
    # key: request feature -> table column; columns: table column -> feature name.
    key = _pairs(reader.child("key"), {table.key: table.key})
    known = {c.name for c in table.columns}
    default_columns = {c.name: c.name for c in table.columns if c.name != table.key}
    columns = _pairs(reader.child("columns"), default_columns)
    for _, column in key:
        if column != table.key:
            reader.fail(
                f"{reader.path}.key", f"{column!r} is not the key column {table.key!r} of {table_name}"
            )
    for column, _ in columns:
        if column not in known:
            reader.fail(f"{reader.path}.columns.{column}", f"not a column of table {table_name}")
    return EnrichmentLookup(
        table=table_name,
        remote=remote_name,
        remote_endpoint=remote.get("endpoint", str, table_name) if remote_name else None,
        key=key,
        columns=columns,
        # fail: the record is answered ignored (Dataiku's FAIL); error: an HTTP error for /predict.
        on_missing_key=_policy(reader, "on_missing_key", "fail", ("fail", "ignore", "error")),
        on_not_found=_policy(reader, "on_not_found", "fail", ("fail", "ignore", "error")),
        on_several=_policy(reader, "on_several", "fail", ("fail", "first", "error")),
    )


def _request_features(reader: _Reader, tables: dict, lookups: tuple[EnrichmentLookup, ...]) -> tuple:
    """Key features, then enrichment columns under their feature names, then declared extras."""
    features: dict[str, ColumnSpec] = {}
    for lookup in lookups:
        by_column = {c.name: c for c in tables[lookup.table].columns}
        for feature, column in lookup.key:
            features.setdefault(feature, replace(by_column[column], name=feature))
        for column, feature in lookup.columns:
            spec = by_column[column]
            features.setdefault(feature, replace(spec, name=feature))
    if reader.raw.get("features"):
        for spec in _columns(reader.child("features")):
            features[spec.name] = spec
    if not features:
        reader.fail(f"{reader.path}.features", "no features: declare features or enrichment lookups")
    return tuple(features.values())


def _as_of(reader: _Reader, key: str, raw: Any, metadata: dict) -> dt.date:
    value = metadata.get("as_of") if raw == "metadata" else raw
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        reader.fail(key, f"expected an ISO date or 'metadata' (model metadata as_of), got {value!r}")


def _prediction(
    root: Path, name: str, reader: _Reader, tables: dict, remotes: dict, version: str = "1"
) -> PredictionEndpoint:
    generations = read_generations(reader, root, version)
    model_path, metadata = generations[0].model_path, generations[0].metadata
    enrichment = reader.child("enrichment")
    lookups = tuple(
        _enrichment_lookup(_Reader(reader.file, f"{enrichment.path}.lookups[{i}]", raw), tables, remotes)
        for i, raw in enumerate(enrichment.get("lookups", list, []))
    )
    via = enrichment.get("via", str, "bundled", choices=("bundled", "remote"))
    if via == "remote":
        for i, lookup in enumerate(lookups):
            if lookup.remote is None:
                enrichment.fail(f"{enrichment.path}.lookups[{i}].remote", "required when via is remote")
            if remotes[lookup.remote].api_key is None:
                enrichment.fail(f"remotes.{lookup.remote}.api_key_env", "the API key variable is not set")
    features = _request_features(reader, tables, lookups)
    steps = []
    for i, raw in enumerate(reader.get("preprocessing", list, [])):
        step = _Reader(reader.file, f"{reader.path}.preprocessing[{i}]", raw)
        transform = step.get("transform", str, choices=tuple(TRANSFORMS))
        source = step.get("input", str)
        if source not in {f.name for f in features}:
            step.fail(f"{step.path}.input", f"{source!r} is not a feature of this endpoint")
        steps.append(
            PreprocessStep(
                output=step.get("output", str),
                transform=transform,
                input=source,
                as_of=_as_of(step, f"{step.path}.as_of", step.raw.get("as_of", "metadata"), metadata),
            )
        )
    outputs = reader.child("outputs")
    reference = generations[0].reference
    input_count = len(metadata.get("inputs") or ()) or 1000
    return PredictionEndpoint(
        name=name,
        model_path=model_path,
        metadata=metadata,
        features=features,
        preprocessing=tuple(steps),
        enrichment_via=via,
        lookups=lookups,
        allow_missing_features=reader.get("allow_missing_features", bool, False),
        outputs=(outputs.get("label", str, "label"), outputs.get("probabilities", str, "probabilities")),
        strict_types=reader.get("strict_types", bool, False),
        explanations=explanation_settings(reader.child("explanations"), input_count),
        reference=reference,
        generations=generations,
        dispatch=read_weights(reader, generations),
        query_log=read_query_log(reader, {f.name for f in features}),
    )


def _lookup_tables(endpoint: _Reader, tables: dict[str, TableSpec]) -> tuple[str, ...]:
    """``table: x`` or ``tables: [x, y]`` (joined on their common key, in that order)."""
    if ("table" in endpoint.raw) == ("tables" in endpoint.raw):
        endpoint.fail(endpoint.path, "set exactly one of table or tables")
    key = "table" if "table" in endpoint.raw else "tables"
    names = [endpoint.get("table", str)] if key == "table" else endpoint.get("tables", list)
    for name in names:
        if name not in tables:
            endpoint.fail(f"{endpoint.path}.{key}", f"unknown table {name!r}")
    if len(set(names)) != len(names):
        endpoint.fail(f"{endpoint.path}.tables", "a table is listed twice")
    keys = {tables[name].key for name in names}
    if len(keys) > 1:
        endpoint.fail(f"{endpoint.path}.tables", f"the tables must share one key column, got {sorted(keys)}")
    return tuple(names)


def parse_definition(root: Path, file: Path, raw: dict, env: Mapping[str, str]) -> ServiceDefinition:
    """Validate the (already overridden) raw mapping into a ServiceDefinition."""
    top = _Reader(file, "", raw)
    service_id = top.get("service", str)
    tables = {
        name: _table(root, str(name), top.child("tables").child(name))
        for name, _ in top.child("tables").items()
    }
    remotes = {
        name: _remote(str(name), top.child("remotes").child(name), env)
        for name, _ in top.child("remotes").items()
    }
    lookups: dict[str, LookupEndpoint] = {}
    predictions: dict[str, PredictionEndpoint] = {}
    endpoints = top.child("endpoints")
    for name, _ in endpoints.items():
        endpoint = endpoints.child(name)
        kind = endpoint.get("type", str, choices=("lookup", "prediction"))
        if kind == "lookup":
            lookups[name] = LookupEndpoint(
                name=name,
                tables=_lookup_tables(endpoint, tables),
                on_not_found=_policy(endpoint, "on_not_found", "null", ("null", "fail")),
                on_several=_policy(endpoint, "on_several", "first", ("first", "fail")),
                strict_types=endpoint.get("strict_types", bool, False),
                query_log=read_query_log(
                    endpoint, {c.name for table in _lookup_tables(endpoint, tables) for c in tables[table].columns}
                ),
            )
        else:
            version = str(top.raw.get("version", "1"))
            predictions[name] = _prediction(root, name, endpoint, tables, remotes, version)
    if not lookups and not predictions:
        top.fail("endpoints", "at least one endpoint is required")
    limits = top.child("limits")
    defaults = Limits()
    return ServiceDefinition(
        id=service_id,
        version=str(top.raw.get("version", "1")),
        root=root,
        tables=tables,
        lookups=lookups,
        predictions=predictions,
        remotes=remotes,
        limits=Limits(
            **{
                k: limits.get(k, type(getattr(defaults, k)), getattr(defaults, k))
                for k in defaults.__dataclass_fields__
            }
        ),
    )


def load_definition(service_dir: str | Path, env: Mapping[str, str]) -> ServiceDefinition:
    """Read ``<service_dir>/service.yaml`` with the environment's overrides."""
    root = Path(service_dir)
    file = root / "service.yaml"
    return parse_definition(root, file, apply_environment(_read_yaml(file), env), env)
