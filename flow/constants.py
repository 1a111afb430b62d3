"""Fixed facts shared by generation and training: snapshot date, seed, vocabularies."""

from __future__ import annotations

import datetime as dt

AS_OF = dt.date(2026, 6, 30)
SEED = 20260630
DEFAULT_CUSTOMERS = 100_000
MAX_CUSTOMERS = 9_999_999  # ids are "C" + 7 digits
MODEL_NAME = "high-spender"

GENDERS = ("F", "M", "X")
GENDER_WEIGHTS = (0.505, 0.48, 0.015)

REGIONS = ("london", "south-east", "midlands", "north-west", "scotland", "south-west", "wales", "north-east")
REGION_WEIGHTS = (0.18, 0.16, 0.15, 0.13, 0.12, 0.10, 0.09, 0.07)

CAMPAIGN_STATUSES = ("none", "contacted", "responded", "converted")
CHANNELS = ("web", "app", "store")
INCOME_BANDS = ("low", "middle", "high", "very-high")

# Product categories: share of orders, mean basket value and chance an order is returned.
CATEGORIES = ("grocery", "fashion", "electronics", "home", "beauty", "sports", "toys", "books")
CATEGORY_WEIGHTS = (0.25, 0.18, 0.10, 0.12, 0.10, 0.09, 0.08, 0.08)
CATEGORY_MEAN_BASKET = (35.0, 60.0, 180.0, 90.0, 30.0, 70.0, 40.0, 20.0)
CATEGORY_RETURN_RATE = (0.01, 0.22, 0.09, 0.07, 0.04, 0.10, 0.05, 0.03)

DEMOGRAPHICS_COLUMNS = (
    "customer_id", "birthdate", "gender", "region", "campaign_status",
    "signup_date", "channel", "household_size", "income_band",
)
BEHAVIOR_COLUMNS = (
    "customer_id", "orders_12m", "spend_12m", "avg_basket", "recency_days",
    "distinct_categories", "top_category", "return_rate",
)
