"""The README's performance table, written from the same run as bench/results.md.

The block between ``<!-- bench:table -->`` and ``<!-- /bench:table -->`` in README.md is replaced;
nothing else in the README is touched.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.goals import PER_CPU, _point, _ratio, fmt_ratio, turns_key

BEGIN, END = "<!-- bench:table -->", "<!-- /bench:table -->"


def _rps(point: dict | None) -> str:
    return f"{point['rps']:,.0f} req/s" if point else "n/a"


def table(results: dict) -> list[str]:
    p = lambda workload, system, c: _point(results, workload, system, c)
    servers = results.get("servers", {})
    rows = ["| | ours | peer | ratio per server CPU-s (req/s) |", "|---|---|---|---|"]

    def versus(label: str, workload: str, ours: str, peer: str, peer_label: str) -> None:
        mine, theirs = p(workload, ours, 8), p(workload, peer, 8)
        if not mine or not theirs:
            return
        rows.append(f"| {label} | {_rps(mine)} | {peer_label} {_rps(theirs)} | "
                    f"{fmt_ratio(_ratio(mine, theirs, PER_CPU))} ({fmt_ratio(_ratio(mine, theirs))}) |")

    versus("lookup by id, concurrency 8", "lookup", "ours", "feast", "Feast (sqlite)")
    versus("lookup by id, concurrency 8", "lookup", "ours", "feast-redis", "Feast (Redis)")
    mine, feast = p("lookup", "ours", 1), p("lookup", "feast", 1)
    if mine:
        rows.append(f"| lookup by id, concurrency 1 | p50 {mine['p50_ms']:.2f} ms, p99 {mine['p99_ms']:.2f} ms | "
                    + (f"Feast p50 {feast['p50_ms']:.1f} ms" if feast else "") + " | |")
    versus("score from id only, bundled enrichment, c=8", "score", "ours-bundled", "feast+mlflow", "Feast → MLflow")
    versus("score from id only, bundled enrichment, c=8", "score", "ours-bundled", "feast-redis+mlflow",
           "Feast (Redis) → MLflow")
    versus("score through customer-features (2 hops, one call), c=8", "score", "ours-2hop", "feast+mlflow",
           "Feast → MLflow")
    for system, label in (("ice", "score + ICE explanation, c=8"), ("shapley-25", "score + SHAPLEY (25 steps), c=8")):
        point, plain = p("explain", system, 8), p("score", "ours-bundled", 8)
        if point and plain:
            rows.append(f"| {label} | {_rps(point)} | | {fmt_ratio(_ratio(plain, point, PER_CPU))} "
                        "the CPU of a plain predict |")
    memory = [servers.get(name, {}).get("rss_mib_load") for name in ("features", "scoring", "feast", "mlflow")]
    if all(memory):
        rows.append(f"| resident memory after load | features {memory[0]:.0f} MiB, scoring {memory[1]:.0f} MiB | "
                    f"Feast {memory[2]:.0f} MiB, MLflow {memory[3]:.0f} MiB | |")
    ready = [servers.get(name, {}).get("ready_s") for name in ("features", "scoring", "feast", "mlflow")]
    if all(ready):
        rows.append(f"| ready after start | {ready[0]:.2f} s / {ready[1]:.2f} s | {ready[2]:.1f} s / {ready[3]:.1f} s | |")
    points = [point["loadavg"] for systems in results["workloads"].values() for points in systems.values()
              for point in points if "loadavg" in point]
    load = (f"load average {min(points):.1f}–{max(points):.1f} on 2 cores while measuring: above about 2, other "
            "jobs shared the cores and every figure is lower and noisier" if points else "load not recorded")
    lines = [f"Run of {results.get('date')} ({load}; [bench/results.md](bench/results.md) says which goals hold, "
             "plot in [bench/latency-throughput.png](bench/latency-throughput.png)):", "", *rows, ""]
    bare_lookup = _ratio(p("lookup", "ours", 8), p("lookup", "bare", 8), PER_CPU)
    bare_score = _ratio(p("score", "ours-bundled", 8), p("score", "bare", 8), PER_CPU)
    two_hop = _ratio(p("score", "ours-2hop", 8), p("score", "ours-bundled", 8), PER_CPU)
    keys = (("lookup", "ours", "bare"), ("score", "ours-bundled", "bare"))
    side, turns = results.get("side_by_side", {}), results.get("paired", {})
    how, pairs = ("run side by side with it", side) if all(turns_key(*key) in side for key in keys) else (
        "run in turns with it", turns)
    in_pairs = [pairs.get(turns_key(*key), {}).get("median") for key in keys]
    measured = (f"{fmt_ratio(in_pairs[0])} (lookup) and {fmt_ratio(in_pairs[1])} (bundled scoring) of its throughput "
                f"per CPU-second, {how} (the sweeps, minutes apart: {fmt_ratio(bare_lookup)} and "
                f"{fmt_ratio(bare_score)})" if all(in_pairs) else
                f"{fmt_ratio(bare_lookup)} (lookup) and {fmt_ratio(bare_score)} (bundled scoring) of its throughput "
                "per CPU-second")
    sentence = (f"Against a bare ASGI handler doing the same lookup and ONNX call on the same server stack (no auth, "
                f"no validation), the services keep {measured}; scoring through customer-features "
                f"({results.get('calls_per_score', math.nan):.2f} calls per score) keeps {fmt_ratio(two_hop)} "
                "of bundled scoring.")
    big = results.get("bundle_1m")
    if big:
        sentence += f" A 1M-customer bundle loads in {big['1m']['ready_s']:.1f} s and adds {big['added_mib']:.0f} MiB."
    return [*lines, sentence]


def update(readme: Path, results: dict) -> bool:
    """Replace the marked block; False (README untouched) when the markers are not there."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n" + "\n".join(table(results)) + "\n" + END + tail)
    return True
