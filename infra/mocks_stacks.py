"""Stack references under mocks: which stack a promoting stack reads, and that stack's mocked outputs."""

from __future__ import annotations

import json
from typing import Any, Mapping

MOCK_ORGANIZATION = "organization"  # what pulumi.get_organization() answers under mocks


def referenced_stack(config: Mapping[str, str]) -> str | None:
    """The stack a promoting stack's config reads its images from (``data-mesh:promotion.fromStack``)."""
    raw = config.get("data-mesh:promotion")
    try:
        source = json.loads(raw).get("fromStack") if raw else None
    except (ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None


_COMMITTED_OUTPUTS: dict[str, dict[str, Any]] = {}


def committed_stack_outputs(stack: str) -> dict[str, Any]:
    """The outputs the committed stack file produces under mocks (computed once per process)."""
    if stack not in _COMMITTED_OUTPUTS:
        from infra.mocks import run_stack

        _COMMITTED_OUTPUTS[stack] = run_stack(stack).outputs
    return _COMMITTED_OUTPUTS[stack]
