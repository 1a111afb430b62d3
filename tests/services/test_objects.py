"""The plain objects behind the handlers, on their own: key index, table, transforms, auth, validation."""

from __future__ import annotations

import base64
import datetime as dt

import numpy as np
import pytest

from apinode.auth import ApiKeys
from apinode.bundle import EncodedColumn
from apinode.definition import ColumnSpec, TableSpec
from apinode.errors import Forbidden, InvalidFeatures, MalformedRequest, Unauthorized
from apinode.features import FeatureValidator
from apinode.index import DictIndex, PrefixedIntIndex
from apinode.table import Table
from apinode.transforms import months_since, months_since_one, years_since, years_since_one


def ids(*numbers):
    return np.array([f"C{n:07d}" for n in numbers])


LOOKALIKES = {
    "past-the-end": "C0001001",
    "zero": "C0000000",
    "lower-case-prefix": "c0000001",
    "six-digits": "C000001",
    "eight-digits": "C00000001",
    "other-prefix": "D0000001",
    "letter-in-digits": "C00000x1",
    "fullwidth-digit": "C\uff10000001",
    "not-a-string": 1,
}
DENSE = PrefixedIntIndex.build(ids(*range(1, 1001)))


def test_dense_ids_find_their_rows():
    assert DENSE.dense
    assert DENSE.rows("C0000001") == (0,) and DENSE.rows("C0001000") == (999,)
    assert DENSE.key_at(41) == "C0000042"
    every = ids(*range(1, 1001)).tolist()
    assert [DENSE.key_at(DENSE.rows(key)[0]) for key in every] == every
    other = PrefixedIntIndex.build(np.array([f"ORD-{n:09d}" for n in range(99_999_990, 100_000_010)]))
    assert other.dense and [other.key_at(i) for i in (0, 9, 10, 19)] == [
        "ORD-099999990", "ORD-099999999", "ORD-100000000", "ORD-100000009"]


