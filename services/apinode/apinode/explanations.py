"""Individual prediction explanations (ICE, SHAPLEY), computed with one batched model run (and,
for SHAPLEY of a tree ensemble, one run of its trees alone).

As Dataiku does for classifiers, contributions are in the **log-odds** of the positive class,
``L(x) = log(p / (1 - p))``, against a background sample of the holdout set (the model's reference
file):

- ICE: for feature j, ``L(x) - mean_k L(x with x_j := b_k[j])`` over the background rows b_k.
  The model runs once per *distinct* value of b[j], and the mean is weighted by how often each
  value occurs: the same figure, at about 0.4 of the model rows on the committed background
  (416 hybrids instead of 1,100: many columns hold few values, e.g. ``gender`` 3, ``region`` 8).
  A tree-ensemble model needs no hybrid rows at all: the same figure is read off its trees
  (treeice.py), once that reading is checked here against onnxruntime's own answers at load.
- SHAPLEY: Monte-Carlo permutation sampling. Each of the ``nMonteCarloSteps`` steps draws a
  feature order and a background row z, walks from z to x one feature at a time in that order and
  credits each feature with the change of L. Per step the credits add up to ``L(x) - L(z)``
  exactly, so the contributions add up to ``L(x)`` minus the mean of L over the background rows
  drawn; the rows are drawn in shuffled cycles over the whole background, so with steps a multiple
  of the background size that mean is the reference prediction (mean L over the background).
  L(z) does not depend on x: the background's scores are computed once at load, so a step feeds
  the model F - 1 hybrid rows (F inputs), not F. For a tree ensemble fed column by column
  (treeice.py), the hybrids are made in the trees' encoded input instead (each encoded column the
  record's or the background row's, as its input comes) and scored by the trees alone: the same
  figures without encoding every hybrid (a run of 251 raw hybrids costs about 517 µs
  in-process, of which the trees alone about 440: the encoding, strings foremost, the rest).

The random draws are seeded from the record's own values: the same record gets the same
explanations, alone or in any batch.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import orjson

from .definition import EXPLANATION_METHODS, MONTE_CARLO_STEPS, ExplanationSettings
from .errors import ApiError, MalformedRequest, PayloadTooLarge
from .treeice import TreeIce

log = logging.getLogger("apinode")
_EPSILON = 1e-7
# How far the tree reading may be from onnxruntime's answer, in log-odds: onnxruntime returns
# float32 probabilities, which carry about 1e-6 of log-odds; a wrong reading is off by far more.
_TREE_TOLERANCE = 1e-4


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


class Plan(NamedTuple):
    """A model feed for explanations, whether to fetch the trees' encoded input, and the reader."""

    feed: dict[str, np.ndarray] | None  # None: the records alone, fed by the model itself
    encoded: bool
    read: Callable[[np.ndarray, np.ndarray | None], list[dict[str, float]]]


