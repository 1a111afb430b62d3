"""Start and stop real ``python -m apinode serve`` processes on 127.0.0.1 for the tests (by PID only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The parent's environment without APINODE_* settings, with the test key, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APINODE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "services" / "apinode")])
    env["APINODE_API_KEYS"] = API_KEY
    env.update(extra)
    return env


class ApiNodeProcess:
    """One server process we own; its output goes to a log file shown when something fails."""

    def __init__(self, service_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.service_dir = Path(service_dir)
        self.env = env or server_env()
        self.port = port or free_port()
        self.log_path = Path(tempfile.mkdtemp(prefix="apinode-test-")) / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ApiNodeProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "apinode",
                    "serve",
                    str(self.service_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        if self.wait_exit(20) is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.wait_exit(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> ApiNodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
