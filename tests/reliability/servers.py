"""The reliability tests' and the soak's view of API node processes: the shared harness
(tests/apinode_proc.py) plus resident memory and customer-scoring's remote enrichment settings."""

from __future__ import annotations

import yaml

from tests.apinode_proc import API_KEY, FEATURES_DIR, REPO, SCORING_DIR, ApiNodeProcess, server_env
from tests.reliability.loadgen import rss_kib

__all__ = ["API_KEY", "FEATURES_DIR", "REPO", "SCORING_DIR", "Service", "remote_env", "server_env"]


def remote_env(features_url: str) -> dict[str, str]:
    """Environment that makes customer-scoring enrich through the given customer-features URL.

    The variable names come from customer-scoring's own service.yaml (``remotes.*.url_env`` and
    ``api_key_env``), so the test follows the definition rather than guessing them.
    """
    raw = yaml.safe_load((SCORING_DIR / "service.yaml").read_text())
    env = {"APINODE_ENRICHMENT": "remote"}
    for name, remote in (raw.get("remotes") or {}).items():
        assert remote.get("url_env"), (
            f"customer-scoring remotes.{name} has no url_env to point it at a test port"
        )
        env[remote["url_env"]] = features_url
        if remote.get("api_key_env"):
            env[remote["api_key_env"]] = API_KEY
    assert len(env) > 1, "customer-scoring/service.yaml declares no remote to enrich through"
    return env


class Service(ApiNodeProcess):
    """An API node process whose resident memory the tests watch."""

    def rss_kib(self) -> int:
        return rss_kib(self.pid)
