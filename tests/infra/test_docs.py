"""docs/config.md documents every config key the program accepts and every value the stacks set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import KNOWN_KEYS, SECRET_KEYS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "config.md").read_text()


def _paths(value: Any, prefix: str) -> list[str]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _paths(item, f"{prefix}.{key}")]
    return [prefix]


@pytest.mark.parametrize("key", sorted(KNOWN_KEYS | SECRET_KEYS))
def test_every_top_level_key_is_documented(key: str) -> None:
    assert f"`data-mesh:{key}" in DOC


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_key_set_in_a_stack_file_is_documented(stack: str) -> None:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    missing = []
    for key, value in config.items():
        for path in _paths(value, key):
            if path.startswith("data-mesh:services."):
                path = path.split(".", 2)[2]  # documented per service: `version`, `resources.cpuRequest`...
            elif path.startswith("data-mesh:tags."):
                path = "data-mesh:tags"
            if f"`{path}`" not in DOC:
                missing.append(path)
    assert not missing, f"document these keys in docs/config.md: {missing}"
