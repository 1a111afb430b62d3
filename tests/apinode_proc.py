"""Start, signal and stop real ``python -m apinode serve`` processes on 127.0.0.1 for the tests.

Every process is started by us and stopped by its PID only. Its output goes to a log file so a
failing test can show what the server said.
"""

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

REPO = Path(__file__).resolve().parents[1]
FEATURES_DIR = REPO / "services" / "customer-features"
SCORING_DIR = REPO / "services" / "customer-scoring"
API_KEY = "test-key"


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    With ``taken``, also one not handed out before (the kernel may offer a just-closed port
    again); the port is added to it.
    """
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def server_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any APINODE_* setting, with the test key, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APINODE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "services" / "apinode")])
    env["APINODE_API_KEYS"] = API_KEY
    env.update(extra)
    return env


class ApiNodeProcess:
    """One ``python -m apinode serve`` process that we own."""

    def __init__(
        self,
        service_dir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        name: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.service_dir = Path(service_dir)
        self.env = env or server_env()
        self.port = port or free_port()
        self.name = name or self.service_dir.name
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix="apinode-logs-"))
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self, wait_ready: bool = True, timeout: float = 90.0) -> ApiNodeProcess:
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
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()  # never leave a half-started server behind
                raise
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go; SIGCONT first in case a test froze it."""
        if not self.running():
            return
        self.signal(signal.SIGCONT)
        self.terminate()
        if self.wait_exit(20) is None:
            self.signal(signal.SIGKILL)
            self.wait_exit(10)

    def output(self) -> str:
        """Everything the server has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def log(self) -> str:
        """The end of the server's output (the whole of it for a short-lived server)."""
        return self.output()[-6000:]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def __enter__(self) -> ApiNodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
