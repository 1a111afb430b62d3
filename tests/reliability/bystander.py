"""A well-behaved caller that keeps calling while a test misbehaves, and must keep getting answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.reliability.loadgen import Load, describe

# Not a performance bound: an answer this late means the caller was blocked by someone else.
BLOCKED_AFTER_SECONDS = 5.0


@contextlib.asynccontextmanager
async def bystander(base_url: str, calls, api_key: str, workers: int = 2) -> AsyncIterator[Load]:
    """Run ``calls`` in the background; on exit assert every answer was right and none was blocked."""
    load = Load(
        base_url,
        calls,
        workers=workers,
        api_key=api_key,
        timeout=BLOCKED_AFTER_SECONDS * 4,
        pause=0.01,
        seed=80,
    )
    running = asyncio.create_task(load.run(600))
    try:
        yield load
    finally:
        load.stop()
        outcomes = await running
    assert len(outcomes) >= 10, f"the well-behaved caller hardly got through ({len(outcomes)} requests)"
    assert all(o.ok for o in outcomes), "the well-behaved caller was hurt:\n" + describe(outcomes)
    slowest = max(o.latency for o in outcomes)
    assert slowest < BLOCKED_AFTER_SECONDS, f"the well-behaved caller waited {slowest:.1f}s for an answer"
