"""Feast's production online store: Debian's ``redis-server``, started and stopped by the bench.

It listens on 127.0.0.1 only, on a free port, pinned to the servers' core like every system under
test (its CPU counts with Feast's), without persistence on its own: the bench asks for one
``SAVE`` after materializing, so a later run with the same data loads the snapshot at start
instead of materializing again. Stopped by its PID (process group), as every server here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.cores import SERVER_CORE, pinned
from bench.procs import ProcessTree, port_free


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


class RedisSpec:
    """What ``Server`` reports on (name, for the servers table)."""

    def __init__(self, name: str) -> None:
        self.name = name


class RedisServer(ProcessTree):
    """One redis-server process; the same measuring interface as ``bench.procs.Server``."""

    def __init__(self, port: int, folder: Path, log_dir: Path, snapshot: str = "online.rdb",
                 name: str = "redis") -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server not found: bench/run installs it (Debian package redis-server)")
        if not port_free(port):
            raise RuntimeError(f"{name}: port {port} on 127.0.0.1 is taken by another process")
        self.spec, self.port = RedisSpec(name), port
        folder.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        # No automatic saves, no append-only file: the one snapshot is the bench's explicit SAVE.
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
                   "--save", "", "--appendonly", "no", "--dir", str(folder), "--dbfilename", snapshot,
                   "--daemonize", "no", "--loglevel", "warning"]
        started = time.perf_counter()
        self.process = subprocess.Popen(pinned(SERVER_CORE, command), stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.ready_seconds = self._wait_ready(started)

    def command(self, *words: str, timeout: float = 600.0) -> bytes:
        """One command over RESP, its first reply line (enough for PING, SAVE, DBSIZE)."""
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as connection:
            connection.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = connection.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.strip()

    def _wait_ready(self, started: float, timeout: float = 120.0) -> float:
        while time.perf_counter() < started + timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log_path}")
            try:
                # A loading snapshot answers -LOADING until it is in memory.
                if self.command("PING", timeout=1) == b"+PONG":
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server not ready after {timeout:.0f}s; see {self.log_path}")

    def keys(self) -> int:
        reply = self.command("DBSIZE")
        return int(reply[1:]) if reply.startswith(b":") else 0

    def save(self) -> None:
        reply = self.command("SAVE")
        if reply != b"+OK":
            raise RuntimeError(f"redis SAVE answered {reply!r}")

