"""What each feature type accepts and answers, against known values, in both validation modes.

Lenient (Dataiku's API node): a date may come as a timestamp, taken as its UTC date; numbers and
booleans may come as strings. Strict: only the declared JSON type. Each case is one id, so a
failure names the input. From the mutation check of issue 20 (docs/mutation.md): these branches
of apinode/features.py had no test with a known answer.
"""

from __future__ import annotations

import pytest

from apinode.definition import ColumnSpec
from apinode.errors import InvalidFeatures
from apinode.features import FeatureValidator

SPECS = [ColumnSpec("day", "date"), ColumnSpec("count", "integer"), ColumnSpec("amount", "number"),
         ColumnSpec("flag", "boolean"), ColumnSpec("note", "string"),
         ColumnSpec("code", "string", pattern="[A-Z]{2}"), ColumnSpec("colour", "string", enum=("red", "blue"))]
LENIENT, STRICT = FeatureValidator(SPECS), FeatureValidator(SPECS, strict=True)

# (id, field, sent, the value the lenient validator answers)
LENIENT_ACCEPTS = [
    ("date", "day", "1971-11-29", "1971-11-29"),
    ("dataiku-timestamp", "day", "1971-11-29T00:00:00.000Z", "1971-11-29"),
    ("lower-z-and-t", "day", "1971-11-29t10:00:00z", "1971-11-29"),
    ("space-separated", "day", "1971-11-29 10:00:00Z", "1971-11-29"),
    ("negative-offset-crosses-midnight", "day", "1971-11-29T23:30:00-02:00", "1971-11-30"),
    ("offset-without-colon", "day", "1971-11-29T00:30:00+0100", "1971-11-28"),
    ("half-hour-offset", "day", "2024-02-29T23:45:00-00:30", "2024-03-01"),
    ("leap-day", "day", "2024-02-29T12:00:00Z", "2024-02-29"),
    ("no-seconds-no-zone", "day", "1971-11-29T23:59", "1971-11-29"),
    ("nine-fraction-digits", "day", "1971-11-29T23:59:59.999999999+00:00", "1971-11-29"),
    ("one-fraction-digit", "day", "1971-11-29T00:00:00.5-01:00", "1971-11-29"),
    ("int", "count", 3, 3),
    ("int-as-text", "count", "3", 3),
    ("signed-int-as-text", "count", "-12", -12),
    ("whole-float", "count", 4.0, 4),
    ("whole-float-as-text", "count", "4.0", 4),
    ("number-int", "amount", 2, 2),
    ("number-as-text", "amount", "2.5", 2.5),
    ("exponent-as-text", "amount", "-2e3", -2000.0),
    ("leading-dot", "amount", ".5", 0.5),
    ("large-exponent", "amount", "1e300", 1e300),
    ("int64-max-as-text", "amount", "9223372036854775807", 9223372036854775807),
    ("int64-min-as-text", "count", "-9223372036854775808", -9223372036854775808),
    ("true", "flag", True, True),
    ("true-as-text", "flag", "true", True),
    ("false-as-text", "flag", "false", False),
    ("string", "note", "hello", "hello"),
    ("number-for-free-string", "note", 3, "3"),
    ("pattern", "code", "GB", "GB"),
    ("enum", "colour", "red", "red"),
]

# (id, field, sent): refused by the lenient validator, with the field named
LENIENT_REFUSES = [
    ("no-such-day", "day", "1971-02-30"),
    ("no-such-day-in-timestamp", "day", "1971-02-30T00:00:00Z"),
    ("hour-25", "day", "1971-11-29T25:00:00Z"),
    ("day-first", "day", "29/11/1971"),
    ("date-as-number", "day", 19711129),
    ("time-only", "day", "T10:00:00Z"),
    ("fraction-int", "count", 3.5),
    ("fraction-int-as-text", "count", "3.5"),
    ("int-over-int64", "amount", "9223372036854775808"),
    ("int-text-under-int64", "count", "-9223372036854775809"),
    ("infinite", "amount", "1e400"),
    ("nan-text", "amount", "nan"),
    ("spaces", "amount", " 3"),
    ("bool-for-number", "amount", True),
    ("bool-text-upper", "flag", "True"),
    ("bool-as-number", "flag", 1),
    ("number-for-pattern", "code", 12),
    ("number-for-enum", "colour", 1),
    ("pattern-mismatch", "code", "gb"),
    ("not-in-enum", "colour", "green"),
    ("list", "note", ["a"]),
]

