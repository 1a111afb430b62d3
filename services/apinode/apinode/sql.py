"""SQL access through SQLAlchemy: engines, the queries a table needs, rows to typed columns."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence

import numpy as np
import sqlalchemy as sa

from .definition import DefinitionError, SqlSpec, TableSpec
from .secrets import read_secret


def make_engine(spec: SqlSpec, env: Mapping[str, str], *, live: bool) -> sa.Engine:
    """A pooled engine; the password comes from the environment, never from the definition."""
    try:
        url = sa.make_url(spec.url)
    except sa.exc.ArgumentError as error:
        raise DefinitionError(f"sql url: {error}") from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    password = read_secret(env, spec.password_env)
    if password is not None:
        url = url.set(password=password)
    connect_args: dict[str, object] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, round(spec.timeout_seconds))
        if live:
            # The server cancels a slow query itself, so a pooled connection is not left busy.
            connect_args["options"] = f"-c statement_timeout={int(spec.timeout_seconds * 1000)}"
    return sa.create_engine(
        url,
        pool_size=spec.pool_size,
        max_overflow=0,
        pool_timeout=spec.timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=300,
        connect_args=connect_args,
    )


def _from(spec: SqlSpec, table: TableSpec) -> tuple[sa.TableClause, list[sa.ColumnClause]]:
    schema, _, name = spec.table.rpartition(".")
    columns = [sa.column(c.name) for c in table.columns]
    return sa.table(name, *columns, schema=schema or None), columns


def full_query(spec: SqlSpec, table: TableSpec) -> sa.Executable:
    if spec.query:
        return sa.text(spec.query)
    source, columns = _from(spec, table)
    return sa.select(*columns).select_from(source)


def keyed_query(spec: SqlSpec, table: TableSpec) -> sa.Executable:
    """Rows for a list of keys (bound parameter ``keys``), or one key (``key``) for a custom query."""
    if spec.query:
        if not spec.key_query:
            raise DefinitionError(
                f"tables.{table.name}.sql.key_query: required for live mode with a custom query"
            )
        return sa.text(spec.key_query)
    source, columns = _from(spec, table)
    key = sa.column(table.key)
    return sa.select(*columns).select_from(source).where(key.in_(sa.bindparam("keys", expanding=True)))


def plain(value: object) -> object:
    """A database value as JSON wants it."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def columns_from_rows(
    table: TableSpec, names: Sequence[str], rows: Sequence[Sequence]
) -> dict[str, np.ndarray]:
    """Typed numpy columns; a column with nulls stays an object array so nulls stay null."""
    positions = {name: i for i, name in enumerate(names)}
    columns: dict[str, np.ndarray] = {}
    for spec in table.columns:
        if spec.name not in positions:
            continue
        i = positions[spec.name]
        values = [plain(row[i]) for row in rows]
        if any(v is None for v in values):
            columns[spec.name] = np.array(values, dtype=object)
        elif spec.type == "integer":
            columns[spec.name] = np.array(values, dtype=np.int64)
        elif spec.type == "number":
            columns[spec.name] = np.array(values, dtype=np.float64)
        elif spec.type == "boolean":
            columns[spec.name] = np.array(values, dtype=bool)
        else:
            columns[spec.name] = np.array(values, dtype=str) if values else np.array([], dtype="U1")
    return columns


def describe(error: BaseException) -> str:
    """A short, password-free reason for logs and error bodies."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0] if text else 'no detail'}"
