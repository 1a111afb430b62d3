"""Soak: minutes of mixed load on both services; errors, latency over time, memory at start and end.

    python -m bench.soak --minutes 10          # what `make soak` runs

Starts customer-features (bundled data) and customer-scoring enriching through it over HTTP, on
free 127.0.0.1 ports; reads the right answers for a sample of customers from healthy services;
then runs lookups, lookup-multi, predict and predict-multi at the same time, checking every
answer. Writes bench/out/soak.md, prints it, and exits 1 when any request failed or resident
memory did not stay flat. Latencies are reported, never judged: this is not a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.loadgen import Load, Summary, percentile
from tests.reliability.servers import (
    API_KEY,
    FEATURES_DIR,
    REPO,
    SCORING_DIR,
    Service,
    remote_env,
    server_env,
)
from tests.reliability.workload import Golden, sample_ids

OUT = REPO / "bench" / "out" / "soak.md"
# Flat memory: the end within this much of the start (after warm-up). Generous on purpose.
FLAT_RATIO, FLAT_SLACK_MIB = 1.10, 16


def memory_is_flat(start_kib: int, end_kib: int) -> bool:
    return end_kib <= start_kib * FLAT_RATIO + FLAT_SLACK_MIB * 1024


async def soak(
    features: Service, scoring: Service, golden: Golden, seconds: float, workers: int, window: float
) -> dict:
    summaries = {"customer-features": Summary(window), "customer-scoring": Summary(window)}
    loads = [
        Load(
            features.url,
            golden.features_calls(),
            workers=max(1, workers // 3),
            api_key=API_KEY,
            timeout=30,
            keep=False,
            on_outcome=summaries["customer-features"].add,
            seed=1,
        ),
        Load(
            scoring.url,
            golden.scoring_calls(),
            workers=max(1, workers - workers // 3),
            api_key=API_KEY,
            timeout=30,
            keep=False,
            on_outcome=summaries["customer-scoring"].add,
            seed=2,
        ),
    ]
    origin = time.monotonic()
    for load in loads:
        load.origin = origin
    running = [asyncio.create_task(load.run(seconds)) for load in loads]
    warmup = min(10.0, seconds / 10)
    await asyncio.sleep(warmup)  # memory "at start": after the first requests warmed the caches up
    rss = {
        "customer-features": [(warmup, features.rss_kib())],
        "customer-scoring": [(warmup, scoring.rss_kib())],
    }
    while not all(task.done() for task in running):
        await asyncio.wait(running, timeout=min(window, 15.0))
        elapsed = time.monotonic() - origin
        for name, service in (("customer-features", features), ("customer-scoring", scoring)):
            if service.running():
                rss[name].append((elapsed, service.rss_kib()))
    for task in running:
        task.result()
    return {"summaries": summaries, "rss": rss, "seconds": time.monotonic() - origin}


def fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def report(result: dict, args: argparse.Namespace) -> tuple[str, bool]:
    summaries, rss = result["summaries"], result["rss"]
    errors = sum(s.error_count for s in summaries.values())
    flat = {name: memory_is_flat(points[0][1], points[-1][1]) for name, points in rss.items()}
    passed = errors == 0 and all(flat.values())
    lines = [
        "# Soak report",
        "",
        f"- when: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"duration {result['seconds'] / 60:.1f} min; "
        f"{args.workers} concurrent callers; windows of {args.window:g} s",
        "- load: customer-features `lookup` and `lookup-multi` (10 ids) on both endpoints; customer-scoring "
        "`predict` and `predict-multi` (10 records) with only `customer_id`, enriched through "
        "customer-features "
        "over HTTP; every answer compared with the right one",
        f"- verdict: **{'PASS' if passed else 'FAIL'}**: {errors} errors (goal 0); memory "
        + ", ".join(f"{name} {'flat' if ok else 'NOT flat'}" for name, ok in flat.items())
        + f" (flat: end <= start x {FLAT_RATIO:g} + {FLAT_SLACK_MIB} MiB)",
        "",
        "## Totals",
        "",
        "| service | requests | errors | p50 ms | p95 ms | p99 ms | max ms "
        "| RSS start MiB | RSS end MiB | RSS max MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, summary in summaries.items():
        values = summary.all_latencies()
        points = rss[name]
        lines.append(
            f"| {name} | {summary.requests} | {summary.error_count} | {fmt(percentile(values, 50))} | "
            f"{fmt(percentile(values, 95))} | {fmt(percentile(values, 99))} | "
            f"{fmt(max(values, default=math.nan))} | "
            f"{points[0][1] / 1024:.0f} | {points[-1][1] / 1024:.0f} | "
            f"{max(p[1] for p in points) / 1024:.0f} |"
        )
    for name, summary in summaries.items():
        lines += [
            "",
            f"## {name} over time",
            "",
            "| from s | requests | errors | p50 ms | p95 ms | p99 ms | max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {w.start:.0f} | {w.requests} | {w.errors} | {fmt(w.p50)} | {fmt(w.p95)} | {fmt(w.p99)} | "
            f"{fmt(w.max)} |"
            for w in summary.windows()
        ]
    lines += [
        "",
        "## Resident memory (MiB) over time",
        "",
        "| at s | customer-features | customer-scoring |",
        "|---:|---:|---:|",
    ]
    for (at, features_kib), (_, scoring_kib) in zip(rss["customer-features"], rss["customer-scoring"]):
        lines.append(f"| {at:.0f} | {features_kib / 1024:.1f} | {scoring_kib / 1024:.1f} |")
    failures = [(name, o) for name, s in summaries.items() for o in s.failures]
    if failures:
        lines += ["", "## Errors", ""]
        for name, summary in summaries.items():
            lines += [f"- {name}: {kind}: {count}" for kind, count in summary.kinds.items()]
        lines += ["", "First failures:", ""]
        lines += [
            f"- {name} t={o.started:.1f}s {o.name}: status {o.status}, {o.problem} {o.message or ''}"
            for name, o in failures[:20]
        ]
    return "\n".join(lines) + "\n", passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--workers", type=int, default=12, help="concurrent callers, split over both services"
    )
    parser.add_argument(
        "--window", type=float, default=None, help="seconds per report row (default: 20 rows)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    args.window = args.window or max(5.0, round(seconds / 20))
    logs = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    print(f"soak: {args.minutes:g} min, {args.workers} callers; server logs in {logs}", flush=True)
    with (
        Service(FEATURES_DIR, server_env(), log_dir=logs, name="soak-features").start() as features,
        Service(
            SCORING_DIR, server_env(APINODE_ENRICHMENT="bundled"), log_dir=logs, name="soak-golden-scoring"
        ).start() as reference,
    ):
        golden = Golden(sample_ids(500)).fetch_lookups(features.url, API_KEY)
        golden.fetch_predictions(reference.url, API_KEY)
        reference.stop()
        scoring = Service(
            SCORING_DIR, server_env(**remote_env(features.url)), log_dir=logs, name="soak-scoring"
        )
        with scoring.start():
            result = asyncio.run(soak(features, scoring, golden, seconds, args.workers, args.window))
    text, passed = report(result, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"soak: report written to {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
