"""Which core runs what, and at which priority: servers on core 1, load and harness on core 0."""

from __future__ import annotations

import os

SERVER_CORE = "1"
LOAD_CORE = "0"
# Servers under test and load generators run at a raised priority (root only, same for every
# system) so that other jobs on a shared machine disturb the measurement less. BENCH_NICE=0: off.
NICE = os.environ.get("BENCH_NICE", "-10")


def pinned(core: str, command: list[str]) -> list[str]:
    """``command`` on one core, at the bench's priority when we may raise it."""
    prefix = ["nice", "-n", NICE] if NICE != "0" and os.geteuid() == 0 else []
    return [*prefix, "taskset", "-c", core, *command]
