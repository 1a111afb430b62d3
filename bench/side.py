"""Two systems measured side by side: both alive and loaded at once (one wrk each, c=8), in short
bursts, their requests per server CPU-second compared burst by burst.

Why: the goals that compare two setups (records on against off, ours against the bare reference)
are a few per cent apart, and this machine's speed moves by a quarter within a minute. Run in
turns, seconds apart, three turns of the same two servers gave a records cost of 15-20 % in one
run and 2-19 % in the next (bench/optimizations.md, sixth round). Side by side, both share the
server core in the same seconds, so whatever the machine does to one it does to the other: the
eight bursts of one pair stay within about ±5 % of their median, and the same server twice gives
0.98-1.04 (eighth round).

What it measures: each system's CPU-efficiency while it shares the core with the other, one
process each, as two pods on one node share it. Each is loaded below its own peak (the load core
drives both). For one program with a feature on and off the two disturb each other alike (the
same server twice: 0.98-1.04). Two programs (ours, the bare reference) might not; two runs of
record put this figure below the turns once and above them once (bench/goals.py, ``_judged``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import workloads as w
from bench.load import Target, run_wrk
from bench.procs import ServerSpec, Servers, free_ports

BURSTS = 8
BURST_SECONDS = 3.0

# A system: its server, or its servers (two hops: customer-features and the scoring that calls
# it, their CPU summed), and the target its load is sent to.
Builder = Callable[[], tuple["ServerSpec | tuple[ServerSpec, ...]", Target]]


def _specs(systems: dict[str, Builder]) -> list[tuple[ServerSpec, Target]]:
    """Each system built on ports of its own (the builders read ``workloads.PORTS``), then the
    ports put back for the rest of the run."""
    saved = dict(w.PORTS)
    built = []
    try:
        for build in systems.values():
            w.PORTS.update(zip(w.PORTS, free_ports(len(w.PORTS))))
            built.append(build())
    finally:
        w.PORTS.update(saved)
    return built


def measure(systems: dict[str, Builder], logs: Path, workdir: Path, customers: int, bursts: int = BURSTS,
            seconds: float = BURST_SECONDS) -> dict:
    """The first system's requests per CPU-second over the second's, per burst, and their median."""
    if len(systems) != 2:
        raise ValueError(f"side by side compares two systems, not {len(systems)}")
    built = [(spec if isinstance(spec, tuple) else (spec,), target) for spec, target in _specs(systems)]
    folders = [workdir / name for name in systems]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)  # one wrk script each
    per_cpu: list[list[float]] = [[], []]
    ratios, errors = [], 0
    with Servers([spec for specs, _ in built for spec in specs], logs) as servers, ThreadPoolExecutor(2) as pool:
        count = len(built[0][0])
        groups = [servers[:count], servers[count:]]

        def burst(length: float) -> list[float]:
            nonlocal errors
            before = [sum(server.cpu_seconds() for server in group) for group in groups]
            runs = [pool.submit(run_wrk, target, 8, length, customers, folder)
                    for (_, target), folder in zip(built, folders)]
            results = [run.result() for run in runs]
            cpu = [sum(server.cpu_seconds() for server in group) - start for group, start in zip(groups, before)]
            errors += sum(result.errors for result in results)
            return [result.requests / spent if spent > 0 else 0.0 for result, spent in zip(results, cpu)]

        burst(1.0)  # warm both
        for _ in range(bursts):
            first, second = burst(seconds)
            per_cpu[0].append(round(first, 1))
            per_cpu[1].append(round(second, 1))
            ratios.append(round(first / second, 4) if second else 0.0)
    return {"ratios": ratios, "median": round(statistics.median(ratios), 4), "seconds": seconds,
            "per_cpu": dict(zip(systems, per_cpu)), "errors": errors}
