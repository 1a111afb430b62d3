"""The figures one measurement cannot be trusted for on a shared machine, measured several times.

* Tail latency at concurrency 1 (``tails``): the p99 goals are for "a quiet run". One 6 s run per
  point put the bundled score's p99 at 0.39 ms in one run of record and 1.78 ms in another, the
  bare reference's at 1.46 and 2.79 ms in the same runs (bench/optimizations.md, eighth round):
  other jobs' bursts, not the server. So each system answers several short bursts at c=1, the
  systems in alternation (all alive, one loaded at a time), and the goal is judged by the
  quietest burst, every burst shown. Other jobs on a shared machine only ever add latency,
  as the sweeps keep the best of their runs for throughput.
* Ready time after start (``starts``): each server started several times, the best start kept,
  every start shown, and the largest resident memory (memory is not judged by its best). A single
  start measured 4.23 s once (the first after the peers' 46 s of preparation; 0.50-0.58 s just
  after) and the 1M bundle 3.19 s once and 0.93 s an hour before.
* An explanation against a plain predict (``explanations``): the same scoring server twice, side
  by side (bench/side.py), one asked for explanations and one not, instead of two sweeps minutes
  apart (ICE measured 2.99× and 1.76× the CPU of a plain predict in two runs as the plain
  sweep's point moved from 6,131 to 3,882 per CPU-second).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from bench import side
from bench import workloads as w
from bench.load import run_wrk
from bench.procs import ServerSpec, Servers

BURSTS = 5
BURST_SECONDS = 3.0
STARTS = 3


def tails(systems: dict[str, side.Builder], logs: Path, workdir: Path, customers: int, bursts: int = BURSTS,
          seconds: float = BURST_SECONDS) -> dict:
    """Per system, p50 and p99 (ms) of each burst at c=1, and the quietest p99 (the least of them)."""
    built = side._specs(systems)
    folders = [workdir / name for name in systems]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    figures = {name: {"p50_ms": [], "p99_ms": [], "errors": 0} for name in systems}
    with Servers([spec for spec, _ in built], logs):
        for (_, target), folder in zip(built, folders):
            run_wrk(target, 1, 1.0, customers, folder)  # warm each
        for _ in range(bursts):
            for name, (_, target), folder in zip(systems, built, folders):
                result = run_wrk(target, 1, seconds, customers, folder)
                figures[name]["p50_ms"].append(round(result.p50_ms, 3))
                figures[name]["p99_ms"].append(round(result.p99_ms, 3))
                figures[name]["errors"] += result.errors
    for figure in figures.values():
        figure["quietest_p99_ms"] = min(figure["p99_ms"])
        figure["median_p99_ms"] = round(statistics.median(figure["p99_ms"]), 3)
        figure["seconds"] = seconds
    return figures


def starts(servers: dict[str, Callable[[], ServerSpec]], logs: Path, times: int = STARTS) -> dict:
    """Per server, each start's seconds to ready and resident MiB then; the best start and the most memory.

    The servers are started in rounds (each once per round), so a slow minute of the machine
    touches every server's same start rather than all of one server's."""
    figures = {name: {"starts_s": [], "rss_mib_each": []} for name in servers}
    for _ in range(times):
        for name, build in servers.items():
            with Servers([build()], logs) as (server,):
                figures[name]["starts_s"].append(round(server.ready_seconds, 3))
                figures[name]["rss_mib_each"].append(round(server.rss_mib(), 1))
    for figure in figures.values():
        figure["ready_s"] = min(figure["starts_s"])
        figure["rss_mib"] = max(figure["rss_mib_each"])
    return figures


def explanations(layout: w.Layout, logs: Path, workdir: Path, customers: int) -> dict:
    """Per explanation kind, a plain predict's requests per CPU-second over an explained one's,
    side by side: how many plain predicts one explanation costs, burst by burst."""
    figures = {}
    for kind in w.EXPLANATIONS:
        figures[kind] = side.measure({
            "plain": lambda: (w.scoring(layout, remote=False, name="scoring-plain-side"), w.score_ours()),
            kind: lambda kind=kind: (w.scoring(layout, remote=False, name=f"scoring-{kind}-side"),
                                     w.score_explained(kind)),
        }, logs, workdir / kind, customers)
    return figures
