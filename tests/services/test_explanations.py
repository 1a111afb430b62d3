"""Explanations on the tiny model, whose log-odds are linear in its numeric inputs (weights known):
the right sign on constructed records, exact ICE values, and one model run per request."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from apinode.handlers import PredictionHandler, Timing
from apinode.loader import load_definition
from apinode.runtime import Runtime

# apinode_fixtures.tiny_model: log-odds = sum(w * x) + category terms - 1.5
WEIGHTS = {
    "age": 0.01,
    "tenure_months": 0.005,
    "orders_12m": 0.05,
    "spend_12m": 0.002,
    "avg_basket": 0.001,
    "recency_days": -0.004,
    "distinct_categories": 0.05,
    "return_rate": -2.0,
}


class CountingSession:
    """The ONNX session, counting its runs."""

    def __init__(self, session) -> None:
        self._session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self._session.run(*args, **kwargs)

    def direct(self, fetch, feed, options):
        """The session's C++ run, which the model calls for single rows and explanations."""
        return self.run(fetch, feed, options)


@contextlib.contextmanager
def watched(model, recorder):
    """``recorder`` stands in for the model's session, both ways the model calls it."""
    session, run = model._session, model._run
    model._session, model._run = recorder, recorder.direct
    try:
        yield recorder
    finally:
        model._session, model._run = session, run


@pytest.fixture(scope="module")
def started(fixture_services):
    definition = load_definition(fixture_services["customer-scoring"], {})
    runtime = Runtime(definition, {})
    asyncio.run(runtime.start())
    endpoint = definition.predictions["high-spender"]
    model = runtime.models["high-spender"]
    model._session = CountingSession(model._session)
    model._run = model._session.direct
    return PredictionHandler(definition, endpoint, runtime), model


def call(handler, body, multi=False):
    timing = Timing(0, 0)
    return asyncio.run(handler.many(body, timing) if multi else handler.one(body, timing))


def record(**numbers) -> dict:
    base = {name: 0.0 for name in WEIGHTS} | {"gender": "F", "region": "north", "campaign_status": "active"}
    return base | numbers


def explain(handler, features, method, count=11, steps=100):
    body = {
        "features": features,
        "explanations": {"enabled": True, "method": method, "nExplanations": count, "nMonteCarloSteps": steps},
    }
    return call(handler, body)["result"]["explanations"]


@pytest.mark.parametrize("method", ["ICE", "SHAPLEY"])
def test_contributions_have_the_sign_of_the_feature_effect(started, method):
    handler, _ = started
    heavy_buyer = explain(handler, record(orders_12m=300.0, return_rate=3.0), method)
    assert heavy_buyer["orders_12m"] > 0, "far more orders than any background row raise the score"
    assert heavy_buyer["return_rate"] < 0, "returns above every background row lower it (weight -2)"
    lapsed = explain(handler, record(orders_12m=0.0, recency_days=2000.0), method)
    assert lapsed["orders_12m"] < 0 and lapsed["recency_days"] < 0


def test_ice_of_a_linear_model_is_weight_times_distance_to_the_background_mean(started, fixture_services):
    import json

    handler, _ = started
    background = json.loads((fixture_services["customer-scoring"] / "model" / "high-spender.reference.json").read_text())[
        "background"
    ]
    x = record(orders_12m=12.0, spend_12m=800.0, age=40.0, return_rate=0.1)
    ice = explain(handler, x, "ICE")
    for name, weight in WEIGHTS.items():
        mean = sum(row[name] for row in background) / len(background)
        assert ice[name] == pytest.approx(weight * (x[name] - mean), abs=2e-3), name


def test_one_model_run_per_request_whatever_the_method_steps_or_batch(started):
    handler, model = started
    session = model._session
    for method, steps in [("ICE", 25), ("SHAPLEY", 25), ("SHAPLEY", 400)]:
        before = session.runs
        body = {
            "items": [{"features": {"customer_id": f"C{n:07d}"}} for n in range(1, 9)],
            "explanations": {"enabled": True, "method": method, "nMonteCarloSteps": steps},
        }
        results = call(handler, body, multi=True)["results"]
        assert all(len(r["explanations"]) == 3 for r in results)
        assert session.runs - before == 1, (method, steps)
    before = session.runs
    explain(handler, record(orders_12m=3.0), "SHAPLEY", steps=1000)
    assert session.runs - before == 1


