"""Servers shared by a module: fixture data in a temp dir, real processes on free 127.0.0.1 ports."""

from __future__ import annotations

import httpx
import pytest

from apinode_fixtures import service_dir
from tests.apinode_proc import API_KEY, REPO, ApiNodeProcess, server_env
from tests.services.inprocess import InProcessService


@pytest.fixture(scope="session")
def fixture_services(tmp_path_factory):
    """Fixture copies of both services (500 customers, the tiny model)."""
    root = tmp_path_factory.mktemp("services")
    return {name: service_dir(root, name) for name in ("customer-features", "customer-scoring")}


@pytest.fixture(scope="session")
def features_server(fixture_services):
    with ApiNodeProcess(fixture_services["customer-features"]).start() as server:
        yield server


@pytest.fixture(scope="session")
def scoring_server(fixture_services):
    with ApiNodeProcess(fixture_services["customer-scoring"]).start() as server:
        yield server


@pytest.fixture(scope="session")
def remote_scoring_server(fixture_services, features_server):
    env = server_env(
        APINODE_ENRICHMENT="remote",
        APINODE_FEATURES_URL=features_server.url,
        APINODE_FEATURES_API_KEY=API_KEY,
    )
    with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as server:
        yield server


@pytest.fixture()
def auth():
    return httpx.BasicAuth(API_KEY, "")


@pytest.fixture(scope="session")
def real_features():
    """customer-features on the committed 100k artifacts."""
    with ApiNodeProcess(REPO / "services" / "customer-features").start() as server:
        yield server


@pytest.fixture(scope="session")
def real_scoring():
    """customer-scoring on the committed model, bundled enrichment."""
    with ApiNodeProcess(REPO / "services" / "customer-scoring").start() as server:
        yield server


@pytest.fixture(scope="session")
def real_remote_scoring(real_features):
    """customer-scoring enriching through customer-features over HTTP."""
    env = server_env(
        APINODE_ENRICHMENT="remote", APINODE_FEATURES_URL=real_features.url, APINODE_FEATURES_API_KEY=API_KEY
    )
    with ApiNodeProcess(REPO / "services" / "customer-scoring", env).start() as server:
        yield server


# The same services in this process (no socket), once per test module.
@pytest.fixture(scope="module")
def features(fixture_services) -> InProcessService:
    return InProcessService(fixture_services["customer-features"])


@pytest.fixture(scope="module")
def scoring(fixture_services) -> InProcessService:
    return InProcessService(fixture_services["customer-scoring"])
