"""Sampling profiles of a server under load (py-spy), boiled down to the functions that cost the most."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

from bench.cores import LOAD_CORE, pinned

_ENTRY_FRAMES = (":<module>", ":main", ":serve", ":Server.run", ":asyncio_run", ":Runner.run")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: float, output: Path) -> subprocess.Popen | None:
    """py-spy record in raw (collapsed stack) form, on the load core."""
    binary = py_spy()
    if binary is None:
        return None
    # At the load's priority: a py-spy starved by wrk on the same core takes few samples.
    command = pinned(LOAD_CORE, [binary, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                 "--rate", "250", "--format", "raw", "--output", str(output), "--nonblocking"])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame_name(frame: str) -> str:
    """``handle (apinode/handlers.py:42)`` -> ``apinode/handlers.py:handle``, shortened to the package path."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "services/apinode/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


def summarize(raw: Path, top: int = 12) -> dict:
    """Self and inclusive shares of the samples, per function, from a py-spy raw file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";") if frame.strip()]
        frames = [frame for frame in frames if not frame.startswith("process ") and not frame.startswith(":")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    share = lambda counter: [(name, round(100 * count / total, 1)) for name, count in counter.most_common(top)]
    # Frames on every stack (the entry point, the event loop) say nothing; keep the request path.
    interesting = collections.Counter({name: count for name, count in inclusive.items()
                                       if not name.endswith(_ENTRY_FRAMES) and ("apinode/" in name or "uvicorn/" in name or "onnxruntime" in name
                                       or "orjson" in name or "httpx" in name or "httpcore" in name)})
    return {"samples": total, "self": share(own), "inclusive": share(interesting)}
