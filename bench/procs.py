"""Servers under test: started pinned to core 1, timed to ready, measured (RSS, CPU), stopped by PID."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.cores import SERVER_CORE, pinned


def port_free(port: int) -> bool:
    """Nobody listens on it (TIME_WAIT leftovers of our own earlier server do not count, as for uvicorn)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now, from the kernel's ephemeral range."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """How to start one server and how to tell it is ready."""

    name: str
    command: list[str]
    ready_url: str  # GET, 200 when ready; http://127.0.0.1:PORT/...
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout: float = 120.0
    core: str = SERVER_CORE  # bench/cores.py

    def on(self, core: str, name: str | None = None) -> "ServerSpec":
        """The same server pinned to another core (under another name, to keep its figures apart)."""
        return dataclasses.replace(self, core=core, name=name or self.name)


class ProcessTree:
    """A process we started in its own group (``self.process``, ``self._log``), measured as a tree.

    psutil is imported on use: the peers' venv has it (bench/requirements-peers.txt), the test venv
    that imports these modules for the smoke tests need not."""

    process: subprocess.Popen

    def _tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _each(self, read) -> list:
        """``read(process)`` for every live process of the tree (one may exit meanwhile)."""
        import psutil

        values = []
        for process in self._tree():
            try:
                values.append(read(process))
            except psutil.NoSuchProcess:
                pass
        return values

    def pids(self) -> list[int]:
        return [process.pid for process in self._tree()]

    def rss_mib(self) -> float:
        """Resident memory of the whole tree (a gunicorn master and its worker count together)."""
        return sum(self._each(lambda process: process.memory_info().rss)) / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole tree so far."""
        return sum(self._each(lambda process: sum(process.cpu_times()[:2])))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group we started, SIGKILL after ``grace`` seconds."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Server(ProcessTree):
    """A running server process tree; ``ready_seconds`` is from spawn to the first 200."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        if not port_free(self.port):
            raise RuntimeError(f"{spec.name}: port {self.port} on 127.0.0.1 is taken by another process")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.name}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, **spec.env}
        started = time.perf_counter()
        self.process = subprocess.Popen(pinned(spec.core, spec.command), env=env, cwd=spec.cwd,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.ready_seconds = self._wait_ready(started)
        except BaseException:  # not ready, or the wait itself failed: leave no server behind
            self.stop()
            raise

    @property
    def port(self) -> int:
        return int(self.spec.ready_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def _listening(self) -> bool:
        """True when our own process tree holds the listening socket (not some other server)."""
        import psutil

        for process in self._tree():
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in process.net_connections()):
                    return True
            except psutil.Error:
                pass
        return False

    def _wait_ready(self, started: float) -> float:
        deadline = started + self.spec.ready_timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.spec.ready_url, timeout=1) as answer:
                    if answer.status == 200 and self._listening():
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.spec.name} not ready after {self.spec.ready_timeout:.0f}s; see {self.log_path}")


class Servers:
    """Context manager for a set of servers started in order and stopped in reverse."""

    def __init__(self, specs: list[ServerSpec], log_dir: Path) -> None:
        self.specs, self.log_dir = specs, log_dir
        self.running: list[Server] = []

    def __enter__(self) -> list[Server]:
        try:
            for spec in self.specs:
                self.running.append(Server(spec, self.log_dir))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.running

    def __exit__(self, *exc) -> None:
        for server in reversed(self.running):
            server.stop()
