"""The service definition (service.yaml): parsed once at start-up into frozen dataclasses.

Every problem is reported with the file, the key path and the reason, so a bad
definition stops the server before it listens.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLUMN_TYPES = ("string", "integer", "number", "boolean", "date")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class DefinitionError(ValueError):
    """A service definition that cannot be served; the message names file, key and reason."""


@dataclass(frozen=True)
class ColumnSpec:
    """One typed column of a table, or one feature of a prediction request."""

    name: str
    type: str
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    example: object = None


@dataclass(frozen=True)
class SqlSpec:
    """Where and how a table is read from a SQL database."""

    url: str | None
    table: str | None
    query: str | None
    key_query: str | None
    mode: str
    refresh_seconds: float
    pool_size: int
    timeout_seconds: float
    password_env: str


@dataclass(frozen=True)
class TableSpec:
    """A keyed dataset: its columns and the source it is read from."""

    name: str
    key: str
    columns: tuple[ColumnSpec, ...]
    source: str
    bundled_path: Path | None
    sql: SqlSpec | None


@dataclass(frozen=True)
class RemoteSpec:
    """Another API node service called over HTTP (for remote enrichment)."""

    name: str
    url: str
    api_key: str | None
    timeout_seconds: float
    max_connections: int
    max_response_bytes: int = 4 * 1024 * 1024
    # Shared lookup calls out at once per endpoint (coalesce.py): keys asked meanwhile wait and go
    # together in the next call.
    batches_in_flight: int = 1
    batch_wait_seconds: float = 0.005  # ... but a batch waits at most this long for one to come back


@dataclass(frozen=True)
class LookupEndpoint:
    """A lookup endpoint: rows of one table, or of several joined on the same key (Dataiku's
    dataset lookup can look up in several datasets at once)."""

    name: str
    tables: tuple[str, ...]
    on_not_found: str
    on_several: str
    strict_types: bool = False

    @property
    def table(self) -> str:
        return self.tables[0]
    query_log: Any = None  # audit.QueryLogSpec: sampling and redaction of its query records


@dataclass(frozen=True)
class EnrichmentLookup:
    """One auto-lookup filling a prediction's missing features by key."""

    table: str
    remote: str | None
    remote_endpoint: str | None
    key: tuple[tuple[str, str], ...]
    columns: tuple[tuple[str, str], ...]
    on_missing_key: str
    on_not_found: str
    on_several: str


@dataclass(frozen=True)
class PreprocessStep:
    """A declared transform computing a model input from a request feature."""

    output: str
    transform: str
    input: str
    as_of: dt.date


EXPLANATION_METHODS = ("ICE", "SHAPLEY")
MONTE_CARLO_STEPS = (25, 1000)  # the range dataikuapi documents for n_explanations_mc_steps


@dataclass(frozen=True)
class ExplanationSettings:
    """An endpoint's explanation defaults (a request's ``explanations`` object overrides them)."""

    enabled: bool = False
    method: str = "ICE"
    n_explanations: int = 3
    n_monte_carlo_steps: int = 100
    max_rows: int = 120_000  # model rows one request may cost (413 beyond)


