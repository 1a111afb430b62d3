"""One seeded draw of the whole customer base: the two bundles and the label."""

from __future__ import annotations

import dataclasses

import numpy as np

from flow import constants as c
from flow.behavior import HIGH_SPENDER_THRESHOLD, draw_habits, future_spend, simulate_past_year, summarise
from flow.demographics import generate_demographics


@dataclasses.dataclass(frozen=True)
class Population:
    """The published columns (demographics, behavior) and the training target."""

    demographics: dict[str, np.ndarray]
    behavior: dict[str, np.ndarray]
    high_spender: np.ndarray  # bool, one per customer


def generate_population(count: int = c.DEFAULT_CUSTOMERS, seed: int = c.SEED) -> Population:
    """Same count and seed, same population, on every run."""
    rng = np.random.default_rng(seed)
    demographics, traits = generate_demographics(rng, count)
    habits = draw_habits(rng, traits)
    past = simulate_past_year(rng, habits)
    behavior = summarise(past, demographics["customer_id"])
    label = future_spend(rng, habits, traits, past) > HIGH_SPENDER_THRESHOLD
    return Population(demographics, behavior, label)
