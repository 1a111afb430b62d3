"""Model generations and dispatch: weights, sticky dispatch keys, forcedGeneration (dataikuapi's
``forced_generation``), an unknown generation as a clear 400, and who answered in apiContext."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import httpx
import pytest
import yaml
from dataikuapi import APINodeClient
from dataikuapi.utils import DataikuException

from apinode.definition import DefinitionError
from apinode.generations import Dispatcher, UnknownGeneration
from apinode.loader import load_definition
from tests.apinode_proc import API_KEY, ApiNodeProcess, server_env

PREDICT = "/public/api/v1/customer-scoring/high-spender/predict"


def shares(dispatcher: Dispatcher, keys) -> Counter:
    return Counter(dispatcher.choose({"dispatch": {"dispatchKey": key}}) for key in keys)


@pytest.mark.parametrize("weights", [(("1", 50.0), ("2", 50.0)), (("1", 90.0), ("2", 10.0))])
def test_dispatch_keys_spread_by_weight_within_tolerance(weights):
    keys = [f"customer-{n}" for n in range(20_000)]
    counts = shares(Dispatcher("high-spender", weights), keys)
    expected = weights[1][1] / 100 * len(keys)
    sigma = (len(keys) * (weights[1][1] / 100) * (weights[0][1] / 100)) ** 0.5
    assert abs(counts["2"] - expected) < 5 * sigma, counts


def test_a_dispatch_key_always_lands_on_the_same_generation():
    one, other = Dispatcher("high-spender", (("1", 50.0), ("2", 50.0))), Dispatcher(
        "high-spender", (("1", 50.0), ("2", 50.0))
    )
    for n in range(500):
        body = {"dispatch": {"dispatchKey": f"C{n:07d}"}}
        assert len({one.choose(body) for _ in range(3)} | {other.choose(body)}) == 1


def test_growing_the_canary_moves_keys_only_towards_it():
    """90/10 -> 50/50: a key already on generation 2 stays there (no flapping for its users)."""
    keys = [f"k{n}" for n in range(5000)]
    before = {k: Dispatcher("e", (("1", 90.0), ("2", 10.0))).choose({"dispatch": {"dispatchKey": k}}) for k in keys}
    after = {k: Dispatcher("e", (("1", 50.0), ("2", 50.0))).choose({"dispatch": {"dispatchKey": k}}) for k in keys}
    assert all(after[k] == "2" for k in keys if before[k] == "2")
    assert sum(1 for k in keys if before[k] == "1" and after[k] == "2") > 1000


def test_a_zero_weight_generation_gets_no_traffic_but_can_be_forced():
    dispatcher = Dispatcher("e", (("1", 100.0), ("2", 0.0)))
    assert set(shares(dispatcher, range(2000))) == {"1"}
    assert {dispatcher.choose({}) for _ in range(200)} == {"1"}
    assert dispatcher.choose({"dispatch": {"forcedGeneration": "2"}}) == "2"
    assert dispatcher.choose({"dispatch": {"forcedGeneration": 2}}) == "2"


@pytest.mark.parametrize("forced", ["3", "", 0, ["1"], True])
def test_an_unknown_forced_generation_is_a_400_naming_the_known_ones(forced):
    dispatcher = Dispatcher("high-spender", (("1", 90.0), ("2", 10.0)))
    with pytest.raises(UnknownGeneration) as raised:
        dispatcher.choose({"dispatch": {"forcedGeneration": forced}})
    assert raised.value.status == 400
    assert "1, 2" in raised.value.detail


def _scoring_copy(fixture_services, tmp_path, edit) -> object:
    target = tmp_path / "customer-scoring"
    shutil.copytree(fixture_services["customer-scoring"], target)
    raw = yaml.safe_load((target / "service.yaml").read_text())
    edit(raw["endpoints"]["high-spender"])
    (target / "service.yaml").write_text(yaml.safe_dump(raw))
    return target


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ('{"high-spender": {"1": 50, "3": 50}}', "unknown generation '3'"),
        ('{"high-spender": {"1": -1, "2": 50}}', "must be a number >= 0"),
        ('{"high-spender": {"1": 0, "2": 0}}', "at least one weight"),
        ('{"demographics": {"1": 100}}', "not a prediction endpoint"),
        ("1=90,2=10", "not JSON"),
    ],
)
def test_a_bad_dispatch_from_the_environment_names_the_variable(fixture_services, variable, message):
    with pytest.raises(DefinitionError) as raised:
        load_definition(fixture_services["customer-scoring"], {"APINODE_DISPATCH": variable})
    assert "APINODE_DISPATCH" in str(raised.value) and message in str(raised.value)


def test_generations_that_disagree_on_their_inputs_are_refused(fixture_services, tmp_path):
    def edit(endpoint):
        endpoint["generations"]["2"]["metadata"] = "model/other.json"

    target = _scoring_copy(fixture_services, tmp_path, edit)
    card = json.loads((target / "model" / "high-spender-2.json").read_text())
    card["inputs"] = card["inputs"][:-1]
    (target / "model" / "other.json").write_text(json.dumps(card))
    with pytest.raises(DefinitionError, match=r"generations\.2\.metadata: inputs differs"):
        load_definition(target, {})


def test_a_model_beside_generations_is_refused(fixture_services, tmp_path):
    target = _scoring_copy(fixture_services, tmp_path, lambda e: e.update(model="model/high-spender.onnx"))
    with pytest.raises(DefinitionError, match=r"high-spender\.model: set the model per generation"):
        load_definition(target, {})


@pytest.fixture(scope="module")
def fifty_fifty(fixture_services, tmp_path_factory):
    log = tmp_path_factory.mktemp("generations") / "q.jsonl"
    env = server_env(APINODE_DISPATCH='{"high-spender": {"1": 50, "2": 50}}', APINODE_QUERY_LOG=str(log))
    with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as server:
        yield server, log


def test_forced_generation_1_and_2_are_answered_by_those_generations(fifty_fifty):
    server, log = fifty_fifty
    client = APINodeClient(server.url, "customer-scoring", api_key=API_KEY)
    features = {"customer_id": "C0000011"}
    one = client.predict_record("high-spender", features, forced_generation="1")
    two = client.predict_record("high-spender", features, forced_generation="2")
    assert one["apiContext"]["serviceGeneration"] == "1"
    assert two["apiContext"]["serviceGeneration"] == "2"
    # The fixture's generation 2 has another bias: its probabilities differ for the same record.
    assert one["result"]["probas"]["1"] < two["result"]["probas"]["1"]
    again = client.predict_record("high-spender", features, forced_generation="2")
    assert again["result"] == two["result"]
    batch = client.predict_records("high-spender", [{"features": features}] * 2, forced_generation="2")
    assert batch["apiContext"]["serviceGeneration"] == "2"
    assert [r["probas"] for r in batch["results"]] == [two["result"]["probas"]] * 2
    deadline = time.monotonic() + 10
    while len(log.read_text().splitlines()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["generation"] for r in records] == ["1", "2", "2", "2", "2"]
    assert [r["result"]["probas"] for r in records[:2]] == [one["result"]["probas"], two["result"]["probas"]]


def test_an_unknown_forced_generation_through_the_client_is_a_clear_400(fifty_fifty):
    server, _ = fifty_fifty
    client = APINodeClient(server.url, "customer-scoring", api_key=API_KEY)
    with pytest.raises(DataikuException) as raised:
        client.predict_record("high-spender", {"customer_id": "C0000011"}, forced_generation="7")
    assert "UnknownGeneration" in str(raised.value) and "1, 2" in str(raised.value)
    answer = httpx.post(server.url + PREDICT, auth=(API_KEY, ""),
                        json={"features": {"customer_id": "C0000011"}, "dispatch": {"forcedGeneration": "7"}})
    assert answer.status_code == 400 and answer.json()["errorType"] == "UnknownGeneration"


def test_dispatch_keys_spread_over_both_generations_and_stick(fifty_fifty):
    server, _ = fifty_fifty
    client = APINodeClient(server.url, "customer-scoring", api_key=API_KEY)
    first = {}
    for n in range(60):
        key = f"account-{n}"
        answer = client.predict_record("high-spender", {"customer_id": "C0000012"}, dispatch_key=key)
        first[key] = answer["apiContext"]["serviceGeneration"]
    assert set(first.values()) == {"1", "2"}
    for key, generation in list(first.items())[:20]:
        answer = client.predict_record("high-spender", {"customer_id": "C0000012"}, dispatch_key=key)
        assert answer["apiContext"]["serviceGeneration"] == generation


def test_request_metrics_are_labelled_by_generation(fifty_fifty):
    server, _ = fifty_fifty
    for generation in ("1", "2"):
        httpx.post(server.url + PREDICT, auth=(API_KEY, ""),
                   json={"features": {"customer_id": "C0000013"}, "dispatch": {"forcedGeneration": generation}})
    text = httpx.get(server.url + "/metrics").text
    for generation in ("1", "2"):
        assert (f'apinode_requests_total{{endpoint="high-spender/predict",generation="{generation}",'
                f'service="customer-scoring",status="200"}}') in text
        assert (f'apinode_request_duration_seconds_count{{endpoint="high-spender/predict",'
                f'generation="{generation}",service="customer-scoring"}}') in text


def test_the_committed_generations_answer_differently(real_scoring):
    """The shipped generation 2 is a model of its own (retrained by make data), not a copy."""
    client = APINodeClient(real_scoring.url, "customer-scoring", api_key=API_KEY)
    differ = 0
    for n in (1, 4, 7, 12345, 54321):
        features = {"customer_id": f"C{n:07d}"}
        one = client.predict_record("high-spender", features, forced_generation="1")
        two = client.predict_record("high-spender", features, forced_generation="2")
        assert (one["apiContext"]["serviceGeneration"], two["apiContext"]["serviceGeneration"]) == ("1", "2")
        differ += one["result"]["probas"] != two["result"]["probas"]
    assert differ == 5


def test_the_product_page_lists_the_generations_with_the_weights_this_process_dispatches():
    import types

    from apinode.docs import DocsPages
    from tests.apinode_proc import REPO

    definition = load_definition(REPO / "services" / "customer-scoring",
                                 {"APINODE_DISPATCH": '{"high-spender": {"1": 90, "2": 10}}'})
    page = DocsPages(definition, types.SimpleNamespace(sources={}), {}).product_page().decode()
    assert "<tr><td><code>1</code></td><td><code>high-spender.onnx</code></td><td>90</td></tr>" in page
    assert "<tr><td><code>2</code></td><td><code>high-spender-2.onnx</code></td><td>10</td></tr>" in page
