"""What the runtime compares a live score with: holdout score percentiles and a background sample.

Written beside the model as ``<model>.reference.json``. ``probaPercentile`` places a record's
positive-class probability among the holdout scores (as Dataiku does with its test set), and the
explanations (ICE, SHAPLEY) replace feature values with those of the background rows, a seeded
sample of the holdout set (Dataiku explains against a sample of the test set too).
"""

from __future__ import annotations

import numpy as np

BACKGROUND_ROWS = 100
PERCENTILES = tuple(range(1, 100))


def percentile_cuts(scores: np.ndarray) -> list[float]:
    """The 1st..99th percentiles of ``scores``, each an actual score (no interpolation), 6 decimals."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    cuts = np.quantile(ordered, [p / 100 for p in PERCENTILES], method="inverted_cdf")
    return [round(float(value), 6) for value in cuts]


def background_rows(inputs: dict[str, np.ndarray], seed: int) -> list[dict[str, object]]:
    """``BACKGROUND_ROWS`` rows of model inputs drawn without replacement, in ascending row order."""
    count = len(next(iter(inputs.values())))
    size = min(BACKGROUND_ROWS, count)
    picked = np.sort(np.random.default_rng(seed + 2).choice(count, size=size, replace=False))
    rows = []
    for i in picked:
        row: dict[str, object] = {}
        for name, column in inputs.items():
            value = column[i, 0]
            row[name] = str(value) if column.dtype.kind in "US" else round(float(value), 6)
        rows.append(row)
    return rows


def reference(scores: np.ndarray, holdout_inputs: dict[str, np.ndarray], seed: int) -> dict:
    """The reference document: the score percentiles and the explanation background."""
    return {
        "positive_class": "1",
        "proba_percentiles": percentile_cuts(scores),
        "background": background_rows(holdout_inputs, seed),
        "source": "holdout set (20% of customers), scored by the ONNX model",
    }
