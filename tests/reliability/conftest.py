"""Fixtures of the reliability tests: real services on free 127.0.0.1 ports, golden answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.servers import API_KEY, FEATURES_DIR, SCORING_DIR, Service, server_env
from tests.reliability.workload import Golden, sample_ids


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apinode-logs")


@pytest.fixture(scope="session")
def sample() -> list[str]:
    return sample_ids(200)


@pytest.fixture(scope="session")
def golden(sample: list[str], log_dir: Path) -> Golden:
    """Right answers from healthy services: bundled features, and scoring with bundled enrichment."""
    with (
        Service(FEATURES_DIR, server_env(), log_dir=log_dir, name="golden-features").start() as features,
        Service(
            SCORING_DIR, server_env(APINODE_ENRICHMENT="bundled"), log_dir=log_dir, name="golden-scoring"
        ).start() as scoring,
    ):
        return Golden(sample).fetch_lookups(features.url, API_KEY).fetch_predictions(scoring.url, API_KEY)


@pytest.fixture
def features(log_dir: Path):
    """A fresh customer-features with bundled data, stopped after the test."""
    with Service(FEATURES_DIR, server_env(), log_dir=log_dir).start() as service:
        yield service


@pytest.fixture(scope="module")
def shared_features(log_dir: Path):
    """One customer-features for a whole module of tests that do not stop it."""
    with Service(FEATURES_DIR, server_env(), log_dir=log_dir, name="shared-features").start() as service:
        yield service


@pytest.fixture(scope="module")
def shared_scoring(log_dir: Path):
    """One customer-scoring with bundled enrichment for a module of tests that do not stop it."""
    with Service(
        SCORING_DIR, server_env(APINODE_ENRICHMENT="bundled"), log_dir=log_dir, name="shared-scoring"
    ).start() as service:
        yield service
