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


def test_dense_ids_find_their_rows_and_reject_lookalikes():
    index = PrefixedIntIndex.build(ids(*range(1, 1001)))
    assert index.dense
    assert index.rows("C0000001") == (0,) and index.rows("C0001000") == (999,)
    for other in (
        "C0001001",
        "C0000000",
        "c0000001",
        "C000001",
        "C00000001",
        "D0000001",
        "C00000x1",
        "C０000001",
        1,
    ):
        assert index.rows(other) == (), other
    assert index.key_at(41) == "C0000042"


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


def basic(user: str, password: str = "") -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def test_api_keys_basic_username_or_bearer():
    keys = ApiKeys(("alpha", "beta"))
    keys.check(basic("beta"))
    keys.check(b"Bearer alpha")
    keys.check(b"bearer alpha")
    with pytest.raises(Unauthorized):
        keys.check(None)
    with pytest.raises(Unauthorized):
        keys.check(b"Basic !!!")
    for wrong in (basic("gamma"), b"Bearer alph", b"Bearer alphaa", basic("")):
        with pytest.raises(Forbidden):
            keys.check(wrong)


def test_strict_validator_normalises_and_explains():
    validate = FeatureValidator(
        [
            ColumnSpec("id", "string", pattern="^C[0-9]{7}$"),
            ColumnSpec("n", "integer"),
            ColumnSpec("x", "number"),
            ColumnSpec("d", "date"),
            ColumnSpec("b", "boolean"),
        ],
        strict=True,
    )
    clean = validate({"id": "C0000001", "n": 3.0, "x": 2, "d": "2020-02-29", "b": False}, "f")
    assert clean == {"id": "C0000001", "n": 3, "x": 2, "d": "2020-02-29", "b": False}
    assert type(clean["n"]) is int
    assert validate({"id": None}, "f") == {}
    for bad, name in [
        ({"n": 3.5}, "'n'"),
        ({"n": True}, "'n'"),
        ({"x": "1"}, "'x'"),
        ({"d": "2021-02-29"}, "'d'"),
        ({"d": "20200101"}, "'d'"),
        ({"id": "C1"}, "'id'"),
        ({"b": 1}, "'b'"),
        ({"zzz": 1}, "'zzz'"),
    ]:
        with pytest.raises(InvalidFeatures, match=name):
            validate(bad, "f")
    with pytest.raises(MalformedRequest):
        validate(["id"], "f")
