"""ICE read off the trees of the committed model (apinode/treeice.py): the same figures as the
definition over every background row, from one model run on the records alone; a reading that
disagrees with onnxruntime, or a graph it cannot follow, falls back to the hybrid rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import numpy as np
import onnx
import pytest
from onnx import helper

from apinode.definition import ExplanationSettings
from apinode.explanations import Explainer, log_odds
from apinode.handlers import PredictionHandler, Timing
from apinode.loader import load_definition
from apinode.model import Model
from apinode.runtime import Runtime
from apinode.treeice import NotATreeModel, recognize

from apinode_fixtures import REPO

SCORING = REPO / "services" / "customer-scoring"
MODELS = {"1": "high-spender", "2": "high-spender-2"}


@pytest.fixture(scope="module")
def scoring():
    definition = load_definition(SCORING, {})
    runtime = Runtime(definition, {})
    asyncio.run(runtime.start())
    return definition, runtime


def background(generation: str) -> list[dict]:
    return json.loads((SCORING / "model" / f"{MODELS[generation]}.reference.json").read_text())["background"]


def definition_ice(model: Model, x: dict, rows: list[dict]) -> dict[str, float]:
    """ICE by its definition: L(x) - mean over every background row k of L(x with x_j := b_k[j])."""
    names = [name for name, _ in model.inputs]
    hybrids = [x] + [x | {name: row[name]} for name in names for row in rows]
    _, probabilities = model.run(
        {name: model.column(name, is_string, hybrids).reshape(-1, 1) for name, is_string in model.inputs}
    )
    scores = log_odds(model.positive(probabilities))
    size = len(rows)
    return {name: scores[0] - scores[1 + j * size : 1 + (j + 1) * size].mean()
            for j, name in enumerate(names)}


RECORDS = [
    {},  # the first background row itself
    {"orders_12m": 300.0, "return_rate": 3.0, "region": "wales"},  # beyond every background value
    {"age": None, "spend_12m": None, "gender": None},  # missing values (some branches send them "true")
    {"region": "atlantis", "campaign_status": ""},  # categories the one-hot encoder does not know
]


class FeedRecorder:
    """A model's session, keeping the rows and the outputs of every run."""

    def __init__(self, session) -> None:
        self.session, self.runs = session, []

    def run(self, fetch, feed, *args, **kwargs):
        self.runs.append((len(next(iter(feed.values()))), list(fetch)))
        return self.session.run(fetch, feed, *args, **kwargs)

    def direct(self, fetch, feed, options):
        """The session's C++ run, which the model calls for single rows and explanations."""
        return self.run(fetch, feed, options)


def explain(model: Model, x: dict) -> tuple[dict, list]:
    """ICE of every input for x as the endpoint computes it, and the model runs it made."""
    settings = ExplanationSettings(
        enabled=True, method="ICE", n_explanations=11, n_monte_carlo_steps=1, max_rows=10**6
    )
    with watched(model) as recorder:
        (answer,) = model.explain(model.explainer.plan(settings, [x]), [x])[1]
    return answer, recorder.runs


@contextlib.contextmanager
def watched(model: Model):
    """A ``FeedRecorder`` standing in for the model's session, both ways the model calls it."""
    session, run = model._session, model._run
    recorder = FeedRecorder(session)
    model._session, model._run = recorder, recorder.direct
    try:
        yield recorder
    finally:
        model._session, model._run = session, run


@pytest.mark.parametrize("generation", sorted(MODELS))
@pytest.mark.parametrize("change", RECORDS, ids=["background", "beyond", "missing", "unknown"])
def test_tree_ice_equals_the_definition_over_every_background_row(scoring, generation, change):
    model = scoring[1].generations["high-spender"][generation]
    assert model.explainer.ice_method == "trees", "the committed models are tree ensembles"
    rows = background(generation)
    x = rows[0] | change
    expected = definition_ice(model, x, rows)
    answer, runs = explain(model, x)
    assert set(answer) == set(expected)
    for name, value in expected.items():
        # onnxruntime returns float32 probabilities: their log-odds carry about 1e-6
        assert answer[name] == pytest.approx(value, abs=5e-5), name
    (fed, fetched), = runs
    assert fed == 1, "one model run on the record alone: no hybrid rows"
    assert fetched[-1] == "transformed_column", "the run also returns the trees' encoded input"


