"""An in-memory keyed table: typed columns checked against the definition, an index, row dicts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import numpy as np

from .bundle import EncodedColumn
from .definition import TableSpec
from .index import DictIndex, PrefixedIntIndex

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_KINDS = {"integer": "iu", "number": "iuf", "boolean": "b", "string": "UO", "date": "UOM"}


class TableError(ValueError):
    """Data that does not match its declared columns."""


def _date_getter(values: np.ndarray) -> Callable[[int], str | None]:
    """Dates kept as int32 days (4 bytes a row instead of 40) and formatted on the way out."""
    dates = values.astype("datetime64[D]")
    missing = np.isnat(dates)
    days = dates.view(np.int64)
    compact = days if missing.any() else days.astype(np.int32)
    if missing.any():
        return lambda row: (
            None if missing[row] else dt.date.fromordinal(int(compact[row]) + _EPOCH_ORDINAL).isoformat()
        )
    fromordinal, item = dt.date.fromordinal, compact.item
    return lambda row: fromordinal(item(row) + _EPOCH_ORDINAL).isoformat()


def _getter(name: str, kind: str, values: np.ndarray | EncodedColumn, where: str) -> Callable[[int], object]:
    if isinstance(values, EncodedColumn):
        if kind not in ("string", "date"):
            raise TableError(f"{where}: column {name!r} is declared {kind} but holds strings")
        categories = values.categories.tolist()
        item = values.codes.item
        return lambda row: categories[item(row)]
    if values.dtype.kind not in _KINDS[kind]:
        raise TableError(f"{where}: column {name!r} is declared {kind} but holds {values.dtype}")
    if kind == "date":
        try:
            return _date_getter(values)
        except ValueError as error:
            raise TableError(
                f"{where}: column {name!r} holds a value that is not an ISO date: {error}"
            ) from None
    return values.item


class Table:
    """Rows of a dataset by key; immutable once built, so a refresh swaps a whole new Table."""

    def __init__(
        self, spec: TableSpec, columns: Mapping[str, np.ndarray | EncodedColumn], where: str
    ) -> None:
        missing = [c.name for c in spec.columns if c.name not in columns]
        if missing:
            raise TableError(f"{where}: missing declared columns {missing}")
        lengths = {len(columns[c.name]) for c in spec.columns}
        if len(lengths) > 1:
            raise TableError(f"{where}: columns differ in length")
        self.size = lengths.pop()
        keys = columns[spec.key]
        keys = keys.decode() if isinstance(keys, EncodedColumn) else keys
        compact = PrefixedIntIndex.build(keys) if isinstance(keys, np.ndarray) else None
        self.index = compact or DictIndex(keys.tolist() if isinstance(keys, np.ndarray) else list(keys))
        getters: list[tuple[str, Callable[[int], object]]] = []
        for column in spec.columns:
            if column.name == spec.key and compact is not None and compact.dense:
                getters.append((column.name, compact.key_at))
            else:
                getters.append((column.name, _getter(column.name, column.type, columns[column.name], where)))
        self._getters = tuple(getters)
        self.names = tuple(name for name, _ in getters)

    def rows(self, key: object) -> tuple[int, ...]:
        return self.index.rows(key)

    def getters(self, names) -> tuple[Callable[[int], object], ...]:
        """Value readers for some columns, for callers that need only those."""
        by_name = dict(self._getters)
        return tuple(by_name[name] for name in names)

    def row(self, position: int) -> dict[str, object]:
        return {name: get(position) for name, get in self._getters}