# (id, field, sent): what strict mode refuses that lenient mode accepts
STRICT_ONLY_REFUSES = [
    ("timestamp", "day", "1971-11-29T00:00:00.000Z"),
    ("int-as-text", "count", "3"),
    ("number-as-text", "amount", "2.5"),
    ("bool-as-text", "flag", "true"),
    ("number-for-free-string", "note", 3),
]


@pytest.mark.parametrize("field,sent,expected", [c[1:] for c in LENIENT_ACCEPTS], ids=[c[0] for c in LENIENT_ACCEPTS])
def test_lenient_values_are_read_as_their_type(field, sent, expected):
    value = LENIENT({field: sent}, "features")[field]
    assert value == expected and type(value) is type(expected), (sent, value)


@pytest.mark.parametrize("field,sent", [c[1:] for c in LENIENT_REFUSES], ids=[c[0] for c in LENIENT_REFUSES])
def test_values_that_cannot_be_read_are_refused_naming_the_field(field, sent):
    with pytest.raises(InvalidFeatures) as caught:
        LENIENT({field: sent}, "features")
    assert f"invalid feature {field!r}" in caught.value.message
    assert f"features.{field}:" in caught.value.detail


@pytest.mark.parametrize("field,sent", [c[1:] for c in STRICT_ONLY_REFUSES], ids=[c[0] for c in STRICT_ONLY_REFUSES])
def test_strict_mode_takes_only_the_declared_json_type(field, sent):
    assert LENIENT({field: sent}, "features")[field] is not None
    with pytest.raises(InvalidFeatures) as caught:
        STRICT({field: sent}, "features")
    assert f"invalid feature {field!r}" in caught.value.message


@pytest.mark.parametrize("field,sent", [("day", "1971-11-29"), ("count", 3), ("amount", 2.5), ("flag", False),
                                        ("note", "x")], ids=["date", "int", "number", "bool", "string"])
def test_strict_mode_accepts_the_declared_type(field, sent):
    assert STRICT({field: sent}, "features") == {field: sent}


def test_null_means_absent_and_other_fields_are_kept():
    assert LENIENT({"day": None, "count": "7", "note": "n"}, "features") == {"count": 7, "note": "n"}


def test_the_reason_says_what_the_type_expects():
    with pytest.raises(InvalidFeatures) as caught:
        LENIENT({"day": "soon"}, "features")
    assert "ISO date (YYYY-MM-DD) or timestamp" in caught.value.message
    with pytest.raises(InvalidFeatures) as caught:
        STRICT({"day": "1971-11-29T00:00:00Z"}, "features")
    assert caught.value.message.endswith("expected an ISO date (YYYY-MM-DD)")
    with pytest.raises(InvalidFeatures) as caught:
        LENIENT({"colour": "green"}, "features")
    assert "is not one of ['blue', 'red']" in caught.value.message


# Values of each JSON type, edge values included, for the passthrough check below.
SAMPLES = [0, -7, 2**62, -(2**63), 2**63 - 1, 0.5, -1e300, 4.0, "", "x", "1971-11-29", "3", True, False]


@pytest.mark.parametrize("lenient", [True, False], ids=["lenient", "strict"])
def test_values_that_skip_the_checker_are_exactly_what_the_checker_would_answer(lenient):
    """The validators skip the checker call for types it returns unchanged (features.passthrough).
    Every declared column of both services and of SPECS: for each sample of such a type, the
    checker itself must answer the very value. A check added to a checker (a range, a pattern)
    that passthrough does not know about fails here instead of being skipped in production."""
    from apinode.features import _checker, passthrough
    from apinode.loader import load_definition
    from tests.apinode_proc import REPO

    specs = list(SPECS)
    for service in ("customer-features", "customer-scoring"):
        definition = load_definition(REPO / "services" / service, {})
        specs += [column for table in definition.tables.values() for column in table.columns]
        specs += [column for endpoint in definition.predictions.values() for column in endpoint.features]
    skipped = 0
    for spec in specs:
        kinds, check = passthrough(spec), _checker(spec, lenient)
        for value in SAMPLES:
            if type(value) in kinds:
                skipped += 1
                answered = check(value)
                assert answered == value and type(answered) is type(value), (spec, value, answered)
    assert skipped > 20, "no column took the shortcut: the test checks nothing"
