"""Customers: who they are (the demographics bundle) and the hidden traits that drive their behaviour."""

from __future__ import annotations

import dataclasses

import numpy as np

from flow import constants as c
from flow.sampling import choice_rows, iso_dates, sigmoid, softmax

_DAYS_PER_YEAR = 365.2425
_SIGNUP_HISTORY_DAYS = 3652  # the business has about ten years of customers


@dataclasses.dataclass(frozen=True)
class Traits:
    """Hidden per-customer quantities: never published, they generate behaviour and the label."""

    engagement: np.ndarray  # standard-normal-ish appetite for shopping
    income_level: np.ndarray  # 0..3, the income band as a number
    campaign_level: np.ndarray  # 0..3, the campaign status as a number
    channel_index: np.ndarray  # index into CHANNELS
    tenure_days: np.ndarray


def customer_ids(count: int) -> np.ndarray:
    """``C0000001`` upward, sorted."""
    if not 1 <= count <= c.MAX_CUSTOMERS:
        raise ValueError(f"customer count must be 1..{c.MAX_CUSTOMERS}, got {count}")
    return np.char.add("C", np.char.zfill(np.arange(1, count + 1).astype("U7"), 7))


def _age_bounds_days() -> tuple[int, int]:
    """Birthdate offsets (days before as_of) that give whole ages 18 and 90 on as_of."""
    as_of = np.datetime64(c.AS_OF, "D")
    youngest = as_of - np.datetime64(c.AS_OF.replace(year=c.AS_OF.year - 18), "D")
    oldest = as_of - np.datetime64(c.AS_OF.replace(year=c.AS_OF.year - 91), "D") - np.timedelta64(1, "D")
    return int(youngest.astype(int)), int(oldest.astype(int))


def _days_since_eighteenth(birthdates: np.ndarray, as_of: np.datetime64) -> np.ndarray:
    """Days from each 18th birthday (calendar years, leap days included) to ``as_of``."""
    birth_months = birthdates.astype("datetime64[M]")
    day_in_month = birthdates - birth_months.astype("datetime64[D]")
    eighteenth = (birth_months + np.timedelta64(18 * 12, "M")).astype("datetime64[D]") + day_in_month
    return (as_of - eighteenth).astype(np.int64)


def generate_demographics(rng: np.random.Generator, count: int) -> tuple[dict[str, np.ndarray], Traits]:
    """The demographics columns (contract order) and the traits behind them."""
    as_of = np.datetime64(c.AS_OF, "D")
    youngest_days, oldest_days = _age_bounds_days()
    # Adults 18-90, most of them 25-60: a stretched beta.
    age_days = np.rint((18 + 72 * rng.beta(2.0, 3.6, count)) * _DAYS_PER_YEAR).astype(np.int64)
    age_days = np.clip(age_days, youngest_days, oldest_days)
    age = age_days / _DAYS_PER_YEAR

    gender = rng.choice(len(c.GENDERS), size=count, p=c.GENDER_WEIGHTS)
    region = rng.choice(len(c.REGIONS), size=count, p=c.REGION_WEIGHTS)

    # Income rises to the mid-fifties, then falls; London and the south-east earn more.
    region_uplift = np.array([0.6, 0.35, 0.0, -0.05, 0.0, 0.05, -0.2, -0.25])[region]
    income_score = 0.9 * np.exp(-(((age - 55) / 22) ** 2)) + region_uplift + rng.normal(0, 1, count)
    income_level = np.searchsorted(np.array([-0.1, 1.1, 1.9]), income_score)

    # Bigger households in the thirties and forties.
    household_mean = 0.4 + 1.6 * np.exp(-(((age - 40) / 12) ** 2))
    household_size = np.minimum(1 + rng.poisson(household_mean), 8).astype(np.int32)

    # Younger customers favour the app, older ones the store.
    channel_logits = np.stack(
        [np.zeros(count), 1.2 - 0.045 * (age - 18), -0.9 + 0.03 * (age - 18)], axis=1
    )
    channel_index = choice_rows(rng, softmax(channel_logits))

    # Signups grow over the years (more recent ones likelier), never before an 18th birthday.
    tenure_days = np.floor(_SIGNUP_HISTORY_DAYS * rng.random(count) ** 1.6).astype(np.int64)
    birthdates = as_of - age_days.astype("timedelta64[D]")
    tenure_days = np.minimum(tenure_days, _days_since_eighteenth(birthdates, as_of))

    engagement = 0.35 * (income_level - 1.2) + 0.25 * np.log1p(tenure_days / 365) + rng.normal(0, 0.9, count)

    # Marketing targets engaged customers; the engaged ones respond and convert more.
    contacted = rng.random(count) < sigmoid(-0.3 + 0.5 * engagement)
    responded = contacted & (rng.random(count) < sigmoid(-1.0 + 0.6 * engagement))
    converted = responded & (rng.random(count) < sigmoid(-0.6 + 0.4 * engagement))
    campaign_level = contacted.astype(np.int64) + responded + converted

    columns = {
        "customer_id": customer_ids(count),
        "birthdate": iso_dates(age_days, as_of),
        "gender": np.array(c.GENDERS)[gender],
        "region": np.array(c.REGIONS)[region],
        "campaign_status": np.array(c.CAMPAIGN_STATUSES)[campaign_level],
        "signup_date": iso_dates(tenure_days, as_of),
        "channel": np.array(c.CHANNELS)[channel_index],
        "household_size": household_size,
        "income_band": np.array(c.INCOME_BANDS)[income_level],
    }
    traits = Traits(engagement, income_level, campaign_level, channel_index, tenure_days)
    return columns, traits
