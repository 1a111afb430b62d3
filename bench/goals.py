"""The goals the benchmark judges, each with its measured figure and verdict, from one run's figures.

Throughput goals are judged per server CPU-second (the figure other jobs on a shared machine
move least); the req/s ratio is shown beside it. A goal comparing two systems is judged side by
side (both loaded at once, bench/side.py) when the run has it, else in turns (``_judged``). A goal
whose figure is missing is "not measured", with the reason in the measured column.
"""

from __future__ import annotations

import math

# The 2026-11-25 run (results.md of e43934f), per server CPU-second at c=8: "no slower than today".
# Judged as ratios to a reference measured in the same run (the bare reference, or our own
# bundled scoring, or MLflow), since the machine itself is not as fast from one day to the next.
BASELINE = {"date": "2026-11-25", "rows": (
    ("lookup ÷ bare reference", ("lookup", "ours"), ("lookup", "bare"), 0.72),
    ("score (bundled) ÷ bare reference", ("score", "ours-bundled"), ("score", "bare"), 0.71),
    # Measured then with both services on one core: judged against the row kept in that layout.
    ("score (2 hops, both on one core) ÷ score (bundled)", ("score", "ours-2hop-one-core"),
     ("score", "ours-bundled"), 0.34),
    ("predict-multi ÷ MLflow serve", ("multi", "ours"), ("multi", "mlflow"), 6.94),
)}
# Shared-machine noise between runs: "no slower" allows this much.
BASELINE_TOLERANCE = 0.05
PER_CPU = "requests_per_cpu_s"


def turns_key(workload: str, first: str, second: str) -> str:
    """Where ``results["paired"]`` keeps the ratios of ``first`` over ``second`` run in turns."""
    return f"{workload}:{first}/{second}"


def _point(results: dict, workload: str, system: str, concurrency: int) -> dict | None:
    for point in results["workloads"].get(workload, {}).get(system, []):
        if point["concurrency"] == concurrency:
            return point
    return None


def _ratio(numerator: dict | None, denominator: dict | None, key: str = "rps") -> float:
    if not numerator or not denominator or not denominator[key]:
        return math.nan
    return numerator[key] / denominator[key]


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else (f"{value:.1f}×" if value >= 10 else f"{value:.2f}×")


def _judged(key: str, paired: dict, side: dict, cpu: float, measured: str, rest: str, head,
            each) -> tuple[float, str]:
    """The figure a goal comparing two systems is judged by, and its text: the median of the bursts
    side by side (bench/side.py) when the run has them, else of the runs in turns, else ``cpu``
    (the sweeps, or the best runs: ``rest``); each figure the run has is shown.

    Side by side first, for ours against the bare reference too: two different programs sharing
    a core might disturb each other unequally, but two runs of record put side by side below the
    turns once (0.744 against 0.903, lookups) and above them once (0.815 against 0.758), while its
    bursts stayed within ±5 % and the turns spread from 0.40 to 0.99 (bench/optimizations.md,
    eighth round)."""
    turns, both = paired.get(key), side.get(key)
    if turns:
        measured = (f"{head(turns['median'])} per CPU-second, median of {len(turns['ratios'])} runs in turns "
                    f"({', '.join(map(each, turns['ratios']))}); {rest}: {measured}")
        cpu = turns["median"]
    if both:
        measured = (f"{head(both['median'])} per CPU-second, median of {len(both['ratios'])} bursts side by side "
                    f"({', '.join(map(each, both['ratios']))}); {measured}")
        cpu = both["median"]
    return cpu, measured


def _best_start(figures: dict) -> str:
    """A ready time as bench/repeat.py measures it: the best of several starts, each shown."""
    each = figures.get("starts_s")
    if not each:
        return f"{figures['ready_s']:.2f} s"
    return f"{figures['ready_s']:.2f} s, the best of {len(each)} starts ({', '.join(f'{v:.2f}' for v in each)} s)"


