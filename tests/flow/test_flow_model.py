"""The committed model is what the card says, runs in onnxruntime, and scores like the fitted pipeline."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from flow import constants as c
from flow.artifacts import REPO_ROOT, SCORING_DATA, SCORING_MODEL
from flow.features import FEATURES, as_table, model_inputs
from flow.population import generate_population
from flow.train import build_pipeline, onnx_probabilities, split_rows, to_onnx

ONNX_PATH = REPO_ROOT / SCORING_MODEL / "high-spender.onnx"
CARD_PATH = REPO_ROOT / SCORING_MODEL / "high-spender.json"
ONNX_TYPES = {"number": "tensor(float)", "string": "tensor(string)"}


@pytest.fixture(scope="module")
def card():
    return json.loads(CARD_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def session():
    return onnxruntime.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])


def test_card_describes_the_model(card):
    assert card["name"] == "high-spender" and card["target"] == "high_spender"
    assert card["as_of"] == "2026-06-30" and card["classes"] == ["0", "1"]
    assert [item["name"] for item in card["inputs"]] == list(FEATURES)
    assert card["metrics"]["rows_train"] + card["metrics"]["rows_holdout"] == c.DEFAULT_CUSTOMERS
    assert 0.75 <= card["metrics"]["holdout_auc"] <= 0.95
    assert card["training"]["seed"] == c.SEED


def test_graph_inputs_and_outputs_match_the_card(card, session):
    graph_inputs = session.get_inputs()
    assert [(i.name, i.type, i.shape) for i in graph_inputs] == [
        (item["name"], ONNX_TYPES[item["type"]], [None, 1]) for item in card["inputs"]
    ]
    assert [(o.name, o.type) for o in session.get_outputs()] == [
        ("label", "tensor(int64)"),
        ("probabilities", "tensor(float)"),
    ]


def test_committed_model_reproduces_its_holdout_auc(card, read_decoded):
    # Score the bundles as the service ships them, the label from the same seeded population.
    population = generate_population(c.DEFAULT_CUSTOMERS, c.SEED)
    demographics = read_decoded(REPO_ROOT / SCORING_DATA / "demographics.npz")
    behavior = read_decoded(REPO_ROOT / SCORING_DATA / "behavior.npz")
    inputs = model_inputs(demographics, behavior)
    _, holdout = split_rows(c.DEFAULT_CUSTOMERS, c.SEED)
    scores = onnx_probabilities(ONNX_PATH.read_bytes(), {name: col[holdout] for name, col in inputs.items()})
    auc = roc_auc_score(population.high_spender[holdout], scores)
    assert round(auc, 4) == card["metrics"]["holdout_auc"]


def test_batch_outputs_are_consistent(session, small_bundles):
    inputs = model_inputs(*small_bundles)
    labels, probabilities = session.run(None, {name: col[:500] for name, col in inputs.items()})
    assert labels.shape == (500,) and labels.dtype == np.int64
    assert probabilities.shape == (500, 2) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(labels, (probabilities[:, 1] > 0.5).astype(np.int64))
    assert 0 < labels.mean() < 0.6, "a useful model says yes to some customers, not all"


def test_unknown_categories_still_score(session, small_bundles):
    row = {name: col[:1].copy() for name, col in model_inputs(*small_bundles).items()}
    row.update(gender=np.array([["?"]]), region=np.array([["atlantis"]]), campaign_status=np.array([[""]]))
    _, probabilities = session.run(None, row)
    assert np.all(np.isfinite(probabilities)) and abs(float(probabilities.sum()) - 1) < 1e-5


def test_categories_are_encoded_inside_the_graph(session, small_bundles):
    """Changing only a string input changes the score: the encoding is in the model, not the server."""
    statuses = len(c.CAMPAIGN_STATUSES)
    base = {name: np.repeat(col[:1], statuses, axis=0) for name, col in model_inputs(*small_bundles).items()}
    base["campaign_status"] = np.array(c.CAMPAIGN_STATUSES).reshape(-1, 1)
    _, probabilities = session.run(None, base)
    assert len(set(np.round(probabilities[:, 1], 6))) > 1


@pytest.fixture(scope="module")
def small_pipeline(small_population):
    pipeline = build_pipeline(c.SEED)
    with threadpool_limits(limits=1):
        pipeline.fit(as_table(model_inputs(small_population.demographics, small_population.behavior)),
                     small_population.high_spender)
    return pipeline


def test_onnx_scores_match_the_fitted_pipeline(small_population, small_pipeline):
    inputs = model_inputs(small_population.demographics, small_population.behavior)
    pipeline = small_pipeline
    expected = pipeline.predict_proba(as_table(inputs))[:, 1]
    actual = onnx_probabilities(to_onnx(pipeline).SerializeToString(), inputs)
    assert np.max(np.abs(actual - expected)) < 1e-4


def test_missing_numbers_score_as_the_pipeline_does(small_population, small_pipeline):
    """The runtime feeds an absent number as NaN; ONNX must route it down the trees like scikit-learn."""
    inputs = model_inputs(small_population.demographics, small_population.behavior)
    pipeline = small_pipeline
    holes = {name: column.copy() for name, column in inputs.items()}
    holes["recency_days"][:] = np.nan
    holes["spend_12m"][::2] = np.nan
    expected = pipeline.predict_proba(as_table(holes))[:, 1]
    actual = onnx_probabilities(to_onnx(pipeline).SerializeToString(), holes)
    assert np.max(np.abs(actual - expected)) < 1e-4