class Explainer:
    """Explains rows of one model against its background sample."""

    def __init__(
        self,
        inputs: Sequence[tuple[str, bool]],
        background: Sequence[dict],
        column: Callable[[str, bool, Sequence[dict]], np.ndarray],
        trees: TreeIce | None = None,
        encode: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]] | None = None,
        score: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
        score_encoded: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not background:
            raise ValueError("explanations need a background sample (the model's reference file)")
        self.names = [name for name, _ in inputs]
        self._inputs = list(inputs)
        self._column = column
        self._background = {name: column(name, is_string, background) for name, is_string in inputs}
        self.background_size = len(background)
        # SHAPLEY: each walk starts at a background row, whose log-odds do not depend on the record
        # explained. Scored once here (``score``: a feed's positive-class probabilities), they are
        # not fed to the model again with every step of every request: a step is F - 1 model rows.
        self._background_scores = None
        if score is not None:
            feed = {name: values.reshape(-1, 1) for name, values in self._background.items()}
            self._background_scores = log_odds(score(feed))
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
        self.trees, self.ice_method = None, "hybrid rows"
        # SHAPLEY of a tree ensemble: hybrid rows made in the trees' encoded input and fed to the
        # trees alone (``_encoded_shapley``), once checked here; else raw hybrid rows, to the model.
        self._score_encoded = self._owners = self._encoded_background = None
        self.shapley_method = "hybrid rows"
        if trees is not None and encode is not None:
            rows = list(background) + [{name: None for name in self.names}]  # and a row of missing values
            feed = {name: self._column(name, is_string, rows).reshape(-1, 1) for name, is_string in self._inputs}
            positive, encoded = encode(feed)
            problem = self._check_trees(trees, encode, rows, positive, encoded)
            if problem:
                log.warning("ICE explains with hybrid rows: the tree reading %s", problem)
            else:
                self.trees, self.ice_method = trees, "trees"
            if score_encoded is not None and trees.inputs == self.names:
                problem = self._check_encoded(trees, encode, score_encoded, rows, positive, encoded)
                if problem:
                    log.warning("SHAPLEY explains with hybrid rows of the model's inputs: %s", problem)
                else:
                    self.shapley_method = "encoded hybrid rows"

    def _check_trees(self, trees: TreeIce, encode, rows: list[dict], positive: np.ndarray,
                     encoded: np.ndarray) -> str | None:
        """Why the tree reading cannot be trusted for this model, or None: it must give onnxruntime's
        own log-odds on the background (and on a row of missing values, the last of ``rows``) and the
        hybrid rows' ICE."""
        if trees.inputs != self.names:
            return f"reads inputs {trees.inputs}, the model takes {self.names}"
        trees.learn_background(encoded[: len(rows) - 1])
        scores, (raw, reached) = log_odds(positive), trees.raw(encoded)
        if (reached != trees.trees).any():
            return "reaches other than one leaf per tree"
        for sign in (1.0, -1.0):
            gap = scores - sign * raw
            if np.abs(gap - gap.mean()).max() <= _TREE_TOLERANCE:
                trees.sign = sign
                break
        else:
            return "does not give the model's log-odds"
        probes = [0, 1, len(rows) - 1]  # two background rows and the row of missing values
        every = ExplanationSettings(enabled=True, method="ICE", n_explanations=len(self.names),
                                    n_monte_carlo_steps=1, max_rows=0)
        plan = self.plan(every, [rows[i] for i in probes], hybrid=True)
        hybrid = plan.read(encode(plan.feed)[0], None)
        for want, got in zip(hybrid, trees.ice(encoded[probes])):
            if max(abs(want[name] - got[j]) for j, name in enumerate(self.names)) > _TREE_TOLERANCE:
                return "gives another ICE than the hybrid rows"
        return None

    def _check_encoded(self, trees: TreeIce, encode, score_encoded, rows: list[dict], positive: np.ndarray,
                       encoded: np.ndarray) -> str | None:
        """Why SHAPLEY cannot make its hybrid rows in the trees' encoded input, or None (then it
        does): the trees alone must score the background (and a row of missing values, the last of
        ``rows``) as the model does, and the encoded hybrids give the raw ones' SHAPLEY on probes."""
        size = len(rows) - 1
        owners = np.asarray(trees.owners, dtype=np.intp)
        if owners.shape != (encoded.shape[1],) or owners.min() < 0 or owners.max() >= len(self.names):
            return f"the encoded input's {encoded.shape[1]} columns are not each made from one input"
        encoded = np.ascontiguousarray(encoded, dtype=np.float32)
        try:
            alone = score_encoded(encoded)
        except Exception as problem:  # a session that refuses the encoded rows
            return f"the trees alone cannot score encoded rows ({type(problem).__name__}: {problem})"
        if alone.shape != positive.shape or np.abs(log_odds(alone) - log_odds(positive)).max() > _TREE_TOLERANCE:
            return "the trees alone do not score the background as the model does"
        probes = [0, min(1, size - 1), size]  # two background rows and the row of missing values
        every = ExplanationSettings(enabled=True, method="SHAPLEY", n_explanations=len(self.names),
                                    n_monte_carlo_steps=MONTE_CARLO_STEPS[0], max_rows=0)
        raw = self.plan(every, [rows[i] for i in probes], hybrid=True)
        want = raw.read(encode(raw.feed)[0], None)
        self._score_encoded, self._owners, self._encoded_background = score_encoded, owners, encoded[:size]
        got = self.plan(every, [rows[i] for i in probes]).read(positive[probes], encoded[probes])
        for wanted, found in zip(want, got):
            if max(abs(wanted[name] - found[name]) for name in self.names) > _TREE_TOLERANCE:
                self._score_encoded = self._owners = self._encoded_background = None
                return "the encoded hybrid rows give another SHAPLEY than the raw ones"
        return None

    def rows_needed(self, settings: ExplanationSettings, records: int) -> int:
        """What explaining ``records`` costs, in model rows (the tree reading counted in model rows too)."""
        if settings.method == "SHAPLEY":
            per_record = settings.n_monte_carlo_steps * self._shapley_rows
        else:
            per_record = self.ice_rows if self.trees is None else self.trees.rows_per_record
        return records * (per_record + 1)

    def check_cost(self, settings: ExplanationSettings, records: int) -> None:
        needed = self.rows_needed(settings, records)
        if needed > settings.max_rows:
            raise PayloadTooLarge(
                f"explanations would cost {needed} model rows, over the limit of {settings.max_rows}",
                "send fewer records, fewer nMonteCarloSteps, or use ICE",
            )

    def plan(self, settings: ExplanationSettings, rows: Sequence[dict], hybrid: bool = False) -> Plan:
        """The model feed holding ``rows`` (then any hybrid rows), and how to read the answer.

        The caller runs the model once on the feed (``rows`` first, so their own scores are the
        first ``len(rows)`` results; fetching the trees' encoded input too where ``plan.encoded``)
        and passes the positive-class probabilities and that input to ``plan.read``, which returns,
        per row, its top ``n_explanations`` features and contributions.
        """
        count = len(rows)
        if settings.method == "ICE" and self.trees is not None and not hybrid:
            trees = self.trees

            def read_trees(positive: np.ndarray, encoded: np.ndarray) -> list[dict[str, float]]:
                return [_top(self.names, values, settings.n_explanations) for values in trees.ice(encoded)]

            return Plan(None, True, read_trees)  # the records alone: the model feeds them itself
        if settings.method == "SHAPLEY" and self._score_encoded is not None and not hybrid:

            def read_encoded(positive: np.ndarray, encoded: np.ndarray) -> list[dict[str, float]]:
                return self._encoded_shapley(settings, rows, positive, encoded)

            return Plan(None, True, read_encoded)  # the records alone, then their hybrids to the trees
        originals = {name: self._column(name, is_string, rows) for name, is_string in self._inputs}
        blocks = [originals]
        layouts = []
        for i in range(count):
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

        def read(positive: np.ndarray, encoded: None) -> list[dict[str, float]]:
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

        return Plan(feed, False, read)

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

    @property
    def _shapley_rows(self) -> int:
        """Model rows per SHAPLEY step: the walk's hybrids, less its start when that is known."""
        return len(self.names) - (self._background_scores is not None)

    def _walks(self, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """A record's SHAPLEY walks: per hybrid row, which inputs it takes from the record (rows ×
        inputs) and which background row gives the others; then (rank, drawn), to read them."""
        rng = np.random.default_rng(seed)
        features, size = len(self.names), self.background_size
        cycles = -(-steps // size)
        drawn = np.concatenate([rng.permutation(size) for _ in range(cycles)])[:steps]
        order = np.argsort(rng.random((steps, features)), axis=1)  # a random feature order per step
        rank = np.argsort(order, axis=1)  # rank[m, j]: where feature j comes in step m's order
        # Hybrid t of step m (t = 0..F-1) takes from x the features ranked below t, the rest from z;
        # hybrid 0 is z itself, left out when its score is known.
        first = features - self._shapley_rows
        from_x = rank[:, None, :] < np.arange(first, features)[None, :, None]  # (steps, hybrids, F)
        z = np.repeat(drawn, features - first)  # the background row of each hybrid
        return from_x.reshape(-1, features), z, (rank, drawn)

    def _shapley(
        self, x: dict[str, np.ndarray], steps: int, seed: int
    ) -> tuple[dict[str, np.ndarray], tuple]:
        from_x, z, extra = self._walks(steps, seed)
        block = {}
        for j, name in enumerate(self.names):
            column = self._background[name][z]
            column[from_x[:, j]] = x[name][0]
            block[name] = column
        return block, ("SHAPLEY", len(z), extra)

    def _encoded_shapley(self, settings: ExplanationSettings, rows: Sequence[dict], positive: np.ndarray,
                         encoded: np.ndarray) -> list[dict[str, float]]:
        """SHAPLEY with the hybrid rows made in the trees' encoded input and scored by the trees
        alone. The model's preprocessing makes each encoded column from one input (treeice.py), so a
        hybrid's encoded row takes each column from the record's encoded row or from its background
        row's, as that column's input comes: the rows the model would encode from the raw hybrids."""
        steps, owners = settings.n_monte_carlo_steps, self._owners
        walks = [self._walks(steps, _seed(row)) for row in rows]
        blocks = [np.where(from_x[:, owners], encoded[i], self._encoded_background[z])
                  for i, (from_x, z, _) in enumerate(walks)]
        scores = log_odds(self._score_encoded(blocks[0] if len(blocks) == 1 else np.concatenate(blocks)))
        own, offset, answers = log_odds(positive), 0, []
        for i, (from_x, _, extra) in enumerate(walks):
            hybrid = scores[offset : offset + len(from_x)]
            offset += len(from_x)
            answers.append(_top(self.names, self._read_shapley(own[i], hybrid, extra), settings.n_explanations))
        return answers

    def _read_shapley(self, own: float, hybrid: np.ndarray, extra: tuple) -> np.ndarray:
        rank, drawn = extra
        steps, features = rank.shape
        walk = [hybrid.reshape(steps, -1), np.full((steps, 1), own)]
        if self._background_scores is not None:
            walk.insert(0, self._background_scores[drawn][:, None])
        walk = np.concatenate(walk, axis=1)
        steps_index = np.arange(steps)[:, None]
        gains = walk[steps_index, rank + 1] - walk[steps_index, rank]
        return gains.mean(axis=0)


def _seed(row: dict) -> int:
    return zlib.crc32(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))


def _top(names: Sequence[str], values: np.ndarray, count: int) -> dict[str, float]:
    values = values.tolist()  # Python floats: numpy scalars cost a call each to read
    ranked = sorted(range(len(names)), key=lambda j: (-abs(values[j]), names[j]))[:count]
    return {names[j]: _finite(values[j]) for j in ranked}


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0