def test_the_endpoint_explains_a_customer_from_one_model_run_on_its_record(scoring):
    definition, runtime = scoring
    model = runtime.models["high-spender"]
    handler = PredictionHandler(definition, definition.predictions["high-spender"], runtime)
    body = {
        "features": {"customer_id": "C0000002"},
        "explanations": {"enabled": True, "method": "ICE"},
        "dispatch": {"forcedGeneration": "1"},
    }
    with watched(model) as recorder:
        result = asyncio.run(handler.one(body, Timing(0, 0)))["result"]
    assert recorder.runs == [(1, ["label", "probabilities", "transformed_column"])]
    assert len(result["explanations"]) == 3 and all(np.isfinite(v) for v in result["explanations"].values())


def model_with(tmp_path, definition, change) -> Model:
    """The committed model with its graph changed by ``change(graph)``, loaded as the endpoint would."""
    from dataclasses import replace

    proto = onnx.load(SCORING / "model" / "high-spender.onnx")
    change(proto.graph)
    path = tmp_path / "changed.onnx"
    onnx.save(proto, path)
    return Model(replace(definition.predictions["high-spender"], model_path=path))


def test_a_graph_that_mixes_columns_is_explained_with_hybrid_rows(scoring, tmp_path, caplog):
    """An L2 Normalizer before the trees makes every column depend on every input: the reading by
    input does not hold, so ICE must come from the hybrid rows, and still be the definition's."""

    def normalize(graph):
        trees = graph.node[-1]
        trees.input[0] = "normalized"
        graph.node.insert(len(graph.node) - 1, helper.make_node(
            "Normalizer", ["transformed_column"], ["normalized"], domain="ai.onnx.ml", norm="L2"))

    with caplog.at_level(logging.INFO, logger="apinode"):
        model = model_with(tmp_path, scoring[0], normalize)
    assert model.explainer.ice_method == "hybrid rows"
    assert "not made column by column" in caplog.text
    rows = background("1")
    x = rows[3] | {"orders_12m": 40.0}
    answer, runs = explain(model, x)
    expected = definition_ice(model, x, rows)
    assert all(answer[name] == pytest.approx(value, abs=1e-9) for name, value in expected.items())
    assert runs[0][0] > 100, "the hybrid rows are in the feed"


def test_a_reading_that_disagrees_with_onnxruntime_is_not_used(scoring, caplog):
    """The explainer checks the tree reading against onnxruntime before trusting it: trees read
    with every threshold a little off give other leaves, so the hybrid rows explain instead."""
    model = scoring[1].models["high-spender"]
    trees, _ = recognize((SCORING / "model" / "high-spender.onnx").read_bytes(), ("label", "probabilities"))
    trees._threshold = trees._threshold * np.float32(1.05)
    with caplog.at_level(logging.WARNING, logger="apinode"):
        explainer = Explainer(model.inputs, background("1"), model.column, trees, model._encode)
    assert explainer.ice_method == "hybrid rows"
    assert "does not give the model's log-odds" in caplog.text


def test_a_model_that_is_not_a_tree_ensemble_keeps_the_hybrid_rows(fixture_services):
    definition = load_definition(fixture_services["customer-scoring"], {})
    model = Model(definition.predictions["high-spender"])
    assert model.explainer.ice_method == "hybrid rows"
    with pytest.raises(NotATreeModel, match="TreeEnsembleClassifier"):
        recognize(definition.predictions["high-spender"].model_path.read_bytes(), ("label", "probabilities"))


def test_the_served_graph_is_the_model_plus_one_output():
    """The runtime re-serializes the model with its own subset of the ONNX schema: everything it
    does not declare must survive (read back with the onnx package, checked by its checker)."""
    original = (SCORING / "model" / "high-spender.onnx").read_bytes()
    _, served = recognize(original, ("label", "probabilities"))
    before, after = onnx.load_from_string(original), onnx.load_from_string(served)
    onnx.checker.check_model(after)
    assert [o.name for o in after.graph.output] == ["label", "probabilities", "transformed_column"]
    del after.graph.output[-1]
    assert after.SerializeToString() == before.SerializeToString()


def test_a_batch_is_explained_in_one_run_with_each_records_own_figures(scoring):
    """predict-multi with ICE: one model run for the whole batch (its rows read a chunk at a time),
    and each record gets the figures it gets alone."""
    definition, runtime = scoring
    model = runtime.models["high-spender"]
    handler = PredictionHandler(definition, definition.predictions["high-spender"], runtime)
    ids = [f"C{n:07d}" for n in range(1, 21)]  # more than one chunk of rows
    explanations = {"enabled": True, "method": "ICE", "nExplanations": 11}
    dispatch = {"forcedGeneration": "1"}
    alone = [
        asyncio.run(handler.one({"features": {"customer_id": key}, "explanations": explanations,
                                 "dispatch": dispatch}, Timing(0, 0)))["result"]["explanations"]
        for key in ids
    ]
    with watched(model) as recorder:
        body = {"items": [{"features": {"customer_id": key}} for key in ids], "explanations": explanations,
                "dispatch": dispatch}
        results = asyncio.run(handler.many(body, Timing(0, 0)))["results"]
    assert [fed for fed, _ in recorder.runs] == [len(ids)]
    for own, together in zip(alone, (result["explanations"] for result in results)):
        assert together == pytest.approx(own, abs=1e-9)


