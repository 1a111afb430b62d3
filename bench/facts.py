"""Facts a run records besides the load figures: the runtime's own /metrics, the code, the machine."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import urllib.request
from pathlib import Path

_BUCKET = re.compile(r'^apinode_request_duration_seconds_bucket\{(?P<labels>[^}]*)\} (?P<count>[0-9.e+]+)$')


def _metrics_text(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        return answer.read().decode()


def server_histogram(base: str, endpoint: str) -> dict[str, float]:
    """The runtime's own request-duration histogram for one endpoint: upper bound -> cumulative count
    (summed over its other labels, e.g. the model generation that answered)."""
    buckets: dict[str, float] = {}
    for line in _metrics_text(base).splitlines():
        match = _BUCKET.match(line)
        if match and f'endpoint="{endpoint}"' in match["labels"]:
            bound = re.search(r'le="([^"]+)"', match["labels"]).group(1)
            buckets[bound] = buckets.get(bound, 0.0) + float(match["count"])
    return buckets


def request_count(base: str) -> float:
    """Every API request the server answered so far (its apinode_requests_total, all labels)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in _metrics_text(base).splitlines()
               if line.startswith("apinode_requests_total{"))


def histogram_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Share of this run's requests the server itself handled within 0.5 ms and 1 ms (handler to answer)."""
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    if total <= 0:
        return {}
    return {f"within_{bound}s": round((after.get(bound, 0.0) - before.get(bound, 0.0)) / total, 4)
            for bound in ("0.0005", "0.001")}


def revisions(root: Path) -> dict:
    """Which code was measured: the checkout's commit and the runtime's last commit (and local edits)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "runtime_commit": git("log", "-1", "--format=%h %s", "--", "services/apinode"),
            "runtime_edited": bool(git("status", "--porcelain", "--", "services/apinode"))}


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split(" [")[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1), "kernel": platform.release(),
            "python": platform.python_version(), "wrk": wrk.strip()}
