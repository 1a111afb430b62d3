"""Shared fixtures: each committed stack file run once under mocks (infra.mocks) per test session."""

from __future__ import annotations

import functools

import pytest

from infra.mocks import StackRun, run_stack

STACKS = ("dev", "prod")


@functools.cache
def _run(stack: str) -> StackRun:
    return run_stack(stack)


@pytest.fixture(params=STACKS)
def stack_run(request: pytest.FixtureRequest) -> StackRun:
    """The program's declarations for one committed stack (dev or prod), with the README's dummy secrets."""
    return _run(request.param)


@pytest.fixture
def dev() -> StackRun:
    return _run("dev")


@pytest.fixture
def prod() -> StackRun:
    return _run("prod")
