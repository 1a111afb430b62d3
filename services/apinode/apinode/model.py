"""An ONNX classifier served with onnxruntime: one session, inputs read from the model itself."""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .definition import PredictionEndpoint
from .treeice import NotATreeModel, recognize

if TYPE_CHECKING:
    from .explanations import Plan

log = logging.getLogger("apinode")


def _number(value):
    return math.nan if value is None else value


def _fill(arrays: list[tuple[str, bool, np.ndarray]], row: dict) -> None:
    """One row's values into pre-shaped [1, 1] input arrays: missing strings '', missing numbers NaN."""
    for name, is_string, array in arrays:
        value = row.get(name)
        if is_string:
            array[0, 0] = value or ""
        else:
            array[0, 0] = math.nan if value is None else value


class ModelError(ValueError):
    """A model artifact that does not fit its definition."""


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One request's rows are few: threads only add wake-up latency and memory.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class Model:
    """Scores rows of named features; missing numbers become NaN and missing strings ''."""

    def __init__(self, endpoint: PredictionEndpoint) -> None:
        where = f"{endpoint.model_path}"
        artifact = Path(endpoint.model_path).read_bytes()
        reference = endpoint.reference
        # A tree ensemble explains ICE from its trees (treeice.py): the session also offers the
        # trees' encoded input as an output, fetched by explanation runs only.
        # Its trees alone are a session of their own, on that encoded input: SHAPLEY's hybrid rows
        # are made there (explanations.py).
        trees, self._encoded, self._trees_run = None, None, None
        if reference.get("background"):
            try:
                trees, artifact = recognize(artifact, endpoint.outputs)
                self._encoded = trees.encoded_input
                self._trees_run = _session(trees.alone)._sess.run
            except NotATreeModel as reason:
                log.info("%s: ICE with hybrid rows (%s)", where, reason)
        self._session = _session(artifact)
        self.inputs: list[tuple[str, bool]] = []
        for node in self._session.get_inputs():
            if node.type not in ("tensor(float)", "tensor(string)", "tensor(double)", "tensor(int64)"):
                raise ModelError(f"{where}: input {node.name!r} has unsupported type {node.type}")
            self.inputs.append((node.name, node.type == "tensor(string)"))
        self._dtypes = {
            node.name: {
                "tensor(float)": np.float32,
                "tensor(double)": np.float64,
                "tensor(int64)": np.int64,
                "tensor(string)": object,
            }[node.type]
            for node in self._session.get_inputs()
        }
        declared = endpoint.metadata.get("inputs")
        if declared:
            names = [item["name"] for item in declared]
            if sorted(names) != sorted(name for name, _ in self.inputs):
                raise ModelError(
                    f"{where}: metadata inputs {names} differ from the model's "
                    f"{[name for name, _ in self.inputs]}"
                )
        outputs = {node.name for node in self._session.get_outputs()}
        self._label, self._probabilities = endpoint.outputs
        for name in endpoint.outputs:
            if name not in outputs:
                raise ModelError(f"{where}: no output {name!r}; the model has {sorted(outputs)}")
        self.classes = [str(c) for c in endpoint.metadata.get("classes", ["0", "1"])]
        self.input_names = frozenset(name for name, _ in self.inputs)
        self._fetch = [self._label, self._probabilities]
        # Single-row calls reuse pre-shaped [1, 1] arrays (safe: scoring runs on the event loop thread
        # only) and call the session's C++ run directly, skipping per-call input re-validation that
        # the arrays, checked at start-up, do not need: together half the cost of a one-row call.
        self._one = self._one_arrays()
        self._one_feed = {name: array for name, _, array in self._one}
        self._run = self._session._sess.run
        self._per_thread = threading.local()
        positive = str(reference.get("positive_class", self.classes[-1]))
        if positive not in self.classes:
            raise ModelError(f"{where}: reference positive_class {positive!r} is not one of {self.classes}")
        self.positive_class = positive
        self._positive = self.classes.index(positive)
        self._cuts = [float(v) for v in reference.get("proba_percentiles", ())]
        if self._cuts and (len(self._cuts) != 99 or self._cuts != sorted(self._cuts)):
            raise ModelError(f"{where}: reference proba_percentiles must be the 99 ascending percentiles")
        self.explainer = None
        if reference.get("background"):
            from .explanations import Explainer

            self.explainer = Explainer(
                self.inputs, reference["background"], self.column, trees, self._encode, self._positive_of,
                self._trees_positive if trees is not None else None,
            )
            if self.explainer.shapley_method != "encoded hybrid rows":
                self._trees_run = None  # the trees alone serve nothing else: their session is let go

    def missing(self, features: dict) -> list[str]:
        return [name for name, _ in self.inputs if features.get(name) is None]

    def predict_one(self, row: dict) -> tuple[str, dict[str, float]]:
        """``predict([row])[0]``, for the latency-critical single-record call."""
        _fill(self._one, row)
        labels, probabilities = self._run(self._fetch, self._one_feed, None)
        return str(labels.item(0)), dict(zip(self.classes, probabilities[0].tolist()))

    def column(self, name: str, is_string: bool, rows: Sequence[dict]) -> np.ndarray:
        """One input's values for ``rows`` as a flat array of the model's dtype."""
        if is_string:
            values = [row.get(name) or "" for row in rows]
        else:
            values = [math.nan if row.get(name) is None else row[name] for row in rows]
        return np.array(values, dtype=self._dtypes[name])

    def feed(self, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        """The model's [rows, 1] input arrays for ``rows``."""
        if len(rows) != 1:
            return {name: self.column(name, is_string, rows).reshape(-1, 1) for name, is_string in self.inputs}
        row, dtypes = rows[0], self._dtypes
        return {
            name: np.array([[(row.get(name) or "") if is_string else _number(row.get(name))]], dtype=dtypes[name])
            for name, is_string in self.inputs
        }

    def run(self, feed: dict[str, np.ndarray]) -> tuple[list, np.ndarray]:
        """One model run: labels and the [rows, classes] probabilities (float64)."""
        labels, probabilities = self._session.run(self._fetch, feed)
        return labels.tolist(), np.asarray(probabilities, dtype=np.float64)

    def _encode(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The positive-class probabilities and the trees' encoded input for a feed."""
        _, probabilities, encoded = self._session.run([*self._fetch, self._encoded], feed)
        return self.positive(np.asarray(probabilities, dtype=np.float64)), encoded

    def explain(self, plan: Plan, rows: Sequence[dict]) -> tuple[list[tuple[str, dict]], list[dict[str, float]]]:
        """One model run on an explanation plan: the records' answers and explanations."""
        fetch = [*self._fetch, self._encoded] if plan.encoded else self._fetch
        feed = plan.feed
        if feed is None:
            feed = self._thread_row(rows[0]) if len(rows) == 1 else self.feed(rows)
        # The session's C++ run, as predict_one: every feed here is built with the model's dtypes.
        labels, probabilities, *encoded = self._run(fetch, feed, None)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        scored = self.answers(labels.tolist(), probabilities, len(rows))
        return scored, plan.read(self.positive(probabilities), encoded[0] if encoded else None)

    def _thread_row(self, row: dict) -> dict[str, np.ndarray]:
        """``feed([row])`` in [1, 1] arrays of this thread's own, filled in place: an explanation may
        run on a worker thread while the event loop scores with ``predict_one``'s arrays."""
        arrays = getattr(self._per_thread, "one", None)
        if arrays is None:
            arrays = self._per_thread.one = self._one_arrays()
        _fill(arrays, row)
        return {name: array for name, _, array in arrays}

    def _one_arrays(self) -> list[tuple[str, bool, np.ndarray]]:
        return [(name, is_string, np.zeros((1, 1), dtype=self._dtypes[name])) for name, is_string in self.inputs]

    def predict(self, rows: Sequence[dict]) -> list[tuple[str, dict[str, float]]]:
        """(prediction, probabilities by class) for each row."""
        labels, probabilities = self.run(self.feed(rows))
        return self.answers(labels, probabilities, len(rows))

    def answers(self, labels: list, probabilities: np.ndarray, count: int) -> list[tuple[str, dict]]:
        classes = self.classes
        return [
            (str(label), dict(zip(classes, row)))
            for label, row in zip(labels[:count], probabilities[:count].tolist())
        ]

    def _trees_positive(self, encoded: np.ndarray) -> np.ndarray:
        """The positive-class probabilities of rows of the trees' encoded input (float32, C order),
        from the trees alone: what the whole model answers for raw rows that encode to them."""
        (probabilities,) = self._trees_run([self._probabilities], {self._encoded: encoded}, None)
        return self.positive(np.asarray(probabilities, dtype=np.float64))

    def _positive_of(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.positive(self.run(feed)[1])

    def positive(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities[:, self._positive]

    def percentile(self, probas: dict[str, float]) -> int | None:
        """Where the positive-class probability falls among the holdout scores: 1 to 100.

        The reference holds the 1st..99th percentiles of the holdout scores; a probability above
        k of them is in percentile k + 1 (Dataiku's ``probaPercentile``). None without a reference.
        """
        if not self._cuts:
            return None
        return 1 + bisect.bisect_left(self._cuts, probas[self.positive_class])
