"""Process settings: the service definition plus what only the environment may say (keys, drain)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .audit import check_destination
from .definition import DefinitionError, ServiceDefinition
from .loader import load_definition
from .secrets import read_api_keys


@dataclass(frozen=True)
class Settings:
    """Everything create_app needs; built once, before the server listens."""

    definition: ServiceDefinition
    api_keys: tuple[str, ...]
    env: Mapping[str, str]
    grace_seconds: float = 20.0
    drain_delay_seconds: float = 0.0


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DefinitionError(f"environment: {name}: expected seconds, got {raw!r}") from None
    if value < 0:
        raise DefinitionError(f"environment: {name}: must not be negative, got {raw!r}")
    return value


def load_settings(service_dir: str | Path, env: Mapping[str, str]) -> Settings:
    """Definition and keys; no API keys is an error, so a service is never open by accident."""
    keys = read_api_keys(env)
    if not keys:
        raise DefinitionError("environment: APINODE_API_KEYS: no API key set (or set APINODE_API_KEYS_FILE)")
    check_destination(env)  # APINODE_QUERY_LOG: a path that cannot be written stops the start
    return Settings(
        definition=load_definition(service_dir, env),
        api_keys=keys,
        env=dict(env),
        grace_seconds=_seconds(env, "APINODE_GRACE_SECONDS", 20.0),
        drain_delay_seconds=_seconds(env, "APINODE_DRAIN_DELAY_SECONDS", 0.0),
    )