@pytest.mark.parametrize("other", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
def test_dense_ids_reject_lookalikes(other):
    assert DENSE.rows(other) == ()


def test_shuffled_and_duplicated_ids_use_the_sorted_array():
    index = PrefixedIntIndex.build(ids(30, 10, 20, 10))
    assert not index.dense
    assert index.rows("C0000020") == (2,)
    assert sorted(index.rows("C0000010")) == [1, 3]
    assert index.rows("C0000015") == ()


def test_keys_of_other_shapes_fall_back_to_a_dict():
    assert PrefixedIntIndex.build(np.array(["alice", "bob"])) is None
    assert PrefixedIntIndex.build(np.array(["C1", "C22"])) is None
    index = DictIndex(["alice", "bob", "alice"])
    assert index.rows("alice") == (0, 2) and index.rows("carol") == () and index.rows(["unhashable"]) == ()


def test_table_rows_are_typed_like_the_definition():
    spec = TableSpec(
        "t",
        "customer_id",
        (
            ColumnSpec("customer_id", "string"),
            ColumnSpec("born", "date"),
            ColumnSpec("n", "integer"),
            ColumnSpec("x", "number"),
            ColumnSpec("colour", "string"),
        ),
        "bundled",
        None,
        None,
    )
    table = Table(
        spec,
        {
            "customer_id": ids(1, 2),
            "born": np.array(["1980-02-29", "2001-12-31"]),
            "n": np.array([3, 4], dtype=np.int32),
            "x": np.array([0.5, 1.5]),
            "colour": EncodedColumn(np.array([1, 0], dtype=np.uint8), np.array(["blue", "red"])),
        },
        "test",
    )
    (row,) = table.rows("C0000001")
    assert table.row(row) == {
        "customer_id": "C0000001",
        "born": "1980-02-29",
        "n": 3,
        "x": 0.5,
        "colour": "red",
    }
    assert type(table.row(row)["n"]) is int


def test_table_rejects_data_that_contradicts_the_definition():
    spec = TableSpec("t", "k", (ColumnSpec("k", "string"), ColumnSpec("n", "integer")), "bundled", None, None)
    with pytest.raises(ValueError, match="'n' is declared integer"):
        Table(spec, {"k": ids(1), "n": np.array(["three"])}, "test")
    with pytest.raises(ValueError, match="missing declared columns"):
        Table(spec, {"k": ids(1)}, "test")


def test_scalar_transforms_equal_the_vectorised_ones_used_in_training():
    as_of = dt.date(2026, 6, 30)
    rng = np.random.default_rng(3)
    days = np.datetime64("1930-01-01") + rng.integers(0, 40000, 3000).astype("timedelta64[D]")
    dates = list(days.astype(str)) + ["2000-06-30", "2000-07-01", "2000-02-29", "2026-06-30", "2026-07-01"]
    assert [months_since_one(d, as_of) for d in dates] == months_since(dates, as_of).tolist()
    assert [years_since_one(d, as_of) for d in dates] == years_since(dates, as_of).tolist()


# (case id, date, as of, whole months, whole years): the answers a person would give. A month or a
# year is complete when the as-of day of month reaches the start's day (so a 29 February birthday
# comes on 1 March in other years, and a month from the 31st needs a 31st, or the next month).
KNOWN_DATES = [
    ("birthday-on-the-as-of-day", "1990-06-30", "2026-06-30", 432, 36),
    ("birthday-the-day-after", "1990-07-01", "2026-06-30", 431, 35),
    ("birthday-the-day-before", "1990-06-29", "2026-06-30", 432, 36),
    ("born-on-the-as-of-day", "2026-06-30", "2026-06-30", 0, 0),
    ("one-day-old", "2026-06-29", "2026-06-30", 0, 0),
    ("a-day-in-the-future", "2026-07-01", "2026-06-30", -1, -1),
    ("a-year-in-the-future", "2027-06-30", "2026-06-30", -12, -1),
    ("leap-day-birth-in-a-non-leap-year-feb-28", "2000-02-29", "2025-02-28", 299, 24),
    ("leap-day-birth-in-a-non-leap-year-mar-1", "2000-02-29", "2025-03-01", 300, 25),
    ("leap-day-birth-on-a-leap-day", "2000-02-29", "2024-02-29", 288, 24),
    ("leap-day-as-of-day", "1999-02-28", "2024-02-29", 300, 25),
    ("month-end-31st-to-feb-28", "2026-01-31", "2026-02-28", 0, 0),
    ("month-end-31st-to-mar-31", "2026-01-31", "2026-03-31", 2, 0),
    ("month-end-31st-to-apr-30", "2026-01-31", "2026-04-30", 2, 0),
    ("month-end-30th-to-dec-31", "2025-11-30", "2025-12-31", 1, 0),
    ("across-new-year", "2025-12-15", "2026-01-15", 1, 0),
    ("new-years-eve-to-new-year", "2025-12-31", "2026-01-01", 0, 0),
    ("first-of-month", "2026-05-01", "2026-06-01", 1, 0),
    ("eleven-months-and-a-day-short", "2025-07-01", "2026-06-30", 11, 0),
    ("a-full-year", "2025-06-30", "2026-06-30", 12, 1),
    ("old-customer", "1930-01-01", "2026-06-30", 1157, 96),
]


@pytest.mark.parametrize(
    "date, as_of, months, years", [case[1:] for case in KNOWN_DATES], ids=[case[0] for case in KNOWN_DATES]
)
def test_transforms_give_the_known_answers(date, as_of, months, years):
    as_of = dt.date.fromisoformat(as_of)
    assert months_since_one(date, as_of) == months, "serving (one row)"
    assert years_since_one(date, as_of) == years, "serving (one row)"
    assert months_since([date], as_of).tolist() == [months], "training (vectorised)"
    assert years_since([date], as_of).tolist() == [years], "training (vectorised)"


def basic(user: str, password: str = "") -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


KEYS = ApiKeys(("alpha", "beta"))


@pytest.mark.parametrize(
    "header",
    [basic("beta"), basic("alpha", "ignored-password"), basic("alpha", "pass:word"), b"Bearer alpha",
     b"bearer alpha", b"BEARER beta"],
    ids=["basic-username", "basic-with-password", "basic-password-with-a-colon", "bearer", "bearer-lower-case",
         "bearer-upper-case"],
)
def test_api_keys_basic_username_or_bearer(header):
    ApiKeys(("alpha", "beta")).check(header)
    ApiKeys(("alpha", "beta")).check(header)  # twice: the second time from the accepted set


@pytest.mark.parametrize(
    "header, error",
    [
        (None, Unauthorized),
        (b"", Unauthorized),
        (b"Basic !!!", Unauthorized),
        (b"Digest alpha", Unauthorized),
        (b"alpha", Unauthorized),
        (basic("gamma"), Forbidden),
        (b"Bearer alph", Forbidden),
        (b"Bearer alphaa", Forbidden),
        (b"Bearer ", Forbidden),
        (b"Bearer alpha beta", Forbidden),
        (basic(""), Forbidden),
        (basic("Alpha"), Forbidden),
    ],
    ids=[
        "missing",
        "empty",
        "basic-not-base64",
        "other-scheme",
        "no-scheme",
        "basic-wrong-key",
        "bearer-prefix-of-a-key",
        "bearer-key-plus-a-letter",
        "bearer-empty",
        "bearer-key-and-another-word",
        "basic-empty-username",
        "basic-other-case",
    ],
)
def test_api_keys_refuse_with_the_right_error(header, error):
    keys = ApiKeys(("alpha", "beta"))
    keys.check(b"Bearer alpha")  # an accepted key must not open the door for the others
    with pytest.raises(error) as caught:
        keys.check(header)
    assert caught.value.message


VALIDATE = FeatureValidator(
    [
        ColumnSpec("id", "string", pattern="^C[0-9]{7}$"),
        ColumnSpec("n", "integer"),
        ColumnSpec("x", "number"),
        ColumnSpec("d", "date"),
        ColumnSpec("b", "boolean"),
        ColumnSpec("colour", "string", enum=("red", "blue")),
    ],
    strict=True,
)


def test_strict_validator_normalises():
    clean = VALIDATE({"id": "C0000001", "n": 3.0, "x": 2, "d": "2020-02-29", "b": False, "colour": "red"}, "f")
    assert clean == {"id": "C0000001", "n": 3, "x": 2, "d": "2020-02-29", "b": False, "colour": "red"}
    assert type(clean["n"]) is int and type(clean["x"]) is int and type(clean["b"]) is bool
    assert VALIDATE({"id": None}, "f") == {}
    assert VALIDATE({"x": 2.5, "b": True}, "f") == {"x": 2.5, "b": True}


# (case id, values, name the message must quote, words of the detailed message)
INVALID = [
    ("integer-with-a-fraction", {"n": 3.5}, "'n'", "expected an integer"),
    ("integer-as-boolean", {"n": True}, "'n'", "expected an integer"),
    ("integer-as-string", {"n": "3"}, "'n'", "expected an integer"),
    ("number-as-string", {"x": "1"}, "'x'", "expected a number"),
    ("number-as-boolean", {"x": False}, "'x'", "expected a number"),
    ("date-not-in-the-calendar", {"d": "2021-02-29"}, "'d'", "f.d:"),
    ("date-without-dashes", {"d": "20200101"}, "'d'", "expected an ISO date"),
    ("date-as-number", {"d": 20200101}, "'d'", "expected an ISO date"),
    ("string-against-its-pattern", {"id": "C1"}, "'id'", "does not match"),
    ("string-as-number", {"id": 1}, "'id'", "expected a string"),
    ("string-outside-its-enum", {"colour": "green"}, "'colour'", "is not one of"),
    ("boolean-as-number", {"b": 1}, "'b'", "expected true or false"),
    ("unknown-name", {"zzz": 1}, "'zzz'", "known: id, n"),
]


@pytest.mark.parametrize("values, name, words", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_strict_validator_explains_what_is_wrong(values, name, words):
    with pytest.raises(InvalidFeatures) as caught:
        VALIDATE({"id": "C0000001", **values}, "f")
    assert name in caught.value.message
    assert words in caught.value.message + caught.value.detail


@pytest.mark.parametrize(
    "values, seen",
    [(["id"], "an array"), ("C0000001", "a string"), (None, "null"), (3, "a number"), (2.5, "a number"),
     (True, "a boolean")],
    ids=["array", "string", "null", "integer", "float", "boolean"],
)
def test_validator_refuses_what_is_not_an_object(values, seen):
    with pytest.raises(MalformedRequest, match="must be a JSON object") as caught:
        VALIDATE(values, "f")
    assert caught.value.detail == f"f must be a JSON object, got {seen}"
