"""Individual prediction explanations (ICE, SHAPLEY), computed with one batched model run.

As Dataiku does for classifiers, contributions are in the **log-odds** of the positive class,
``L(x) = log(p / (1 - p))``, against a background sample of the holdout set (the model's reference
file):

- ICE: for feature j, ``L(x) - mean_k L(x with x_j := b_k[j])`` over the background rows b_k.
  The model runs once per *distinct* value of b[j], and the mean is weighted by how often each
  value occurs: the same figure, at about 0.4 of the model rows on the committed background
  (416 hybrids instead of 1,100: many columns hold few values, e.g. ``gender`` 3, ``region`` 8).
- SHAPLEY: Monte-Carlo permutation sampling. Each of the ``nMonteCarloSteps`` steps draws a
  feature order and a background row z, walks from z to x one feature at a time in that order and
  credits each feature with the change of L. Per step the credits add up to ``L(x) - L(z)``
  exactly, so the contributions add up to ``L(x)`` minus the mean of L over the background rows
  drawn; the rows are drawn in shuffled cycles over the whole background, so with steps a multiple
  of the background size that mean is the reference prediction (mean L over the background).

The random draws are seeded from the record's own values: the same record gets the same
explanations, alone or in any batch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from .definition import EXPLANATION_METHODS, MONTE_CARLO_STEPS, ExplanationSettings
from .errors import ApiError, MalformedRequest, PayloadTooLarge

_EPSILON = 1e-7


class InvalidExplanations(ApiError):
    """The request's ``explanations`` object asks for something the endpoint cannot do."""

    status = 400
    error_type = "InvalidExplanations"


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    return np.log(p) - np.log1p(-p)


