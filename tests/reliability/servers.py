"""Start, signal and stop real API node processes on 127.0.0.1 (shared by the tests and the soak).

Every process is started by us and stopped by its PID only. Its output goes to a log file so
a failing test can show what the server said.
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
import yaml

from tests.reliability.loadgen import rss_kib

REPO = Path(__file__).resolve().parents[2]
FEATURES_DIR = REPO / "services" / "customer-features"
SCORING_DIR = REPO / "services" / "customer-scoring"
API_KEY = "reliability-key"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any APINODE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APINODE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "services" / "apinode")])
    env["APINODE_API_KEYS"] = API_KEY
    env.update(extra)
    return env


def remote_env(features_url: str) -> dict[str, str]:
    """Environment that makes customer-scoring enrich through the given customer-features URL.

    The variable names come from customer-scoring's own service.yaml (``remotes.*.url_env`` and
    ``api_key_env``), so the test follows the definition rather than guessing them.
    """
    raw = yaml.safe_load((SCORING_DIR / "service.yaml").read_text())
    env = {"APINODE_ENRICHMENT": "remote"}
    for name, remote in (raw.get("remotes") or {}).items():
        assert remote.get("url_env"), (
            f"customer-scoring remotes.{name} has no url_env to point it at a test port"
        )
        env[remote["url_env"]] = features_url
        if remote.get("api_key_env"):
            env[remote["api_key_env"]] = API_KEY
    assert len(env) > 1, "customer-scoring/service.yaml declares no remote to enrich through"
    return env


class Service:
    """One ``python -m apinode serve`` process that we own."""

    def __init__(
        self,
        service_dir: Path,
        env: dict[str, str],
        port: int | None = None,
        name: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.service_dir = Path(service_dir)
        self.env = env
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

    def start(self, ready_timeout: float = 90.0) -> Service:
        log = open(self.log_path, "ab")
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
        log.close()
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

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
        self.signal(signal.SIGTERM)
        if self.wait_exit(15) is None:
            self.signal(signal.SIGKILL)
            self.wait_exit(10)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
