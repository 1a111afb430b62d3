"""bench/results.md and the latency-vs-throughput plot, from the figures of one run."""

from __future__ import annotations

import math
from pathlib import Path

from bench.goals import _point, _ratio, goals
from bench.goals import fmt_ratio as _fmt_ratio

# (workload, our system, peer, bare) compared in the tables.
COMPARISONS = {
    "lookup": ("ours", "feast", "bare"),
    "score": ("ours-bundled", "feast+mlflow", "bare"),
    "multi": ("ours", "mlflow", None),
    "explain": (None, None, None),
}
TITLES = {
    "lookup": "1. Lookup one customer's demographics by id",
    "score": "2. Score a customer from its id only",
    "multi": "3. predict-multi, 100 rows with all features",
    "explain": "4. Score with explanations (bundled enrichment, one customer per request)",
}
PEER_NAMES = {"feast": "Feast serve (sqlite)", "feast+mlflow": "Feast → MLflow chain", "mlflow": "MLflow serve",
              "bare": "bare reference", "ours": "ours", "ours-bundled": "ours, bundled enrichment",
              "ours-2hop": "ours, via customer-features (2 hops, a core each)",
              "ours-2hop-one-core": "ours, via customer-features (2 hops, both on core 1)",
              "feast-redis": "Feast serve (Redis)",
              "feast-redis+mlflow": "Feast (Redis) → MLflow chain",
              "ours-querylog": "ours, query records to a file",
              "ours-bundled-querylog": "ours, bundled, query records to a file",
              "ours-querylog-off": "ours, query records off (measured in turns with the records-on row)",
              "ours-bundled-querylog-off": "ours, bundled, query records off (measured in turns with the records-on row)",
              "ice": "ICE explanation (11 features × 100 background rows, each distinct value run once)",
              "shapley-25": "SHAPLEY explanation, 25 Monte-Carlo steps"}


