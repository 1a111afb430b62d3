"""The bundles hold exactly the contract's columns, types and value domains, and agree with each other."""

from __future__ import annotations

import re

import numpy as np
import pytest
from apinode.transforms import months_since, years_since

from flow import constants as c
from flow.artifacts import FEATURES_DATA, REPO_ROOT, SCORING_DATA

DEMOGRAPHICS_KINDS = {
    "customer_id": "U", "birthdate": "U", "gender": "U", "region": "U", "campaign_status": "U",
    "signup_date": "U", "channel": "U", "household_size": np.int32, "income_band": "U",
}
BEHAVIOR_KINDS = {
    "customer_id": "U", "orders_12m": np.int32, "spend_12m": np.float64, "avg_basket": np.float64,
    "recency_days": np.int32, "distinct_categories": np.int32, "top_category": "U", "return_rate": np.float64,
}


def _assert_types(columns, kinds):
    assert list(columns) == list(kinds)
    for name, kind in kinds.items():
        actual = columns[name].dtype
        assert (actual.kind == "U") if kind == "U" else (actual == kind), f"{name}: {actual}"


def check_demographics(d):
    _assert_types(d, DEMOGRAPHICS_KINDS)
    ids = d["customer_id"]
    assert all(re.fullmatch(r"C\d{7}", value) for value in ids[:: max(1, len(ids) // 1000)])
    assert ids[0] == "C0000001" and ids[-1] == f"C{len(ids):07d}"
    assert np.all(ids[1:] > ids[:-1]), "ids must be sorted and unique"
    age = years_since(d["birthdate"], c.AS_OF)
    assert age.min() >= 18 and age.max() <= 90
    assert 35 <= np.median(age) <= 50
    tenure = months_since(d["signup_date"], c.AS_OF)
    assert tenure.min() >= 0 and 100 <= tenure.max() <= 120, "signups spread over about ten years"
    eighteenth = np.array([f"{int(day[:4]) + 18}{day[4:]}" for day in d["birthdate"]])
    assert np.all(d["signup_date"] >= eighteenth), "signed up before turning 18"  # ISO strings sort as dates
    assert set(d["gender"]) == set(c.GENDERS)
    assert set(d["region"]) == set(c.REGIONS)
    assert set(d["campaign_status"]) == set(c.CAMPAIGN_STATUSES)
    assert set(d["channel"]) == set(c.CHANNELS)
    assert set(d["income_band"]) == set(c.INCOME_BANDS)
    assert d["household_size"].min() >= 1 and d["household_size"].max() <= 8
    shares = np.unique(d["region"], return_counts=True)[1] / len(ids)
    assert shares.max() > 2 * shares.min(), "regions should not be equally populated"


def check_behavior(b, demographics_ids):
    _assert_types(b, BEHAVIOR_KINDS)
    assert np.array_equal(b["customer_id"], demographics_ids)
    orders, spend, basket = b["orders_12m"], b["spend_12m"], b["avg_basket"]
    none = orders == 0
    assert 0.05 < none.mean() < 0.35, "some customers, not most, bought nothing in the year"
    assert np.all(spend[none] == 0) and np.all(basket[none] == 0)
    assert np.all(b["recency_days"][none] == 365) and np.all(b["top_category"][none] == "none")
    assert np.all(b["distinct_categories"][none] == 0) and np.all(b["return_rate"][none] == 0)
    active = ~none
    assert np.all(spend[active] > 0)
    assert np.allclose(basket[active] * orders[active], spend[active], atol=0.005 * orders[active].max())
    assert np.all(np.abs(basket[active] * orders[active] - spend[active]) <= 0.005 * orders[active] + 1e-9)
    assert np.all((b["recency_days"][active] >= 0) & (b["recency_days"][active] < 365))
    assert np.all(b["distinct_categories"][active] >= 1)
    assert np.all(b["distinct_categories"] <= np.minimum(orders, len(c.CATEGORIES)))
    assert set(b["top_category"][active]) <= set(c.CATEGORIES)
    assert np.all((b["return_rate"] >= 0) & (b["return_rate"] <= 1))
    for name, decimals in (("spend_12m", 2), ("avg_basket", 2), ("return_rate", 4)):
        assert np.array_equal(b[name], np.round(b[name], decimals)), f"{name} not rounded to {decimals}"
    # Over-dispersed order counts: variance well above the mean (a plain Poisson would have them equal).
    assert orders.var() > 3 * orders.mean()
    # Fashion is returned far more often than groceries.
    top = b["top_category"]
    assert b["return_rate"][top == "fashion"].mean() > 2 * b["return_rate"][top == "grocery"].mean()


def test_small_bundles_follow_the_contract(small_bundles):
    demographics, behavior = small_bundles
    check_demographics(demographics)
    check_behavior(behavior, demographics["customer_id"])


@pytest.mark.parametrize("data", [FEATURES_DATA, SCORING_DATA], ids=["customer-features", "customer-scoring"])
def test_committed_bundles_follow_the_contract(data, read_decoded):
    folder = REPO_ROOT / data
    demographics = read_decoded(folder / "demographics.npz")
    behavior = read_decoded(folder / "behavior.npz")
    assert len(demographics["customer_id"]) == c.DEFAULT_CUSTOMERS
    check_demographics(demographics)
    check_behavior(behavior, demographics["customer_id"])
