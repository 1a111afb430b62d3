"""The model's 11 inputs, computed from the published bundles exactly as the runtime will."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from apinode.transforms import months_since, years_since

from flow import constants as c

NUMERIC_FEATURES = (
    "age", "tenure_months", "orders_12m", "spend_12m", "avg_basket",
    "recency_days", "distinct_categories", "return_rate",
)
STRING_FEATURES = ("gender", "region", "campaign_status")
FEATURES = NUMERIC_FEATURES + STRING_FEATURES


def model_inputs(
    demographics: Mapping[str, np.ndarray], behavior: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Feature name to a (rows, 1) column: float32 for numbers, str for categories."""
    if not np.array_equal(demographics["customer_id"], behavior["customer_id"]):
        raise ValueError("demographics and behavior must list the same customers in the same order")
    numeric = {
        "age": years_since(demographics["birthdate"], c.AS_OF),
        "tenure_months": months_since(demographics["signup_date"], c.AS_OF),
        **{name: behavior[name] for name in NUMERIC_FEATURES[2:]},
    }
    columns = {name: np.asarray(numeric[name], dtype=np.float32) for name in NUMERIC_FEATURES}
    columns.update({name: np.asarray(demographics[name], dtype=str) for name in STRING_FEATURES})
    return {name: columns[name].reshape(-1, 1) for name in FEATURES}


def as_table(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The inputs side by side as one object matrix, column i = FEATURES[i] (what sklearn is fitted on)."""
    return np.hstack([inputs[name].astype(object) for name in FEATURES])
