"""Each image run as Kubernetes will run it, answering the real dataikuapi client, then stopped.

The tests in this module run in file order: the last one stops the containers."""

from __future__ import annotations

import dataikuapi
import httpx
import pytest
from image_harness import SERVICES, Container, logs, start_container, wait_ready

from tests.apinode_proc import free_port

pytestmark = pytest.mark.docker

API_KEY = "image-test-key"
CUSTOMER = "C0000001"
# Longer than the runtime's drain (APINODE_GRACE_SECONDS, 20 s by default), like the Deployment's
# terminationGracePeriodSeconds: docker kills with SIGKILL (exit 137) only after this.
STOP_GRACE_SECONDS = 30
# Container name -> (image, environment). Scoring runs twice: enriching from the dataset bundled in
# its own image, and from the features container over HTTP, as in production.
REMOTE_SCORING = "customer-scoring-remote"
RUNS = {
    "customer-features": ("customer-features", {}),
    "customer-scoring": ("customer-scoring", {"APINODE_ENRICHMENT": "bundled"}),
    REMOTE_SCORING: ("customer-scoring", {"APINODE_ENRICHMENT": "remote"}),
}


@pytest.fixture(scope="module")
def containers(docker, images):
    """Every run in RUNS, ready; removed at the end whatever happened."""
    started: dict[str, Container] = {}
    ports: set[int] = set()
    try:
        for name, (service, env) in RUNS.items():
            if name == REMOTE_SCORING:
                features = started["customer-features"]
                env = {**env, "APINODE_FEATURES_URL": features.url, "APINODE_FEATURES_API_KEY": API_KEY}
            env = {"APINODE_API_KEYS": API_KEY, **env}
            started[name] = start_container(docker, images[service].ref, name, free_port(ports), env, API_KEY)
        for container in started.values():
            wait_ready(docker, container)
        yield started
    finally:
        for container in started.values():
            docker.attempt("rm", "--force", container.id)


def client(container: Container, service_id: str) -> dataikuapi.APINodeClient:
    return dataikuapi.APINodeClient(container.url, service_id, container.api_key)


@pytest.mark.parametrize("name", RUNS)
def test_ready_and_alive(containers, name):
    with httpx.Client(trust_env=False, timeout=5) as http:
        for path in ("/readyz", "/isAlive"):
            assert http.get(f"{containers[name].url}{path}").status_code == 200, path


def score(container: Container) -> dict:
    return client(container, "customer-scoring").predict_record("high-spender", {"customer_id": CUSTOMER})[
        "result"
    ]


def test_scoring_scores_a_customer_by_id_alone(containers):
    result = score(containers["customer-scoring"])
    assert result["ignored"] is False
    assert result["prediction"] in result["probas"]
    assert sum(result["probas"].values()) == pytest.approx(1.0, abs=1e-6)


def test_scoring_enriched_over_http_from_the_features_container_agrees(containers):
    # Same customer, same data behind both enrichment paths: the same score.
    remote = score(containers[REMOTE_SCORING])
    bundled = score(containers["customer-scoring"])
    assert remote["prediction"] == bundled["prediction"]
    assert remote["probas"] == pytest.approx(bundled["probas"])


def test_features_looks_up_a_customer(containers):
    features = client(containers["customer-features"], "customer-features")
    for endpoint in ("demographics", "behavior"):
        row = features.lookup_record(endpoint, {"customer_id": CUSTOMER})
        assert row["data"]["customer_id"] == CUSTOMER, endpoint


def test_a_wrong_api_key_is_refused(containers):
    url = f"{containers['customer-scoring'].url}/public/api/v1/customer-scoring/high-spender/predict"
    with httpx.Client(trust_env=False, timeout=5) as http:
        answer = http.post(url, json={"features": {"customer_id": CUSTOMER}}, auth=("not-the-key", ""))
    assert answer.status_code in (401, 403)
    assert answer.json()["errorType"]


@pytest.mark.parametrize("name", ["customer-features", "customer-scoring"])
def test_docs_are_served_from_the_image_with_its_assets(containers, name):
    """The image keeps the Swagger UI files the docs page loads (the Dockerfile prunes the rest)."""
    base = f"{containers[name].url}/public/api/v1/{name}"
    with httpx.Client(trust_env=False, timeout=5) as http:
        page = http.get(f"{base}/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text, page.text[:300]
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js"):
            assert http.get(f"{base}/docs/assets/{asset}").status_code == 200, asset
        assert http.get(f"{base}/product").status_code == 200


@pytest.mark.parametrize("service", SERVICES)
def test_root_filesystem_is_read_only_to_the_server(docker, containers, service):
    # The server runs and answers (tests above) although nothing but /tmp is writable.
    refused = docker.attempt(
        "exec", containers[service].id, "python3", "-c", "open('/opt/apinode/service/x', 'w')"
    )
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr


# Scoring (remote) first: it depends on features, as a pod would during a rollout.
@pytest.mark.parametrize("name", reversed(RUNS))
def test_docker_stop_ends_it_cleanly_within_the_grace_period(docker, containers, name):
    container = containers[name]
    docker("stop", "--time", str(STOP_GRACE_SECONDS), container.id, timeout=STOP_GRACE_SECONDS + 60)
    state = docker.inspect(container.id)["State"]
    # Exit 0 means the server handled SIGTERM and exited by itself; a SIGKILL after the grace period
    # would show as 137, an unhandled SIGTERM as 143.
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{logs(docker, container)}"
    assert state["OOMKilled"] is False