def test_trees_the_reading_cannot_follow_are_a_reason_not_a_crash():
    """A tree table the reading trips on (here a branch pointing at a node that is not there) is
    NotATreeModel, which keeps the hybrid rows, never an error that stops the model's start-up."""
    proto = onnx.load(SCORING / "model" / "high-spender.onnx")
    trees = proto.graph.node[-1]
    (attribute,) = [a for a in trees.attribute if a.name == "nodes_truenodeids"]
    attribute.ints[0] = 10**6
    with pytest.raises(NotATreeModel, match="cannot follow"):
        recognize(proto.SerializeToString(), ("label", "probabilities"))


def test_a_one_record_explanation_feeds_arrays_of_its_own_thread_never_the_event_loops(scoring):
    """A one-record explanation fills [1, 1] arrays in place, as predict_one does; explanations that
    need a worker thread run there while the event loop keeps scoring with predict_one's arrays,
    so each thread must fill its own, or a score would be read with another record's values."""
    import threading

    model = scoring[1].models["high-spender"]
    loop_arrays = {id(array) for array in model._one_feed.values()}
    here = model._thread_row({"customer_id": "C0000001", "age": 40})
    assert {id(array) for array in here.values()}.isdisjoint(loop_arrays)
    assert model._thread_row({"age": 41}) is not here and model._thread_row({"age": 41})["age"] is here["age"]
    assert float(here["age"][0, 0]) == 41.0 and np.isnan(here["orders_12m"][0, 0]) and here["region"][0, 0] == ""
    other = {}
    worker = threading.Thread(target=lambda: other.update(model._thread_row({"age": 50})))
    worker.start()
    worker.join()
    assert {id(array) for array in other.values()}.isdisjoint({id(array) for array in here.values()} | loop_arrays)
    assert float(here["age"][0, 0]) == 41.0 and float(other["age"][0, 0]) == 50.0


# SHAPLEY of a tree ensemble: its hybrid rows made in the trees' encoded input, scored by the trees
# alone (explanations.py, ``_encoded_shapley``).


def shapley_settings(steps: int) -> ExplanationSettings:
    return ExplanationSettings(enabled=True, method="SHAPLEY", n_explanations=11, n_monte_carlo_steps=steps,
                               max_rows=10**6)


def raw_shapley(model: Model, rows: list[dict], steps: int) -> list[dict]:
    """SHAPLEY from the raw hybrid rows, each encoded by the whole model: the general path."""
    plan = model.explainer.plan(shapley_settings(steps), rows, hybrid=True)
    _, probabilities = model.run(plan.feed)
    return plan.read(model.positive(probabilities), None)


@contextlib.contextmanager
def trees_watched(model: Model):
    """The rows fed to the trees-alone session, and what it was asked for."""
    run, fed = model._trees_run, []

    def recording(fetch, feed, options):
        (encoded,) = feed.values()
        fed.append((encoded.shape, list(fetch)))
        return run(fetch, feed, options)

    model._trees_run = recording
    try:
        yield fed
    finally:
        model._trees_run = run


@pytest.mark.parametrize("generation", sorted(MODELS))
@pytest.mark.parametrize("change", RECORDS, ids=["background", "beyond", "missing", "unknown"])
def test_shapley_from_encoded_hybrids_is_the_raw_hybrids_own(scoring, generation, change):
    """The preprocessing makes each encoded column from one input, so a hybrid's encoded row is the
    record's or the background row's column by column: the trees see exactly what the whole model
    would make of the raw hybrid. The model is fed the record alone, the trees its F - 1 hybrids a
    step, and the figures are the raw hybrids' to the last bit onnxruntime gives."""
    model = scoring[1].generations["high-spender"][generation]
    assert model.explainer.shapley_method == "encoded hybrid rows", "the committed models qualify"
    x = background(generation)[2] | change
    steps, features = 30, len(model.inputs)
    (expected,) = raw_shapley(model, [x], steps)
    with watched(model) as recorder, trees_watched(model) as trees_fed:
        (answer,) = model.explain(model.explainer.plan(shapley_settings(steps), [x]), [x])[1]
    assert recorder.runs == [(1, ["label", "probabilities", "transformed_column"])], "the record alone"
    assert trees_fed == [((steps * (features - 1), 23), ["probabilities"])], "its hybrids, encoded, to the trees"
    assert set(answer) == set(expected)
    for name, value in expected.items():
        assert answer[name] == pytest.approx(value, abs=1e-9), name