def test_explanations_skip_ignored_records(started):
    handler, _ = started
    body = {
        "items": [{"features": {"customer_id": "C0999999"}}, {"features": {"customer_id": "C0000002"}}],
        "explanations": {"enabled": True},
    }
    unknown, known = call(handler, body, multi=True)["results"]
    assert unknown["ignored"] is True and "explanations" not in unknown
    assert known["ignored"] is False and all(math.isfinite(v) for v in known["explanations"].values())


class FeedRecorder(CountingSession):
    """The session, keeping the number of rows of each feed it is given."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.fed: list[int] = []

    def run(self, fetch, feed, *args, **kwargs):
        self.fed.append(len(next(iter(feed.values()))))
        return super().run(fetch, feed, *args, **kwargs)


def test_ice_equals_its_definition_over_every_background_row(started, fixture_services):
    """ICE runs the model once per distinct background value, weighting the mean by its count: the
    answer must be the definition's, L(x) - mean over all background rows of L(x with x_j := b_k[j])
    (every row, duplicates included: a value held by 40 rows weighs 40 times), at fewer model rows."""
    import json

    import numpy as np

    from apinode.explanations import log_odds

    handler, model = started
    background = json.loads((fixture_services["customer-scoring"] / "model" / "high-spender.reference.json").read_text())[
        "background"
    ]
    x = record(orders_12m=7.0, spend_12m=310.0, age=52.0, return_rate=0.3, recency_days=40.0) | {"region": "south"}
    names = [name for name, _ in model.inputs]
    hybrids = [x] + [x | {name: row[name]} for name in names for row in background]
    _, probabilities = model.run(
        {name: model.column(name, is_string, hybrids).reshape(-1, 1) for name, is_string in model.inputs}
    )
    scores = log_odds(model.positive(probabilities))
    expected = {
        name: scores[0] - scores[1 + j * len(background) : 1 + (j + 1) * len(background)].mean()
        for j, name in enumerate(names)
    }
    with watched(model, FeedRecorder(model._session)) as recorder:
        ice = explain(handler, x, "ICE")
    assert set(ice) == set(names)
    for name in names:
        assert ice[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    distinct = sum(len({json.dumps(row[name]) for row in background}) for name in names)
    assert recorder.fed == [1 + distinct], "one model run: the record and one row per distinct background value"
    assert distinct < len(names) * len(background), "the fixture's background repeats values (else nothing is saved)"


def test_shapley_walks_start_from_background_scores_known_at_load(started, fixture_services):
    """Each SHAPLEY step walks from a background row z to x; the walk's first point is z itself,
    whose score does not depend on x. Scored once when the model loads, it is not fed again: a step
    costs F - 1 model rows, not F, and the answer is the same as when z is fed with every step."""
    import json

    from apinode.explanations import ExplanationSettings, Explainer

    handler, model = started
    background = json.loads((fixture_services["customer-scoring"] / "model" / "high-spender.reference.json").read_text())[
        "background"
    ]
    x = record(orders_12m=9.0, spend_12m=420.0, age=33.0, return_rate=0.2) | {"region": "south", "gender": "M"}
    steps, features = 40, len(model.inputs)
    settings = ExplanationSettings(enabled=True, method="SHAPLEY", n_explanations=features,
                                   n_monte_carlo_steps=steps, max_rows=10**6)
    feeding_z = Explainer(model.inputs, background, model.column)  # no scores known: z fed every step
    plan = feeding_z.plan(settings, [x])
    assert len(next(iter(plan.feed.values()))) == 1 + steps * features
    _, probabilities = model.run(plan.feed)
    (expected,) = plan.read(model.positive(probabilities), None)
    with watched(model, FeedRecorder(model._session)) as recorder:
        (scored,), (answered,) = model.explain(model.explainer.plan(settings, [x]), [x])
        explain(handler, x, "SHAPLEY", count=features, steps=steps)  # the same through the endpoint
    assert recorder.fed == [1 + steps * (features - 1)] * 2, "the record, then F - 1 hybrids per step"
    assert set(answered) == set(expected)
    for name, value in expected.items():
        assert answered[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert model.explainer.rows_needed(settings, 1) == 1 + steps * (features - 1), "the budget counts what is fed"
