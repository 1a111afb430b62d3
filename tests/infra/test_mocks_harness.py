"""The mock harness is reused by the policy tests and `make render`, in processes that ran asyncio before."""

from __future__ import annotations

import asyncio

from infra.mocks import run_stack


def test_runs_after_an_earlier_asyncio_run_closed_the_loop() -> None:
    async def earlier_async_work() -> int:
        return 1

    asyncio.run(earlier_async_work())
    run = run_stack("dev")
    assert len(run.of_type("aws:ec2/subnet:Subnet")) == 4