@dataclass(frozen=True)
class PredictionEndpoint:
    """A prediction endpoint: an ONNX model, its request schema, enrichment and preprocessing."""

    name: str
    model_path: Path
    metadata: dict[str, Any]
    features: tuple[ColumnSpec, ...]
    preprocessing: tuple[PreprocessStep, ...]
    enrichment_via: str
    lookups: tuple[EnrichmentLookup, ...]
    allow_missing_features: bool
    outputs: tuple[str, str]
    strict_types: bool = False
    explanations: ExplanationSettings = field(default_factory=ExplanationSettings)
    reference: dict[str, Any] = field(default_factory=dict)
    generations: tuple = ()  # generations.Generation, the first being model_path's
    dispatch: tuple[tuple[str, float], ...] = ()  # (generation, weight) in declaration order
    query_log: Any = None  # audit.QueryLogSpec


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may cost."""

    max_body_bytes: int = 1_048_576
    max_batch_items: int = 1000
    request_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    header_timeout_seconds: float = 5.0
    keep_alive_seconds: float = 30.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1000
    max_connections_per_client: int = 256
    max_request_line_bytes: int = 8192
    max_header_count: int = 100
    max_header_bytes: int = 32768


@dataclass(frozen=True)
class ServiceDefinition:
    """One service: its tables, endpoints, remotes and limits."""

    id: str
    version: str
    root: Path
    tables: dict[str, TableSpec]
    lookups: dict[str, LookupEndpoint]
    predictions: dict[str, PredictionEndpoint]
    remotes: dict[str, RemoteSpec]
    limits: Limits = field(default_factory=Limits)


class _Reader:
    """Typed access to a raw mapping that reports errors with their key path."""

    def __init__(self, file: Path, path: str, raw: Any) -> None:
        self.file, self.path = file, path
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {type(raw).__name__}")
        self.raw = raw

    def fail(self, key: str, reason: str) -> None:
        raise DefinitionError(f"{self.file}: {key}: {reason}")

    def child(self, key: str, default: Any = None) -> _Reader:
        raw = self.raw.get(key, default)
        return _Reader(self.file, f"{self.path}.{key}".lstrip("."), {} if raw is None else raw)

    def get(self, key: str, kind: type | tuple, default: Any = ..., choices: tuple = ()) -> Any:
        where = f"{self.path}.{key}".lstrip(".")
        if key not in self.raw or self.raw[key] is None:
            if default is ...:
                self.fail(where, "required")
            return default
        value = self.raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.fail(where, f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        if choices and value not in choices:
            self.fail(where, f"{value!r} is not one of {', '.join(map(str, choices))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            self.fail(where, f"must be positive, got {value!r}")
        return value

    def items(self) -> list[tuple[str, Any]]:
        return list(self.raw.items())


def _columns(reader: _Reader) -> tuple[ColumnSpec, ...]:
    columns = []
    for name, raw in reader.items():
        spec = raw if isinstance(raw, dict) else {"type": raw}
        column = _Reader(reader.file, f"{reader.path}.{name}", spec)
        pattern = column.get("pattern", str, None)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                column.fail(f"{column.path}.pattern", f"invalid regular expression: {error}")
        enum = column.get("enum", list, None)
        columns.append(
            ColumnSpec(
                name=str(name),
                type=column.get("type", str, choices=COLUMN_TYPES),
                pattern=pattern,
                enum=tuple(str(v) for v in enum) if enum is not None else None,
                example=spec.get("example"),
            )
        )
    if not columns:
        reader.fail(reader.path, "at least one column is required")
    return tuple(columns)


def _sql(reader: _Reader) -> SqlSpec | None:
    if not reader.raw:
        return None
    table, query = reader.get("table", str, None), reader.get("query", str, None)
    if (table is None) == (query is None):
        reader.fail(reader.path, "set exactly one of table or query")
    return SqlSpec(
        url=reader.get("url", str, None),
        table=table,
        query=query,
        key_query=reader.get("key_query", str, None),
        mode=reader.get("mode", str, "cached", choices=("cached", "live")),
        refresh_seconds=reader.get("refresh_seconds", float, 60.0),
        pool_size=reader.get("pool_size", int, 4),
        timeout_seconds=reader.get("timeout_seconds", float, 2.0),
        password_env=reader.get("password_env", str, "APINODE_SQL_PASSWORD"),
    )


def _table(root: Path, name: str, reader: _Reader) -> TableSpec:
    columns = _columns(reader.child("columns"))
    key = reader.get("key", str)
    if key not in {c.name for c in columns}:
        reader.fail(f"{reader.path}.key", f"{key!r} is not one of the columns")
    bundled = reader.child("bundled")
    bundled_path = bundled.get("path", str, None)
    table = TableSpec(
        name=name,
        key=key,
        columns=columns,
        source=reader.get("source", str, "bundled", choices=("bundled", "sql")),
        bundled_path=(root / bundled_path) if bundled_path else None,
        sql=_sql(reader.child("sql")),
    )
    if table.source == "bundled" and table.bundled_path is None:
        reader.fail(f"{reader.path}.bundled.path", "required when source is bundled")
    if table.source == "sql" and table.sql is None:
        reader.fail(f"{reader.path}.sql", "required when source is sql")
    if table.source == "sql" and not table.sql.url:
        reader.fail(f"{reader.path}.sql.url", "required when source is sql (or set APINODE_SQL_URL)")
    return table


def _policy(reader: _Reader, key: str, default: str, choices: tuple[str, ...]) -> str:
    return reader.get(key, str, default, choices=choices)


def explanation_settings(reader: _Reader, feature_count: int) -> ExplanationSettings:
    """The endpoint's ``explanations`` block, checked against the ranges a request is held to."""
    defaults = ExplanationSettings()
    settings = ExplanationSettings(
        enabled=reader.get("enabled", bool, defaults.enabled),
        method=reader.get("method", str, defaults.method, choices=EXPLANATION_METHODS),
        n_explanations=reader.get("n_explanations", int, min(defaults.n_explanations, feature_count)),
        n_monte_carlo_steps=reader.get("n_monte_carlo_steps", int, defaults.n_monte_carlo_steps),
        max_rows=reader.get("max_rows", int, defaults.max_rows),
    )
    if settings.n_explanations > feature_count:
        reader.fail(
            f"{reader.path}.n_explanations",
            f"at most the {feature_count} model inputs, got {settings.n_explanations}",
        )
    low, high = MONTE_CARLO_STEPS
    if not low <= settings.n_monte_carlo_steps <= high:
        reader.fail(f"{reader.path}.n_monte_carlo_steps", f"must be between {low} and {high}")
    return settings