def request_settings(raw: object, defaults: ExplanationSettings, feature_count: int) -> ExplanationSettings:
    """The endpoint defaults overridden by a request's ``explanations`` object (null = the default)."""
    if raw is None:
        return defaults
    if type(raw) is not dict:
        raise MalformedRequest("'explanations' must be an object", '"explanations": {"enabled": true, ...}')
    known = {"enabled", "method", "nExplanations", "nMonteCarloSteps"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidExplanations(
            f"unknown explanations setting {unknown[0]!r}", f"known settings: {', '.join(sorted(known))}"
        )
    enabled, method = raw.get("enabled"), raw.get("method")
    count, steps = raw.get("nExplanations"), raw.get("nMonteCarloSteps")
    if enabled is not None and type(enabled) is not bool:
        raise InvalidExplanations("explanations.enabled must be true or false")
    if method is not None and method not in EXPLANATION_METHODS:
        raise InvalidExplanations(
            f"unknown explanation method {_short(method)}",
            f"explanations.method is one of {', '.join(EXPLANATION_METHODS)}",
        )
    if count is not None and (type(count) is not int or not 1 <= count <= feature_count):
        raise InvalidExplanations(
            f"invalid nExplanations {_short(count)}",
            f"explanations.nExplanations is an integer from 1 to {feature_count} (the model's inputs)",
        )
    low, high = MONTE_CARLO_STEPS
    if steps is not None and (type(steps) is not int or not low <= steps <= high):
        raise InvalidExplanations(
            f"invalid nMonteCarloSteps {_short(steps)}",
            f"explanations.nMonteCarloSteps is an integer from {low} to {high}",
        )
    return ExplanationSettings(
        enabled=defaults.enabled if enabled is None else enabled,
        method=defaults.method if method is None else method,
        n_explanations=min(defaults.n_explanations, feature_count) if count is None else count,
        n_monte_carlo_steps=defaults.n_monte_carlo_steps if steps is None else steps,
        max_rows=defaults.max_rows,
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


Run = Callable[[dict[str, np.ndarray]], np.ndarray]


class Explainer:
    """Explains rows of one model against its background sample."""

    def __init__(
        self,
        inputs: Sequence[tuple[str, bool]],
        background: Sequence[dict],
        column: Callable[[str, bool, Sequence[dict]], np.ndarray],
    ) -> None:
        if not background:
            raise ValueError("explanations need a background sample (the model's reference file)")
        self.names = [name for name, _ in inputs]
        self._inputs = list(inputs)
        self._column = column
        self._background = {name: column(name, is_string, background) for name, is_string in inputs}
        self.background_size = len(background)
        # ICE: each feature's distinct background values and their share of the background (NaNs,
        # the missing values, count as one value: the model sees them alike).
        self._ice_values, shares = {}, []
        for name in self.names:
            values, counts = np.unique(self._background[name], return_counts=True)
            self._ice_values[name] = values
            shares.append(counts / self.background_size)
        self._ice_shares = np.concatenate(shares)
        self._ice_starts = np.cumsum([0] + [len(self._ice_values[name]) for name in self.names[:-1]])
        self.ice_rows = len(self._ice_shares)

    def rows_needed(self, settings: ExplanationSettings, records: int) -> int:
        features = len(self.names)
        per_record = self.ice_rows if settings.method == "ICE" else settings.n_monte_carlo_steps * features
        return records * (per_record + 1)

    def check_cost(self, settings: ExplanationSettings, records: int) -> None:
        needed = self.rows_needed(settings, records)
        if needed > settings.max_rows:
            raise PayloadTooLarge(
                f"explanations would cost {needed} model rows, over the limit of {settings.max_rows}",
                "send fewer records, fewer nMonteCarloSteps, or use ICE",
            )

    def plan(
        self, settings: ExplanationSettings, rows: Sequence[dict]
    ) -> tuple[dict[str, np.ndarray], Callable]:
        """The model feed holding ``rows`` then every hybrid row, and how to read the answer.

        The caller runs the model once on the feed (``rows`` first, so their own scores are the
        first ``len(rows)`` results) and passes the positive-class probabilities to the reader,
        which returns, per row, its top ``n_explanations`` features and contributions.
        """
        originals = {name: self._column(name, is_string, rows) for name, is_string in self._inputs}
        blocks = [originals]
        layouts = []
        for i in range(len(rows)):
            x = {name: originals[name][i : i + 1] for name in self.names}
            if settings.method == "ICE":
                block, layout = self._ice(x)
            else:
                block, layout = self._shapley(x, settings.n_monte_carlo_steps, _seed(rows[i]))
            blocks.append(block)
            layouts.append(layout)
        feed = {
            name: np.concatenate([block[name] for block in blocks]).reshape(-1, 1) for name in self.names
        }
        count = len(rows)

        def read(positive: np.ndarray) -> list[dict[str, float]]:
            scores = log_odds(positive)
            own, offset, answers = scores[:count], count, []
            for i, (method, size, extra) in enumerate(layouts):
                hybrid = scores[offset : offset + size]
                offset += size
                if method == "ICE":
                    values = self._read_ice(own[i], hybrid)
                else:
                    values = self._read_shapley(own[i], hybrid, extra)
                answers.append(_top(self.names, values, settings.n_explanations))
            return answers

        return feed, read

    def _ice(self, x: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], tuple]:
        block, rows = {}, self.ice_rows
        for name, start in zip(self.names, self._ice_starts):
            values = self._ice_values[name]
            column = np.repeat(x[name], rows)
            column[start : start + len(values)] = values
            block[name] = column
        return block, ("ICE", rows, None)

    def _read_ice(self, own: float, hybrid: np.ndarray) -> np.ndarray:
        return own - np.add.reduceat(hybrid * self._ice_shares, self._ice_starts)

    def _shapley(
        self, x: dict[str, np.ndarray], steps: int, seed: int
    ) -> tuple[dict[str, np.ndarray], tuple]:
        rng = np.random.default_rng(seed)
        features, size = len(self.names), self.background_size
        cycles = -(-steps // size)
        drawn = np.concatenate([rng.permutation(size) for _ in range(cycles)])[:steps]
        order = np.argsort(rng.random((steps, features)), axis=1)  # a random feature order per step
        rank = np.argsort(order, axis=1)  # rank[m, j]: where feature j comes in step m's order
        # Hybrid t of step m (t = 0..F-1) takes from x the features ranked below t, the rest from z.
        from_x = rank[:, None, :] < np.arange(features)[None, :, None]  # (steps, F, F)
        block = {}
        for j, name in enumerate(self.names):
            z = np.repeat(self._background[name][drawn], features)
            block[name] = np.where(from_x[:, :, j].reshape(-1), np.repeat(x[name], steps * features), z)
        return block, ("SHAPLEY", steps * features, rank)

    def _read_shapley(self, own: float, hybrid: np.ndarray, rank: np.ndarray) -> np.ndarray:
        steps, features = rank.shape
        walk = np.concatenate([hybrid.reshape(steps, features), np.full((steps, 1), own)], axis=1)
        steps_index = np.arange(steps)[:, None]
        gains = walk[steps_index, rank + 1] - walk[steps_index, rank]
        return gains.mean(axis=0)


def _seed(row: dict) -> int:
    return zlib.crc32(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))


def _top(names: Sequence[str], values: np.ndarray, count: int) -> dict[str, float]:
    ranked = sorted(range(len(names)), key=lambda j: (-abs(values[j]), names[j]))[:count]
    return {names[j]: _finite(values[j]) for j in ranked}


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0
