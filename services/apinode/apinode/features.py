"""Request validation compiled once from the definition: one small checker per feature."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable

from .definition import ColumnSpec
from .errors import InvalidFeatures, MalformedRequest

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Checker = Callable[[object], object]


def _string(spec: ColumnSpec) -> Checker:
    match = re.compile(spec.pattern).fullmatch if spec.pattern else None
    allowed = frozenset(spec.enum) if spec.enum is not None else None

    def check(value: object) -> object:
        if type(value) is not str:
            raise TypeError
        if match is not None and match(value) is None:
            raise ValueError(f"does not match {spec.pattern}")
        if allowed is not None and value not in allowed:
            raise ValueError(f"is not one of {sorted(allowed)}")
        return value

    return check


def _date(value: object) -> object:
    if type(value) is not str or not _ISO_DATE.match(value):
        raise TypeError
    dt.date.fromisoformat(value)
    return value


def _integer(value: object) -> object:
    kind = type(value)
    if kind is int:
        return value
    if kind is float and value.is_integer():
        return int(value)
    raise TypeError


def _number(value: object) -> object:
    kind = type(value)
    if kind is float or kind is int:
        return value
    raise TypeError


def _boolean(value: object) -> object:
    if type(value) is not bool:
        raise TypeError
    return value


_EXPECTED = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "date": "an ISO date (YYYY-MM-DD)",
}


def _checker(spec: ColumnSpec) -> Checker:
    return {
        "string": lambda: _string(spec),
        "date": lambda: _date,
        "integer": lambda: _integer,
        "number": lambda: _number,
        "boolean": lambda: _boolean,
    }[spec.type]()


class FeatureValidator:
    """Checks a mapping of features against declared columns; rejects unknown names and wrong types."""

    def __init__(self, specs: Iterable[ColumnSpec], what: str = "feature") -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._checkers = {name: _checker(spec) for name, spec in self._specs.items()}
        self._what = what

    def __call__(self, values: object, where: str) -> dict[str, object]:
        """A copy of ``values`` with nulls dropped (null means absent) and integral floats as ints."""
        if type(values) is not dict:
            raise MalformedRequest(
                f"{where} must be a JSON object", f"{where} must be a JSON object, got {_json_type(values)}"
            )
        clean: dict[str, object] = {}
        checkers = self._checkers
        for name, value in values.items():
            if value is None:
                continue
            checker = checkers.get(name)
            if checker is None:
                raise InvalidFeatures(
                    f"unknown {self._what} {name!r}",
                    f"{where}: unknown {self._what} {name!r}; known: {', '.join(self._specs)}",
                )
            try:
                clean[name] = checker(value)
            except (TypeError, ValueError) as error:
                spec = self._specs[name]
                reason = (
                    str(error)
                    if isinstance(error, ValueError) and str(error)
                    else f"expected {_EXPECTED[spec.type]}"
                )
                raise InvalidFeatures(
                    f"invalid {self._what} {name!r}: {reason}",
                    f"{where}.{name}: {reason}, got {_short(value)}",
                ) from None
        return clean


def _json_type(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
