"""Declared preprocessing: whole-unit date differences, shared by training and serving.

Training (``flow/``) and the runtime both call these, so a feature computed at
serving time is exactly the one the model was trained on.
"""

from __future__ import annotations

import datetime as dt

import numpy as np


def months_since(dates: np.ndarray | list[str], as_of: dt.date) -> np.ndarray:
    """Whole months from each ISO date to ``as_of`` (negative if in the future)."""
    epoch_offset = np.datetime64("2000-01", "M").astype(np.int64)
    start = np.asarray(dates, dtype="datetime64[D]")
    months = start.astype("datetime64[M]")
    day_of_month = (start - months.astype("datetime64[D]")).astype(np.int64) + 1
    as_of_index = (as_of.year - 2000) * 12 + as_of.month - 1
    whole = as_of_index - (months.astype(np.int64) - epoch_offset)
    return whole - (day_of_month > as_of.day).astype(np.int64)


def years_since(dates: np.ndarray | list[str], as_of: dt.date) -> np.ndarray:
    """Whole years from each ISO date to ``as_of`` (an age, for a birthdate)."""
    return np.floor_divide(months_since(dates, as_of), 12)


TRANSFORMS = {"months_since": months_since, "years_since": years_since}


def months_since_one(date: str, as_of: dt.date) -> int:
    """``months_since`` for one ISO date, without numpy's per-call overhead (the single-row path)."""
    start = dt.date.fromisoformat(date)
    whole = (as_of.year - start.year) * 12 + as_of.month - start.month
    return whole - (start.day > as_of.day)


def years_since_one(date: str, as_of: dt.date) -> int:
    """``years_since`` for one ISO date."""
    return months_since_one(date, as_of) // 12


SCALAR_TRANSFORMS = {"months_since": months_since_one, "years_since": years_since_one}