def _explain_table(results: dict) -> list[str]:
    lines = ["| explanation | conc. | req/s | p50 ms | p90 ms | p99 ms | errors | req per server CPU-s | core share | "
             "CPU of a plain predict (×) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for system, points in results["workloads"].get("explain", {}).items():
        for point in points:
            plain = _point(results, "score", "ours-bundled", point["concurrency"])
            lines.append(f"| {PEER_NAMES.get(system, system)} | {point['concurrency']} | {point['rps']:,.0f} | "
                         f"{point['p50_ms']:.3f} | {point['p90_ms']:.3f} | {point['p99_ms']:.3f} | {point['errors']} | "
                         f"{point['requests_per_cpu_s']:,.0f} | {point.get('core_share', math.nan):.2f} | "
                         f"{_fmt_ratio(_ratio(plain, point, 'requests_per_cpu_s'))} |")
    return [*lines, "", "The plain predict is *ours, bundled enrichment* of table 2 at the same concurrency. "
            "Explanations run in a worker thread (the event loop keeps answering); their CPU is counted."]


def _workload_table(results: dict, workload: str) -> list[str]:
    if workload == "explain":
        return _explain_table(results)
    _, peer, bare = COMPARISONS[workload]
    lines = [("| system | conc. | req/s | p50 ms | p90 ms | p99 ms | errors | req per server CPU-s | core share | "
              f"vs {PEER_NAMES[peer]} (per CPU-s) | vs bare (per CPU-s) |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for system, points in results["workloads"].get(workload, {}).items():
        for point in points:
            c = point["concurrency"]
            per_cpu = "requests_per_cpu_s"
            versus_peer = _ratio(point, _point(results, workload, peer, c), per_cpu) if system != peer else math.nan
            versus_bare = (_ratio(point, _point(results, workload, bare, c), per_cpu)
                           if bare and system != bare else math.nan)
            lines.append(f"| {PEER_NAMES.get(system, system)} | {c} | {point['rps']:,.0f} | {point['p50_ms']:.3f} | "
                         f"{point['p90_ms']:.3f} | {point['p99_ms']:.3f} | {point['errors']} | "
                         f"{point['requests_per_cpu_s']:,.0f} | {point.get('core_share', math.nan):.2f} | "
                         f"{_fmt_ratio(versus_peer)} | {_fmt_ratio(versus_bare)} |")
    return lines


def _load_lines(results: dict) -> list[str]:
    """How busy the machine was (other jobs): load averages around the run and per measured point."""
    load = results.get("loadavg")
    if not load:
        return []
    points = [point["loadavg"] for systems in results["workloads"].values() for points in systems.values()
              for point in points if "loadavg" in point]
    spread = f"; over the measured points {min(points):.1f}–{max(points):.1f}" if points else ""
    return [f"- machine load (1-minute load average, 2 cores): {load['start']:.1f} at the start, "
            f"{load['end']:.1f} at the end{spread}. Above about 2, other jobs shared the cores: req/s and "
            "tail latencies suffer, per CPU-second figures much less."]


def _servers_table(results: dict) -> list[str]:
    lines = ["| server | ready after start | RSS at start | RSS after load |", "|---|---:|---:|---:|"]
    for name, facts in results.get("servers", {}).items():
        start = facts.get("rss_mib_start")
        lines.append(f"| {name} | {facts.get('ready_s', math.nan):.2f} s | "
                     f"{f'{start} MiB' if start else '–'} | {facts.get('rss_mib_load', '–')} MiB |")
    return lines


def _profile_lines(results: dict) -> list[str]:
    lines = []
    for name, figures in results.get("profiles", {}).items():
        lines += [f"**{name}** ({figures['samples']} samples at c=8, {figures['rps_while_profiled']:,.0f} req/s "
                  "while profiled):", "", "| where the time is spent (self) | % | on the request path (inclusive) | % |",
                  "|---|---:|---|---:|"]
        own, inclusive = figures["self"], figures["inclusive"]
        for index in range(max(len(own), len(inclusive))):
            left = own[index] if index < len(own) else ("", "")
            right = inclusive[index] if index < len(inclusive) else ("", "")
            lines.append(f"| `{left[0]}` | {left[1]} | `{right[0]}` | {right[1]} |")
        lines.append("")
    return lines


MICRO_LABELS = {
    "served_lookup_us": "served path, one lookup: raw HTTP request to the runtime's protocol and app, answer written "
                        "(inline, as `apinode serve` answers it; no socket)",
    "served_bare_lookup_us": "served path, one lookup of the bare reference (uvicorn's protocol and its ASGI cycle)",
    "served_score_us": "served path, one score by id (bundled enrichment)",
    "served_bare_score_us": "served path, one score by id of the bare reference",
    "app_lookup_us": "runtime app, one lookup (auth, validation, index, row, JSON, metrics)",
    "bare_lookup_us": "bare reference, one lookup",
    "app_score_us": "runtime app, one score by id (bundled enrichment, preprocessing, model)",
    "bare_score_us": "bare reference, one score by id",
    "index_rows_us": "index: key to row position",
    "table_row_us": "table: row position to a dict of 9 columns",
    "enrich_complete_us": "enrichment of one row (2 lookups, 2 date transforms)",
    "model_predict_us": "the model, one row (feed building + onnxruntime)",
    "bare_session_run_us": "bare reference's whole score() (feed + onnxruntime)",
    "orjson_dumps_lookup_us": "orjson.dumps of a lookup answer",
    "json_dumps_lookup_us": "json.dumps of the same (stdlib)",
    "orjson_loads_request_us": "orjson.loads of a request",
    "json_loads_request_us": "json.loads of the same (stdlib)",
    "metrics_observe_us": "metrics of one request, the runtime's own counters (apinode/localmetrics.py)",
    "prometheus_observe_us": "the same with prometheus_client's Counter + Histogram (a lock per update; before)",
    "deadline_stamps_us": "read deadlines of one request: stamped, swept periodically (apinode/protocol.py)",
    "deadline_timers_us": "the same as two uvloop timers, armed and cancelled (before)",
    "trace_hop_us": "trace context of one two-hop score: parse, hand on, parse again (both sides)",
}


def _micro_lines(micro: dict) -> list[str]:
    lines = ["## In-process cost of one request (no network, best of 7 repeats)", "",
             "`bench/micro.py`: first the served path without the socket (a raw request handed to the server "
             "protocol, the answer written to memory), then the ASGI apps called directly with an in-memory request "
             "(what the app costs, without the HTTP server; the runtime's served requests skip ASGI), then the pieces.",
             "", "| what | µs per call |", "|---|---:|"]
    lines += [f"| {label} | {micro[key]:.2f} |" for key, label in MICRO_LABELS.items() if key in micro]
    return [*lines, ""]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [name for name in TITLES if name in results["workloads"]]
    if not workloads:
        return
    figure, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.8), squeeze=False)
    for axis, workload in zip(axes[0], workloads):
        for system, points in results["workloads"][workload].items():
            xs = [point["rps"] for point in points]
            line, = axis.plot(xs, [point["p50_ms"] for point in points], marker="o", label=f"{PEER_NAMES.get(system, system)} p50")
            axis.plot(xs, [point["p99_ms"] for point in points], marker="x", linestyle="--", color=line.get_color(),
                      label=f"{PEER_NAMES.get(system, system)} p99")
            for point in points:
                axis.annotate(f"c{point['concurrency']}", (point["rps"], point["p50_ms"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
        axis.set(xscale="log", yscale="log", xlabel="throughput (req/s)", ylabel="latency (ms)",
                 title=TITLES[workload].split(". ", 1)[1])
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"Latency against throughput, server on one core ({results.get('date', '')})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict, path: Path, png: Path, readme: Path | None = None) -> None:
    """results.md and the plot; with ``readme``, its performance table from the same figures."""
    plot(results, png)
    if readme is not None:
        from bench import readme as readme_table

        readme_table.update(readme, results)
    machine = results.get("machine", {})
    verdict = {True: "holds", False: "**missed**", None: "not measured"}
    lines = [
        "# Benchmark: our services vs Feast and MLflow serving",
        "",
        "Regenerated by `make bench` (`bench/run`); every figure below comes from the same run on the same machine.",
        "",
        f"- date: {results.get('date')}; wall time of the run: {results.get('wall_s')} s; "
        f"{results.get('seconds_per_point')} s per measured run after a 1 s warm-up, best of "
        f"{results.get('repeats', 1)} runs per point (highest req/s); the goals that compare two setups (query "
        "records on against off, ours against the bare reference) are judged on the two run side by side, both "
        "loaded at once in short bursts (`bench/side.py`), by the median of the bursts' per-CPU-second ratios "
        f"(the machine's speed drifts by up to a quarter within the minute); {results.get('turns', 1)} runs of the "
        "two started in turns, seconds apart, and the sweeps minutes apart are shown beside; an explanation "
        "against a plain predict is judged side by side too; the p99 goals at c=1 (\"on a quiet run\") by the "
        "quietest of short bursts and the ready times by the best of several starts, each burst and start shown "
        "(`bench/repeat.py`)",
        f"- code: checkout {results.get('commit')}; runtime at `{results.get('runtime_commit')}`"
        f"{' with uncommitted edits' if results.get('runtime_edited') else ''}",
        f"- machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, "
        f"Linux {machine.get('kernel')}, Python {machine.get('python')}, {machine.get('wrk')}",
        "- servers pinned to core 1 (`taskset -c 1`), load generator and harness on core 0. A system of two servers "
        "(scoring calling customer-features, or the chain client calling Feast then MLflow) runs as two pods on two "
        "nodes would: the server the load calls on core 1, the other on core 0 beside the load (`bench/cores.py`); "
        "the row *both on core 1* keeps the earlier layout for comparison (Redis stays on core 1);"
        f" servers and load at nice {results.get('nice', '0')} (every system alike); all traffic to 127.0.0.1. wrk with one thread for HTTP workloads (random customer ids out of "
        "100k); the Feast→MLflow chain is driven by a small asyncio client (`bench/chain.py`) that calls Feast, "
        "turns birthdate/signup_date into age/tenure, then calls MLflow.",
        "- *req per server CPU-s* = requests served / CPU seconds used by the server processes during the run "
        "(Feast + MLflow for the chain, both services for two hops): on a dedicated core it equals req/s once the "
        "server is saturated (c=8, 32), and unlike req/s it does not move when other jobs share the machine. "
        "*core share* = those CPU seconds / wall seconds: below about 0.9 at c=8 means other jobs took part of "
        "the core. Throughput goals are judged per CPU-second; the req/s ratio is shown beside it.",
        f"- peer model: the flow's own sklearn pipeline fitted on the same rows and split; largest gap to the ONNX "
        f"model's probability over 2,000 customers: {results.get('peer_model_max_abs_diff', math.nan):.1e}",
        *_load_lines(results),
        "",
        "## Goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        *[f"| {goal} | {measured} | {verdict[holds]} |" if not measured.startswith("not measured:")
          else f"| {goal} | – | {measured} |" for goal, measured, holds in goals(results)],
        "",
        f"![latency against throughput]({png.name})",
        "",
    ]
    for workload, title in TITLES.items():
        if workload in results["workloads"]:
            lines += [f"## {title}", "", *_workload_table(results, workload), ""]
    lines += ["## Start-up and memory", "", *_servers_table(results), ""]
    if results.get("bundle_1m"):
        big = results["bundle_1m"]
        lines += ["## 1M-customer bundle (customer-features)", "",
                  "| bundle | ready after start | RSS when ready |", "|---|---:|---:|",
                  f"| 100k | {big['100k']['ready_s']:.2f} s | {big['100k']['rss_mib']} MiB |",
                  f"| 1M | {big['1m']['ready_s']:.2f} s | {big['1m']['rss_mib']} MiB |", "",
                  f"The 1M bundle adds {big['added_mib']} MiB.", ""]
    size = results.get("size", {})
    if size:
        lines += ["## Installed size", "",
                  "The whole dependency closure of each side, as installed in its venv (site-packages bytes, "
                  "bytecode included). The image estimate above leaves out what images/Dockerfile prunes "
                  f"(dependencies alone: {size.get('image_dependencies_mib', math.nan)} MiB).", "",
                  "| side | MiB | largest |", "|---|---:|---|"]
        for side, label in (("ours", "runtime (services/apinode/requirements.txt)"), ("peers", "feast + mlflow + scikit-learn")):
            largest = ", ".join(f"{name} {size_bytes / 2**20:.0f}" for name, size_bytes in size[side]["largest"])
            lines.append(f"| {label} | {size[side]['mib']} | {largest} |")
        lines.append("")
    if results.get("ablation"):
        lines += ["## Server stack choices: what each bought (bare reference, c=8)", "",
                  "One piece swapped at a time; the ratio is per server CPU-second against the chosen stack.", "",
                  "| variant | lookup req/s | lookup req per CPU-s | ratio | score req/s | score req per CPU-s | ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        base = results["ablation"][0]
        for variant in results["ablation"]:
            cells = []
            for workload in ("lookup", "score"):
                figures = variant[workload]
                cells += [f"{figures['rps']:,.0f}", f"{figures['requests_per_cpu_s']:,.0f}",
                          _fmt_ratio(_ratio(figures, base[workload], "requests_per_cpu_s"))]
            lines.append(f"| {variant['variant']} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.get("micro"):
        lines += _micro_lines(results["micro"])
    if results.get("profiles"):
        lines += ["## Profiles of the runtime under load (py-spy)", "",
                  "Share of the samples taken while the server was busy. `Runner.run` as *self* is the event loop's "
                  "own C code (uvloop: socket reads and writes, scheduling); `OneWrite.write` and `_write_now` (the runtime's answers), "
                  "`RequestResponseCycle.send` and `StreamWriter.write` as *self* are mostly the send system call, and with two services on one "
                  "core also the other service running meanwhile. The entry frames common to every stack are left "
                  "out of the inclusive column.", "", *_profile_lines(results)]
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in results["notes"]], ""]
    optimizations = path.with_name("optimizations.md")
    if optimizations.exists():
        lines += [optimizations.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    # Rewrite bench/results.md from the figures of the last run (bench/out/results.json), e.g. after
    # editing bench/optimizations.md, without measuring again.
    import json
    import sys

    here = Path(__file__).resolve().parent
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "out" / "results.json"
    write(json.loads(source.read_text()), here / "results.md", here / "latency-throughput.png",
          here.parent / "README.md")
