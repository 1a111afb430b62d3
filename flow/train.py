"""Fit the high-spender classifier, convert it to ONNX and describe it in a model card."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime
import skl2onnx
import sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from flow import constants as c
from flow.behavior import HIGH_SPENDER_THRESHOLD
from flow.constants import MODEL_NAME
from flow.features import FEATURES, NUMERIC_FEATURES, STRING_FEATURES, as_table, model_inputs
from flow.population import Population
from flow.reference import reference

MODEL_VERSION = "1.0.0"
TARGET = "high_spender"
HOLDOUT_FRACTION = 0.2
# Upper bounds: skl2onnx uses the lowest opsets the graph needs (runs on onnxruntime >= 1.14).
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
BOOSTING_PARAMS = {
    "learning_rate": 0.08,
    "max_iter": 150,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
# The generations customer-scoring ships (fixed ids): 2 is retrained with other settings, a
# slower, more regularised booster, so an A/B test or a canary has a real alternative to weigh.
GENERATIONS = {
    "1": {"version": MODEL_VERSION, "params": BOOSTING_PARAMS},
    "2": {
        "version": "2.0.0",
        "params": {
            "learning_rate": 0.05,
            "max_iter": 220,
            "max_leaf_nodes": 15,
            "min_samples_leaf": 80,
            "l2_regularization": 3.0,
            "early_stopping": False,
        },
    },
}


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """The serialized ONNX graph, its card and its reference (the JSON files written beside it)."""

    onnx_bytes: bytes
    card: dict
    reference: dict


def split_rows(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (ascending) to fit on and to hold out: a seeded 80/20 shuffle."""
    order = np.random.default_rng(seed + 1).permutation(count)
    holdout_size = int(round(count * HOLDOUT_FRACTION))
    return np.sort(order[holdout_size:]), np.sort(order[:holdout_size])


def build_pipeline(seed: int, params: dict = BOOSTING_PARAMS) -> Pipeline:
    """Category encoding and boosting in one estimator, so ONNX carries the encoding too."""
    numeric = list(range(len(NUMERIC_FEATURES)))
    strings = list(range(len(NUMERIC_FEATURES), len(FEATURES)))
    vocabularies = [list(c.GENDERS), list(c.REGIONS), list(c.CAMPAIGN_STATUSES)]
    one_hot = OneHotEncoder(categories=vocabularies, handle_unknown="ignore", sparse_output=False)
    encode = ColumnTransformer([("numeric", "passthrough", numeric), ("categories", one_hot, strings)])
    boost = HistGradientBoostingClassifier(random_state=seed, **params)
    return Pipeline([("encode", encode), ("boost", boost)])


def to_onnx(pipeline: Pipeline) -> onnx.ModelProto:
    """One graph input per feature, shape [None, 1]; outputs ``label`` and ``probabilities``."""
    initial_types = [(name, FloatTensorType([None, 1])) for name in NUMERIC_FEATURES]
    initial_types += [(name, StringTensorType([None, 1])) for name in STRING_FEATURES]
    model = skl2onnx.convert_sklearn(
        pipeline,
        name=MODEL_NAME,
        initial_types=initial_types,
        options={HistGradientBoostingClassifier: {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    # skl2onnx collects opsets in a set, so their order follows string hashing, which varies per process.
    opsets = sorted((entry.domain, entry.version) for entry in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in opsets)
    return model


def onnx_probabilities(onnx_bytes: bytes, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """P(high spender) for each row, computed by onnxruntime exactly as the service will."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a fixed summation order keeps the metrics reproducible
    session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    _, probabilities = session.run(["label", "probabilities"], inputs)
    return probabilities[:, 1]


def train(population: Population, seed: int = c.SEED, generation: str = "1") -> TrainedModel:
    """Fit one generation on 80% of customers, score the other 20% with the ONNX model, write the card."""
    settings = GENERATIONS[generation]
    inputs = model_inputs(population.demographics, population.behavior)
    target = population.high_spender.astype(np.int64)
    fit_rows, holdout = split_rows(len(target), seed)
    pipeline = build_pipeline(seed, settings["params"])
    # One thread: the booster's parallel gradient sums would otherwise depend on the core count.
    with threadpool_limits(limits=1):
        pipeline.fit(as_table(inputs)[fit_rows], target[fit_rows])
    model = to_onnx(pipeline)
    onnx_bytes = model.SerializeToString()
    holdout_inputs = {name: column[holdout] for name, column in inputs.items()}
    scores = onnx_probabilities(onnx_bytes, holdout_inputs)
    card = {
        "name": MODEL_NAME,
        "version": settings["version"],
        "generation": generation,
        "as_of": c.AS_OF.isoformat(),
        "inputs": [
            {"name": name, "type": "number" if name in NUMERIC_FEATURES else "string"} for name in FEATURES
        ],
        "classes": ["0", "1"],
        "target": TARGET,
        "metrics": {
            "holdout_auc": round(float(roc_auc_score(target[holdout], scores)), 4),
            "holdout_positive_rate": round(float(target[holdout].mean()), 4),
            "rows_train": int(len(fit_rows)),
            "rows_holdout": int(len(holdout)),
        },
        "training": {
            "algorithm": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": dict(settings["params"]),
            "seed": seed,
            "customers": int(len(target)),
            "holdout_fraction": HOLDOUT_FRACTION,
            "label_rule": f"spend in the 3 months after as_of > {HIGH_SPENDER_THRESHOLD:.2f}",
            "onnx_ir_version": int(model.ir_version),
            "onnx_opsets": {entry.domain or "ai.onnx": int(entry.version) for entry in model.opset_import},
            "scikit_learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
        },
    }
    return TrainedModel(onnx_bytes, card, reference(scores, holdout_inputs, seed))
