"""``make run``: customer-features on :8081, customer-scoring on :8080 enriching through it, on 127.0.0.1.

Keys come from APINODE_API_KEYS (``local-dev-key`` when unset). Ctrl-C stops both cleanly; on Linux
they also stop when the launcher itself is killed (SIGKILL included).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def _get(port: int, path: str, body: dict | None = None, key: str = "") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            token = base64.b64encode(f"{key}:".encode()).decode()
            connection.request(
                "POST",
                path,
                json.dumps(body),
                {"Content-Type": "application/json", "Authorization": f"Basic {token}"},
            )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait_ready(name: str, process: subprocess.Popen, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with code {process.returncode} (is port {port} free?)")
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} not ready on port {port} after {timeout:g}s")


def _require_free(port: int) -> None:
    """Fail before starting anything: otherwise the readiness check could reach someone else's server."""
    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise SystemExit(f"port {port} on {HOST} is already in use (another `make run`?); stop it or "
                             f"choose other ports: python -m apinode.local --scoring-port N --features-port M")


def _die_with_launcher(launcher: int):
    """A function for the child to run before it starts the service: on Linux, the kernel sends it
    SIGTERM when the launcher dies, even of a SIGKILL that leaves no chance to stop it (prctl(2),
    PR_SET_PDEATHSIG). Without it, the services outlive a killed ``make run`` and hold its ports."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != launcher:  # the launcher died before the line above: nothing will tell us
            os._exit(1)

    return arm


def _start(service: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apinode",
            "serve",
            str(SERVICES / service),
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        env=env,
        # Its own process group: Ctrl-C reaches only this launcher, which then stops each service
        # with exactly one SIGTERM. A second signal (the terminal's SIGINT, then ours) makes uvicorn
        # force its exit and cancel the lifespan mid-shutdown, which printed two tracebacks.
        process_group=0,
        preexec_fn=_die_with_launcher(os.getpid()),
    )


def _stop(processes: list[subprocess.Popen], grace: float = 25.0) -> int:
    # Stopping is bounded by ``grace``: a second Ctrl-C must not interrupt it halfway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    worst = 0
    for process in processes:
        try:
            code = process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        worst = worst or (code if code not in (0, -signal.SIGINT, -signal.SIGTERM) else 0)
    return worst


def _interrupt(signum, frame) -> None:
    # SIGTERM (e.g. from a process manager) stops both services like Ctrl-C does.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apinode.local", description=__doc__)
    parser.add_argument("--scoring-port", type=int, default=8080)
    parser.add_argument("--features-port", type=int, default=8081)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("APINODE_API_KEYS", "local-dev-key")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVICES / "apinode"), env.get("PYTHONPATH")]))
    key = env["APINODE_API_KEYS"].split(",")[0].strip()
    processes: list[subprocess.Popen] = []
    # Ctrl-C stops both even when the parent started us with SIGINT ignored (a shell's background
    # job, some CI runners): an ignored signal is inherited, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)  # the terminal closed: the services must not outlive us
    try:
        for port in (args.features_port, args.scoring_port):
            _require_free(port)
        processes.append(_start("customer-features", args.features_port, env))
        _wait_ready("customer-features", processes[0], args.features_port)
        scoring_env = {
            **env,
            "APINODE_ENRICHMENT": "remote",
            "APINODE_FEATURES_URL": f"http://{HOST}:{args.features_port}",
            "APINODE_FEATURES_API_KEY": key,
        }
        processes.append(_start("customer-scoring", args.scoring_port, scoring_env))
        _wait_ready("customer-scoring", processes[1], args.scoring_port)
        path = "/public/api/v1/customer-scoring/high-spender/predict"
        body = {"features": {"customer_id": "C0000001"}}
        status, answer = _get(args.scoring_port, path, body, key)
        curl = " ".join(
            [
                "curl -s",
                "-u",
                shlex.quote(f"{key}:"),
                "-H",
                shlex.quote("Content-Type: application/json"),
                "-d",
                shlex.quote(json.dumps(body)),
                f"http://{HOST}:{args.scoring_port}{path}",
            ]
        )
        print(
            f"\ncustomer-features  http://{HOST}:{args.features_port}  "
            "(lookups: demographics, behavior, profile)\n"
            f"customer-scoring   http://{HOST}:{args.scoring_port}  (high-spender, enriching through "
            f"customer-features)\n\nTry:\n  {curl}\n\n(HTTP {status}) {answer.decode(errors='replace')}\n\n"
            f"Docs (try it with the key {key!r} as the username, blank password):\n"
            f"  http://{HOST}:{args.features_port}/public/api/v1/customer-features/docs\n"
            f"  http://{HOST}:{args.scoring_port}/public/api/v1/customer-scoring/docs\n\n"
            "Ctrl-C stops both.",
            flush=True,
        )
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        print("a service stopped unexpectedly; stopping the other", file=sys.stderr)
        _stop(processes)
        return 1
    except KeyboardInterrupt:
        code = _stop(processes)
        print("stopped.", flush=True)
        return code
    except SystemExit as failure:
        _stop(processes)
        print(f"apinode.local: {failure}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