def goals(results: dict) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, holds) for each goal; None when not measured."""
    p = lambda workload, system, c: _point(results, workload, system, c)
    servers, rows = results.get("servers", {}), []
    paired, side = results.get("paired", {}), results.get("side_by_side", {})
    times = (lambda r: f"{r:.3f}×"), (lambda r: f"{r:.2f}")
    fewer = (lambda r: f"{100 * (1 - r):.1f}% fewer"), (lambda r: f"{100 * (1 - r):.1f}%")
    micro = results.get("micro", {})

    def ratio_goal(text: str, workload: str, ours: str, other: str, at_least: float,
                   other_workload: str | None = None) -> None:
        mine, theirs = p(workload, ours, 8), p(other_workload or workload, other, 8)
        wall, cpu = _ratio(mine, theirs), _ratio(mine, theirs, PER_CPU)
        measured = f"{fmt_ratio(cpu)} per CPU-second (req/s: {fmt_ratio(wall)})"
        cpu, measured = _judged(turns_key(workload, ours, other), paired, side, cpu, measured,
                                "sweeps minutes apart", *times)
        rows.append((text, measured, None if math.isnan(cpu) else cpu >= at_least))

    def latency_goal(text: str, workload: str, system: str, key: str, limit: float) -> None:
        point, bare = p(workload, system, 1), p(workload, "bare", 1)
        if not point:
            rows.append((text, "n/a", None))
            return
        measured = f"{point[key]:.3f} ms (bare reference: {bare[key]:.3f} ms)" if bare else f"{point[key]:.3f} ms"
        inside = point.get("server_side", {}).get("within_0.001s")
        if inside is not None:
            measured += f"; the server's own handling ≤ 1 ms for {100 * inside:.2f}% of requests"
        figure, tails = point[key], results.get("tails", {})
        mine, theirs = tails.get(f"{workload}:{system}"), tails.get(f"{workload}:bare")
        if key == "p99_ms" and mine:  # "on a quiet run": the quietest of the bursts (bench/repeat.py)
            figure = mine["quietest_p99_ms"]
            each = lambda figures: ", ".join(f"{v:.2f}" for v in figures["p99_ms"])  # noqa: E731
            measured = (f"{figure:.3f} ms in the quietest of {len(mine['p99_ms'])} bursts of {mine['seconds']:g} s "
                        f"(each: {each(mine)} ms" + (f"; bare reference's: {each(theirs)} ms" if theirs else "")
                        + f"); the sweep's run: {measured}")
        rows.append((text, measured, figure <= limit))

    def cost_goal(text: str, workload: str, system: str, base_workload: str, base: str, at_most: float,
                  missing: str = "n/a") -> None:
        """Throughput lost per CPU-second against ``base`` at c=8, at most ``at_most`` (a share)."""
        # Against the same server without the feature, measured in turns with it, when the run has it.
        mine, plain = p(workload, system, 8), p(workload, f"{system}-off", 8) or p(base_workload, base, 8)
        cpu = _ratio(mine, plain, PER_CPU)
        if math.isnan(cpu):
            rows.append((text, missing, None))
            return
        measured = (f"{100 * (1 - cpu):.1f}% fewer per CPU-second ({mine[PER_CPU]:,.0f} against "
                    f"{plain[PER_CPU]:,.0f}; req/s: {100 * (1 - _ratio(mine, plain)):.1f}%)")
        cpu, measured = _judged(turns_key(workload, system, f"{system}-off"), paired, side, cpu, measured,
                                "best runs", *fewer)
        rows.append((text, measured, 1 - cpu <= at_most))

    def times_goal(text: str, system: str, at_most: float) -> None:
        """An explained predict costs at most ``at_most`` plain predicts (per CPU-second, c=8): side by
        side when the run has it (bench/repeat.py), else the two sweeps."""
        mine, plain = p("explain", system, 8), p("score", "ours-bundled", 8)
        times, both = _ratio(plain, mine, PER_CPU), results.get("explain_side", {}).get(system)
        if math.isnan(times) and not both:
            rows.append((text, "n/a", None))
            return
        latency = p("explain", system, 1)
        sweeps = (f"{fmt_ratio(times)} the CPU of a plain predict ({mine[PER_CPU]:,.0f} against "
                  f"{plain[PER_CPU]:,.0f} per CPU-second)" if not math.isnan(times) else "n/a")
        measured = sweeps + (f"; p50 at c=1 {latency['p50_ms']:.2f} ms" if latency else "")
        if both:
            times = both["median"]
            measured = (f"{fmt_ratio(times)} the CPU of a plain predict, median of {len(both['ratios'])} bursts side "
                        f"by side ({', '.join(f'{r:.2f}' for r in both['ratios'])}); the sweeps minutes apart: {measured}")
        rows.append((text, measured, times <= at_most))

    # Against the peers (kept from the first issue) and Feast's production store (Redis).
    ratio_goal("lookup ≥ 10× Feast (sqlite) at c=8", "lookup", "ours", "feast", 10)
    ratio_goal("lookup ≥ 10× Feast (Redis) at c=8", "lookup", "ours", "feast-redis", 10)
    ratio_goal("score (bundled) ≥ 40× the Feast→MLflow chain at c=8", "score", "ours-bundled", "feast+mlflow", 40)
    ratio_goal("score (bundled) ≥ 40× the Feast (Redis)→MLflow chain at c=8", "score", "ours-bundled",
               "feast-redis+mlflow", 40)
    ratio_goal("score via customer-features (2 hops) ≥ 20× the chain at c=8", "score", "ours-2hop", "feast+mlflow", 20)
    # Against the bare reference and between our own setups.
    ratio_goal("lookup ≥ 0.8× the bare reference at c=8", "lookup", "ours", "bare", 0.8)
    ratio_goal("score (bundled) ≥ 0.8× the bare reference at c=8", "score", "ours-bundled", "bare", 0.8)
    ratio_goal("score via customer-features (2 hops) ≥ 0.5× bundled scoring at c=8", "score", "ours-2hop",
               "ours-bundled", 0.5)
    calls = results.get("calls_per_score")
    rows.append(("one round trip per score: customer-features requests per two-hop score",
                 f"{calls:.3f}" if calls is not None else "n/a", None if calls is None else calls <= 1.0))
    latency_goal("lookup p99 ≤ 1 ms at c=1", "lookup", "ours", "p99_ms", 1.0)
    latency_goal("score (bundled) p99 ≤ 1 ms at c=1", "score", "ours-bundled", "p99_ms", 1.0)
    latency_goal("score (bundled) p50 ≤ 0.5 ms at c=1", "score", "ours-bundled", "p50_ms", 0.5)
    # What the features cost.
    query_log = results.get("features", {}).get("query_log", True)
    missing = "not measured: feature not on main" if not query_log else "n/a"
    cost_goal("query records to a file cost ≤ 5% (score, bundled, c=8)", "score", "ours-bundled-querylog",
              "score", "ours-bundled", 0.05, missing)
    cost_goal("query records to a file cost ≤ 5% (lookup, c=8)", "lookup", "ours-querylog", "lookup", "ours",
              0.05, missing)
    hop_us, two_hop = micro.get("trace_hop_us"), p("score", "ours-2hop", 8)
    if hop_us is not None and two_hop:
        share = hop_us / (1e6 / two_hop[PER_CPU])
        rows.append(("trace propagation costs ≤ 3% (two hops, c=8)",
                     f"{100 * share:.1f}% of a two-hop score's CPU ({hop_us:.2f} µs of "
                     f"{1e6 / two_hop[PER_CPU]:.0f} µs; in-process, both sides; the runtime has no switch to turn it off)",
                     share <= 0.03))
    else:
        rows.append(("trace propagation costs ≤ 3% (two hops, c=8)",
                     micro.get("trace_error") or "not measured: feature not on main", None))
    times_goal("an ICE explanation ≤ 3× a plain predict", "ice", 3)
    times_goal("a SHAPLEY explanation (25 steps) ≤ 10× a plain predict", "shapley-25", 10)
    # Everything else no slower than the last run before this issue.
    for label, (workload, system), (base_workload, base), before in BASELINE["rows"]:
        ratio = _ratio(p(workload, system, 8), p(base_workload, base, 8), PER_CPU)
        measured = "n/a" if math.isnan(ratio) else f"{fmt_ratio(ratio)} per CPU-second against {fmt_ratio(before)}"
        key = turns_key(workload, system, base)
        if workload == base_workload and (key in paired or key in side):  # as ratio_goal judges them
            ratio, how = _judged(key, paired, side, ratio, measured, "sweeps", *times)
            measured = f"{ratio:.3f}× per CPU-second against {fmt_ratio(before)} ({how})"
        rows.append((f"no slower than on {BASELINE['date']}: {label} at c=8 (within {100 * BASELINE_TOLERANCE:.0f}%)",
                     measured, None if math.isnan(ratio) else ratio >= before * (1 - BASELINE_TOLERANCE)))
    for name, label in (("features", "customer-features"), ("scoring", "customer-scoring")):
        facts = servers.get(name, {})
        rss = facts.get("rss_mib_load")
        rows.append((f"{label} ≤ 150 MiB resident after load (100k bundle)", f"{rss} MiB" if rss else "n/a",
                     None if rss is None else rss <= 150))
        ready, started = facts.get("ready_s"), results.get("starts", {}).get(name)
        measured = f"{ready:.2f} s" if ready else "n/a"
        if started:
            ready, measured = started["ready_s"], f"{_best_start(started)}; the sweep's start: {measured}"
        rows.append((f"{label} ready ≤ 2 s after start", measured, None if ready is None else ready <= 2))
    for service, size in results.get("size", {}).get("image_estimate", {}).items():
        rows.append((f"{service} image's own layers ≤ 180 MiB (estimated: dependencies as images/Dockerfile lays "
                     "them out + runtime code + service folder; no image is built here)", f"{size} MiB", size <= 180))
    big = results.get("bundle_1m")
    if big:
        rows.append(("1M-row bundle loads in < 2 s (ready time, an upper bound)", _best_start(big["1m"]),
                     big["1m"]["ready_s"] < 2))
        rows.append(("1M-row bundle adds < 200 MB (RSS vs the 100k bundle)",
                     f"{big['added_mib']} MiB ({big['added_mib'] * 2**20 / 1e6:.0f} MB)",
                     big["added_mib"] * 2**20 / 1e6 < 200))
    return rows
