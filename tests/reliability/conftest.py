"""Fixtures of the reliability tests: real services on free 127.0.0.1 ports, golden answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.reliability.servers import API_KEY, FEATURES_DIR, SCORING_DIR, Service, clean_env
from tests.reliability.workload import Golden, sample_ids


def remote_env(features_url: str) -> dict[str, str]:
    """Environment that makes customer-scoring enrich through the given customer-features URL.

    The variable names come from customer-scoring's own service.yaml (``remotes.*.url_env`` and
    ``api_key_env``), so the test follows the definition rather than guessing them.
    """
    raw = yaml.safe_load((SCORING_DIR / "service.yaml").read_text())
    env = {"APINODE_ENRICHMENT": "remote"}
    for name, remote in (raw.get("remotes") or {}).items():
        assert remote.get("url_env"), f"customer-scoring remotes.{name} has no url_env to point it at a test port"
        env[remote["url_env"]] = features_url
        if remote.get("api_key_env"):
            env[remote["api_key_env"]] = API_KEY
    assert len(env) > 1, "customer-scoring/service.yaml declares no remote to enrich through"
    return env


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apinode-logs")


@pytest.fixture(scope="session")
def sample() -> list[str]:
    return sample_ids(200)


@pytest.fixture(scope="session")
def golden(sample: list[str], log_dir: Path) -> Golden:
    """Right answers from healthy services: bundled features, and scoring with bundled enrichment."""
    with Service(FEATURES_DIR, clean_env(), log_dir=log_dir, name="golden-features").start() as features, \
            Service(SCORING_DIR, clean_env(APINODE_ENRICHMENT="bundled"), log_dir=log_dir,
                    name="golden-scoring").start() as scoring:
        return Golden(sample).fetch_lookups(features.url, API_KEY).fetch_predictions(scoring.url, API_KEY)


@pytest.fixture
def features(log_dir: Path):
    """A fresh customer-features with bundled data, stopped after the test."""
    with Service(FEATURES_DIR, clean_env(), log_dir=log_dir).start() as service:
        yield service


@pytest.fixture(scope="module")
def shared_features(log_dir: Path):
    """One customer-features for a whole module of tests that do not stop it."""
    with Service(FEATURES_DIR, clean_env(), log_dir=log_dir, name="shared-features").start() as service:
        yield service


@pytest.fixture(scope="module")
def shared_scoring(log_dir: Path):
    """One customer-scoring with bundled enrichment for a module of tests that do not stop it."""
    with Service(SCORING_DIR, clean_env(APINODE_ENRICHMENT="bundled"), log_dir=log_dir,
                 name="shared-scoring").start() as service:
        yield service
