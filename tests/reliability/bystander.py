"""A well-behaved caller that keeps calling while a test misbehaves, and must keep getting answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from tests.reliability.loadgen import Load, describe

# Not a performance bound: an answer this late means the caller was blocked by someone else.
BLOCKED_AFTER_SECONDS = 5.0
MIN_CALLS = 10


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
        # A quick scenario may end before the caller made enough calls to judge: let it finish a
        # few more (bounded; a caller that cannot is reported below).
        deadline = time.monotonic() + BLOCKED_AFTER_SECONDS
        while len(load.outcomes) < MIN_CALLS and not running.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        load.stop()
        outcomes = await running
    assert len(outcomes) >= MIN_CALLS, f"the well-behaved caller hardly got through ({len(outcomes)} requests)"
    assert all(o.ok for o in outcomes), "the well-behaved caller was hurt:\n" + describe(outcomes)
    slowest = max(o.latency for o in outcomes)
    assert slowest < BLOCKED_AFTER_SECONDS, f"the well-behaved caller waited {slowest:.1f}s for an answer"
