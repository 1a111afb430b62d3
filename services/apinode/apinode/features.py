"""Request validation compiled once from the definition: one small checker per feature.

Two modes. Lenient (the default, as Dataiku's API node): a number sent as a string ("3") is
coerced, a date may be an ISO timestamp (``1971-11-29T00:00:00.000Z``, taken as its UTC date),
a string feature accepts a number, a boolean "true"/"false". Strict (``strict_types: true``):
only the JSON type declared. Either way a value that cannot be read as its type is a 400 naming it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable

from .definition import ColumnSpec
from .errors import InvalidFeatures, MalformedRequest

# ASCII classes only, written so the same pattern means the same in Python and in the OpenAPI
# document (ECMA regular expressions): Python's \d also matches other scripts' digits.
ISO_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# A date with a time of day, as Dataiku writes dates: 1971-11-29T00:00:00.000Z, or with an offset.
ISO_TIMESTAMP_PATTERN = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
    "(:[0-9]{2}([.][0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)
NUMBER_PATTERN = "^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"
BOOLEAN_STRINGS = ("true", "false")
_ISO_DATE = re.compile(ISO_DATE_PATTERN)
_ISO_TIMESTAMP = re.compile(ISO_TIMESTAMP_PATTERN)
_NUMBER = re.compile(NUMBER_PATTERN)
_INT64 = 2**63
Checker = Callable[[object], object]


def _string(spec: ColumnSpec, lenient: bool) -> Checker:
    match = re.compile(spec.pattern).fullmatch if spec.pattern else None
    allowed = frozenset(spec.enum) if spec.enum is not None else None

    def check(value: object) -> object:
        kind = type(value)
        if kind is not str:
            # A number for a free-form string ("household": 3); never for a patterned or enumerated one.
            if not lenient or kind not in (int, float) or match is not None or allowed is not None:
                raise TypeError
            value = str(value)
        if match is not None and match(value) is None:
            raise ValueError(f"does not match {spec.pattern}")
        if allowed is not None and value not in allowed:
            raise ValueError(f"is not one of {sorted(allowed)}")
        return value

    return check


def _strict_date(value: object) -> object:
    if type(value) is not str or not _ISO_DATE.match(value):
        raise TypeError
    dt.date.fromisoformat(value)
    return value


def _lenient_date(value: object) -> object:
    if type(value) is not str:
        raise TypeError
    if _ISO_DATE.match(value):
        dt.date.fromisoformat(value)
        return value
    if not _ISO_TIMESTAMP.match(value):
        raise TypeError
    text = value[:10] + "T" + value[11:]
    text = text[:-1] + "+00:00" if text[-1] in "zZ" else text
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # +0100 -> +01:00
        text = f"{text[:-2]}:{text[-2:]}"
    moment = dt.datetime.fromisoformat(_fraction_to_micros(text))
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return moment.date().isoformat()


def _fraction_to_micros(text: str) -> str:
    """Python < 3.11 reads only 3 or 6 fraction digits; pad or cut to 6."""
    head, dot, rest = text.partition(".")
    if not dot:
        return text
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{(rest[:digits] + '000000')[:6]}{rest[digits:]}"


def _parse_number(text: str) -> float | int:
    if not _NUMBER.match(text):
        raise TypeError
    if text.lstrip("+-").isdigit():
        number = int(text)
        if not -_INT64 <= number < _INT64:  # what an int64 holds
            raise TypeError
        return number
    number = float(text)
    if not math.isfinite(number):
        raise TypeError
    return number


def _integer(lenient: bool) -> Checker:
    def check(value: object) -> object:
        kind = type(value)
        if kind is int:
            return value
        if kind is str and lenient:
            value = _parse_number(value)
            kind = type(value)
            if kind is int:
                return value
        if kind is float and value.is_integer():
            return int(value)
        raise TypeError

    return check


def _number(lenient: bool) -> Checker:
    def check(value: object) -> object:
        kind = type(value)
        if kind is float or kind is int:
            return value
        if kind is str and lenient:
            return _parse_number(value)
        raise TypeError

    return check


def _boolean(lenient: bool) -> Checker:
    def check(value: object) -> object:
        if type(value) is bool:
            return value
        if lenient and type(value) is str and value in BOOLEAN_STRINGS:
            return value == "true"
        raise TypeError

    return check


_EXPECTED = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "date": "an ISO date (YYYY-MM-DD)",
}
_EXPECTED_LENIENT = {
    **_EXPECTED,
    "integer": "an integer (or a string holding one)",
    "number": "a number (or a string holding one)",
    "date": "an ISO date (YYYY-MM-DD) or timestamp (YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM])",
}


def passthrough(spec: ColumnSpec) -> tuple[type, ...]:
    """The value types its checker returns unchanged whatever the value (no pattern, no range):
    those skip the call. Exact types: a bool is not an int here, as in the checkers."""
    if spec.type == "integer":
        return (int,)
    if spec.type == "number":
        return (float, int)
    if spec.type == "boolean":
        return (bool,)
    if spec.type == "string" and not spec.pattern and spec.enum is None:
        return (str,)
    return ()


def _checker(spec: ColumnSpec, lenient: bool) -> Checker:
    if spec.type == "string":
        return _string(spec, lenient)
    if spec.type == "date":
        return _lenient_date if lenient else _strict_date
    return {"integer": _integer, "number": _number, "boolean": _boolean}[spec.type](lenient)


class FeatureValidator:
    """Checks a mapping of features against declared columns; rejects unknown names and wrong types."""

    def __init__(self, specs: Iterable[ColumnSpec], what: str = "feature", strict: bool = False) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._checkers = {name: _checker(spec, not strict) for name, spec in self._specs.items()}
        self._passthrough = {name: passthrough(spec) for name, spec in self._specs.items()}
        self._expected = _EXPECTED if strict else _EXPECTED_LENIENT
        self._what = what

    def __call__(self, values: object, where: str) -> dict[str, object]:
        """A copy of ``values`` with nulls dropped (null means absent), values in their declared types."""
        if type(values) is not dict:
            raise MalformedRequest(
                f"{where} must be a JSON object", f"{where} must be a JSON object, got {_json_type(values)}"
            )
        clean: dict[str, object] = {}
        checkers, passthrough_types = self._checkers, self._passthrough
        for name, value in values.items():
            if value is None:
                continue
            if type(value) in passthrough_types.get(name, ()):  # the common case: no call
                clean[name] = value
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
                    if isinstance(error, ValueError) and str(error) and not _is_parse_error(error)
                    else f"expected {self._expected[spec.type]}"
                )
                raise InvalidFeatures(
                    f"invalid {self._what} {name!r}: {reason}",
                    f"{where}.{name}: {reason}, got {_short(value)}",
                ) from None
        return clean


def _is_parse_error(error: ValueError) -> bool:
    """A date library's own message ("month must be in 1..12") reads better as what was expected."""
    return not str(error).startswith(("does not match", "is not one of"))


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
