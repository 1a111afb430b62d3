"""Which core runs what, and at which priority: servers on core 1, load and harness on core 0."""

from __future__ import annotations

import os

SERVER_CORE = "1"
LOAD_CORE = "0"
# A system of two servers where one calls the other (customer-scoring -> customer-features) or a
# client calls both (Feast, then MLflow): the one the load calls stays on SERVER_CORE, the other
# runs here, as two pods on two nodes would. Both on one core costs either side ~25 % more CPU
# (context switches between them on every request, bench/optimizations.md).
UPSTREAM_CORE = LOAD_CORE
# Servers under test and load generators run at a raised priority (root only, same for every
# system) so that other jobs on a shared machine disturb the measurement less. BENCH_NICE=0: off.
NICE = os.environ.get("BENCH_NICE", "-10")


def pinned(core: str, command: list[str]) -> list[str]:
    """``command`` on one core, at the bench's priority when we may raise it."""
    prefix = ["nice", "-n", NICE] if NICE != "0" and os.geteuid() == 0 else []
    return [*prefix, "taskset", "-c", core, *command]
