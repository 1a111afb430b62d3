"""Synthetic transactions over the year before as_of, the behavior bundle, and the future-spend label."""

from __future__ import annotations

import dataclasses

import numpy as np

from flow import constants as c
from flow.demographics import Traits
from flow.sampling import sigmoid

_WINDOW_DAYS = 365
_FUTURE_MONTHS = 3
# Future 3-month spend above this (in currency units) makes a high spender: about a quarter of customers.
HIGH_SPENDER_THRESHOLD = 150.0
_CHANNEL_RATE = np.array([0.0, 0.15, -0.25])  # web, app, store
_CAMPAIGN_UPLIFT = np.array([0.0, 0.05, 0.3, 0.5])  # none, contacted, responded, converted


@dataclasses.dataclass(frozen=True)
class Transactions:
    """One row per order, grouped by customer (customer index ascending)."""

    customer: np.ndarray  # int32 index into the customer arrays
    days_ago: np.ndarray  # 0..364
    category: np.ndarray  # index into CATEGORIES
    amount_cents: np.ndarray  # int64
    returned: np.ndarray  # bool


@dataclasses.dataclass(frozen=True)
class Habits:
    """Per-customer shopping habits drawn from the traits."""

    monthly_rate: np.ndarray
    trend: np.ndarray  # >0: buying more lately and in the coming months
    basket_scale: np.ndarray
    favourite: np.ndarray
    favourite_share: np.ndarray
    return_propensity: np.ndarray


def draw_habits(rng: np.random.Generator, traits: Traits) -> Habits:
    """Order rate (over-dispersed: a gamma-mixed Poisson), basket size, tastes and returns."""
    count = len(traits.engagement)
    log_rate = (
        -0.75
        + 0.55 * traits.engagement
        + 0.12 * (traits.income_level - 1.2)
        + _CHANNEL_RATE[traits.channel_index]
    )
    dispersion = rng.gamma(1.3, 1 / 1.3, count)
    # About one customer in six has lapsed: still on file, barely buying.
    lapsed = rng.random(count) < sigmoid(-2.0 - 0.8 * traits.engagement)
    monthly_rate = np.exp(log_rate) * dispersion * np.where(lapsed, 0.04, 1.0)
    trend = rng.normal(0, 1, count)
    basket_scale = np.exp(0.22 * (traits.income_level - 1.2) + rng.normal(0, 0.3, count))
    favourite = rng.choice(len(c.CATEGORIES), size=count, p=c.CATEGORY_WEIGHTS)
    favourite_share = rng.beta(3.0, 2.5, count)
    return_propensity = np.exp(rng.normal(0, 0.6, count))
    return Habits(monthly_rate, trend, basket_scale, favourite, favourite_share, return_propensity)


def _category_of_orders(rng: np.random.Generator, habits: Habits, customer: np.ndarray) -> np.ndarray:
    """Each order is in the customer's favourite category or else in one drawn by overall popularity."""
    general = rng.choice(len(c.CATEGORIES), size=len(customer), p=c.CATEGORY_WEIGHTS)
    loyal = rng.random(len(customer)) < habits.favourite_share[customer]
    return np.where(loyal, habits.favourite[customer], general).astype(np.int8)


def _basket_cents(rng: np.random.Generator, habits: Habits, customer: np.ndarray, category: np.ndarray):
    """Log-normal order values around the category mean, scaled by the customer's basket habit."""
    mean = np.asarray(c.CATEGORY_MEAN_BASKET)[category] * habits.basket_scale[customer]
    values = mean * rng.lognormal(-0.125, 0.5, len(customer))  # -sigma^2/2 keeps the mean
    return np.maximum(np.rint(values * 100), 99).astype(np.int64)


def simulate_past_year(rng: np.random.Generator, habits: Habits) -> Transactions:
    """Orders over the 365 days up to as_of; customers trending up bought more recently."""
    orders = rng.poisson(habits.monthly_rate * 12)
    customer = np.repeat(np.arange(len(orders), dtype=np.int32), orders)
    # u ** k with k > 1 pushes days towards 0 (recent): rising customers ordered lately.
    skew = np.exp(0.6 * habits.trend)[customer]
    days_ago = np.floor(_WINDOW_DAYS * rng.random(len(customer)) ** skew).astype(np.int32)
    category = _category_of_orders(rng, habits, customer)
    amount_cents = _basket_cents(rng, habits, customer, category)
    return_chance = np.asarray(c.CATEGORY_RETURN_RATE)[category] * habits.return_propensity[customer]
    returned = rng.random(len(customer)) < np.minimum(return_chance, 0.9)
    return Transactions(customer, days_ago, category, amount_cents, returned)


def summarise(transactions: Transactions, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The behavior bundle columns (contract order) aggregated from the transactions."""
    count = len(ids)
    customer = transactions.customer
    orders = np.bincount(customer, minlength=count)
    # Sums of integer cents stay exact in float64 up to 2**53 cents.
    spend = np.round(np.bincount(customer, weights=transactions.amount_cents, minlength=count) / 100, 2)
    has_orders = orders > 0
    safe_orders = np.maximum(orders, 1)
    recency = np.full(count, _WINDOW_DAYS, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(orders)[:-1]])[has_orders]
    if len(customer):
        recency[has_orders] = np.minimum.reduceat(transactions.days_ago, starts)
    per_category = np.bincount(
        customer.astype(np.int64) * len(c.CATEGORIES) + transactions.category,
        minlength=count * len(c.CATEGORIES),
    ).reshape(count, len(c.CATEGORIES))
    top_category = np.where(has_orders, np.array(c.CATEGORIES)[per_category.argmax(axis=1)], "none")
    returns = np.bincount(customer, weights=transactions.returned, minlength=count)
    return {
        "customer_id": ids,
        "orders_12m": orders.astype(np.int32),
        "spend_12m": spend,
        "avg_basket": np.where(has_orders, np.round(spend / safe_orders, 2), 0.0),
        "recency_days": recency,
        "distinct_categories": (per_category > 0).sum(axis=1).astype(np.int32),
        "top_category": top_category.astype("U11"),
        "return_rate": np.where(has_orders, np.round(returns / safe_orders, 4), 0.0),
    }


def future_spend(rng: np.random.Generator, habits: Habits, traits: Traits, past: Transactions) -> np.ndarray:
    """Spend in the 3 months after as_of: the habits carried forward with the trend, campaigns and noise."""
    count = len(habits.monthly_rate)
    past_returns = np.bincount(past.customer, weights=past.returned, minlength=count)
    past_orders = np.maximum(np.bincount(past.customer, minlength=count), 1)
    heavy_returner = past_returns / past_orders > 0.2
    # The shock is what no feature can know: life events, a competitor's offer.
    shock = rng.gamma(2.5, 1 / 2.5, count)
    rate = (
        habits.monthly_rate
        * np.exp(0.45 * habits.trend + _CAMPAIGN_UPLIFT[traits.campaign_level] - 0.3 * heavy_returner)
        * shock
    )
    orders = rng.poisson(rate * _FUTURE_MONTHS)
    customer = np.repeat(np.arange(count, dtype=np.int32), orders)
    category = _category_of_orders(rng, habits, customer)
    cents = _basket_cents(rng, habits, customer, category)
    return np.round(np.bincount(customer, weights=cents, minlength=count) / 100, 2)
