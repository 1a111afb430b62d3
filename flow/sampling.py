"""Small vectorised sampling helpers on a seeded numpy Generator."""

from __future__ import annotations

import numpy as np


def choice_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One category index per row of a (rows, categories) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    draws = rng.random(len(probabilities))[:, None]
    return np.minimum((draws > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (rows, categories) matrix."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def sigmoid(values: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-values))


def iso_dates(days_before: np.ndarray, as_of: np.datetime64) -> np.ndarray:
    """ISO ``YYYY-MM-DD`` strings for dates ``days_before`` days before ``as_of``."""
    dates = as_of - days_before.astype("timedelta64[D]")
    return np.datetime_as_string(dates, unit="D").astype("U10")