def test_a_shapley_batch_is_two_runs_with_each_records_own_figures(scoring):
    """predict-multi with SHAPLEY: one run of the model on the records, one of the trees on all
    their hybrids, and each record gets the figures it gets alone (and through the raw hybrids)."""
    definition, runtime = scoring
    model = runtime.models["high-spender"]
    handler = PredictionHandler(definition, definition.predictions["high-spender"], runtime)
    ids = [f"C{n:07d}" for n in range(1, 6)]
    explanations = {"enabled": True, "method": "SHAPLEY", "nExplanations": 11, "nMonteCarloSteps": 25}
    dispatch = {"forcedGeneration": "1"}
    alone = [
        asyncio.run(handler.one({"features": {"customer_id": key}, "explanations": explanations,
                                 "dispatch": dispatch}, Timing(0, 0)))["result"]["explanations"]
        for key in ids
    ]
    with watched(model) as recorder, trees_watched(model) as trees_fed:
        body = {"items": [{"features": {"customer_id": key}} for key in ids], "explanations": explanations,
                "dispatch": dispatch}
        results = asyncio.run(handler.many(body, Timing(0, 0)))["results"]
    assert [fed for fed, _ in recorder.runs] == [len(ids)]
    assert trees_fed == [((len(ids) * 25 * 10, 23), ["probabilities"])]
    for own, together in zip(alone, (result["explanations"] for result in results)):
        assert together == pytest.approx(own, abs=1e-9)
    records = [{"customer_id": key} for key in ids]
    asyncio.run(runtime.enrichers["high-spender"].complete(records))
    for own, raw in zip(alone, raw_shapley(model, records, 25)):
        assert own == pytest.approx(raw, abs=1e-9)


def test_encoded_hybrids_that_disagree_with_the_model_are_not_used(scoring, caplog):
    """Checked at load before use: trees whose encoded columns are credited to the wrong inputs make
    other hybrids than the model's; a trees session that scores otherwise, or refuses the rows, is
    not the model either. Each keeps the raw hybrid rows, the log saying why."""
    model = scoring[1].models["high-spender"]
    artifact = (SCORING / "model" / "high-spender.onnx").read_bytes()

    def explainer(trees, score_encoded):
        return Explainer(model.inputs, background("1"), model.column, trees, model._encode, model._positive_of,
                         score_encoded)

    trees, _ = recognize(artifact, ("label", "probabilities"))
    assert explainer(trees, model._trees_positive).shapley_method == "encoded hybrid rows"
    shifted, _ = recognize(artifact, ("label", "probabilities"))
    shifted.owners = np.roll(shifted.owners, 1)

    def refusing(encoded):
        raise RuntimeError("wrong input shape")

    cases = [
        (shifted, model._trees_positive, "give another SHAPLEY than the raw ones"),
        (trees, lambda encoded: model._trees_positive(encoded) * 0.9, "do not score the background as the model"),
        (trees, refusing, "cannot score encoded rows (RuntimeError: wrong input shape)"),
    ]
    for candidate, score_encoded, reason in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="apinode"):
            assert explainer(candidate, score_encoded).shapley_method == "hybrid rows"
        assert reason in caplog.text


def test_the_trees_alone_are_a_valid_model_of_the_encoded_input():
    """The trees-alone model, made with the runtime's own subset of the ONNX schema: one node, the
    encoded input as its one input (23 float columns), the trees' outputs, the opsets kept."""
    original = (SCORING / "model" / "high-spender.onnx").read_bytes()
    trees, _ = recognize(original, ("label", "probabilities"))
    alone, model = onnx.load_from_string(trees.alone), onnx.load_from_string(original)
    onnx.checker.check_model(alone)
    assert [node.op_type for node in alone.graph.node] == ["TreeEnsembleClassifier"]
    assert alone.graph.node[0] == model.graph.node[-1]
    (value,) = alone.graph.input
    assert value.name == "transformed_column"
    assert [d.dim_value for d in value.type.tensor_type.shape.dim][1:] == [23]
    assert [o.name for o in alone.graph.output] == ["label", "probabilities"]
    assert list(alone.opset_import) == list(model.opset_import) and not alone.graph.initializer
