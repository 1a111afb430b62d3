"""Load generation with wrk (one thread, pinned to core 0): POST bodies with a varying customer id."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

from bench.cores import LOAD_CORE, pinned

# {id} in the body template becomes a customer id; ids are drawn from a fixed-seed PRNG per thread.
_LUA = r"""
local template = [==[%(body)s]==]
local customers = %(customers)d
local path = "%(path)s"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
local left, right = template:match("^(.-){id}(.*)$")
math.randomseed(%(seed)d)
request = function()
  if left == nil then
    return wrk.format(nil, path, nil, template)
  end
  local id = string.format("C%%07d", math.random(1, customers))
  return wrk.format(nil, path, nil, left .. id .. right)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,' ..
    '"max_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclasses.dataclass(frozen=True)
class Target:
    """One HTTP POST workload: where, what body (``{id}`` is replaced), which headers."""

    url: str  # http://127.0.0.1:PORT/path
    body: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def base(self) -> str:
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @property
    def path(self) -> str:
        return "/" + self.url.split("://", 1)[1].split("/", 1)[1]


@dataclasses.dataclass(frozen=True)
class Result:
    """What one bounded run at one concurrency measured."""

    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _script(target: Target, customers: int, seed: int) -> str:
    headers = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in target.headers)
    return _LUA % {"body": target.body, "customers": customers, "path": target.path,
                   "headers": headers, "seed": seed}


def run_wrk(target: Target, concurrency: int, seconds: float, customers: int, workdir: Path,
            seed: int = 42) -> Result:
    """wrk -t1 -cN for a bounded time; the lua done() hook prints the figures as JSON."""
    if not target.url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load only goes to 127.0.0.1, not {target.url}")
    script = workdir / "wrk.lua"
    script.write_text(_script(target, customers, seed))
    command = pinned(LOAD_CORE, ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s",
               "--timeout", "5s", "-s", str(script), target.base])
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")
    raw = json.loads(lines[-1][len("BENCH "):])
    non_2xx = _non_2xx(completed.stdout)
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + max(raw["status"], non_2xx)
    duration = raw["duration_us"] / 1e6
    return Result(concurrency, raw["requests"], round(duration, 2), round(raw["requests"] / duration, 1),
                  raw["p50_us"] / 1000, raw["p90_us"] / 1000, raw["p99_us"] / 1000, errors)


def _non_2xx(stdout: str) -> int:
    for line in stdout.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            return int(line.rsplit(":", 1)[1])
    return 0
