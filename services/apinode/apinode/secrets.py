"""Secrets come from an environment variable or a mounted file named by ``<VAR>_FILE``; never logged."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .definition import DefinitionError


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """The value of ``name``, else the stripped content of the file in ``name_FILE``, else None."""
    if env.get(name):
        return env[name]
    file = env.get(f"{name}_FILE")
    if not file:
        return None
    try:
        return Path(file).read_text().strip() or None
    except OSError as error:
        raise DefinitionError(f"environment: {name}_FILE: cannot read {file}: {error.strerror}") from None


def read_api_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """Accepted API keys: comma- or newline-separated, from APINODE_API_KEYS or its _FILE."""
    raw = read_secret(env, "APINODE_API_KEYS") or ""
    return tuple(key.strip() for key in raw.replace("\n", ",").split(",") if key.strip())
