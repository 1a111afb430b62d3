"""``python -m apinode.local`` (make run): both services up, a curl command that works, Ctrl-C stops both."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.apinode_proc import REPO, free_port, server_env


def test_make_run_launcher_prints_a_working_curl_and_stops_on_ctrl_c():
    scoring, features = free_port(), free_port()
    env = server_env()
    del env["APINODE_API_KEYS"]  # the launcher's default key must apply
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apinode.local",
            "--scoring-port",
            str(scoring),
            "--features-port",
            str(features),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # its own process group: the test's Ctrl-C reaches only it and its children
    output = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C stops both" in line:
                break
        text = "".join(output)
        curl = next((line.strip() for line in output if line.strip().startswith("curl ")), None)
        assert curl is not None, text
        assert "local-dev-key:" in curl and f"127.0.0.1:{scoring}" in curl
        if shutil.which("curl"):
            answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=10).stdout
        else:
            print("curl is not installed: replaying the printed request with httpx")
            args = shlex.split(curl)
            answer = httpx.post(
                args[-1],
                content=args[args.index("-d") + 1],
                auth=("local-dev-key", ""),
                headers={"content-type": "application/json"},
            ).text
        assert '"prediction"' in answer and '"probas"' in answer, answer
        # Keep reading what the launcher and its services print while they stop: a pipe nobody
        # reads fills up (64 KiB) and blocks the writer, which then never exits.
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(launcher.stdout.readline, "")), daemon=True)
        reader.start()
        os.killpg(launcher.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        try:
            code = launcher.wait(timeout=60)  # the launcher gives each service up to 25 s
        except subprocess.TimeoutExpired:
            raise AssertionError("the launcher did not stop within 60 s of Ctrl-C; it printed:\n"
                                 + "".join(chunks)[-4000:]) from None
        reader.join(10)
        rest = "".join(chunks)
        assert code == 0, rest
        # Ctrl-C used to print two "Exception in 'lifespan' protocol ... CancelledError" tracebacks.
        assert "Traceback" not in rest and "CancelledError" not in rest, rest
        assert "stopped." in rest, rest
        for port in (scoring, features):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def test_make_run_refuses_a_port_already_in_use_before_starting_anything():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "apinode.local", "--scoring-port", str(busy),
             "--features-port", str(free_port())],
            env=server_env(), cwd=REPO, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"port {busy} on 127.0.0.1 is already in use" in result.stderr
    assert "Uvicorn running" not in result.stdout + result.stderr, "nothing may start on a busy port"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's (prctl(2))")
def test_services_stop_when_the_launcher_is_killed_outright():
    """SIGKILL (the OOM killer, `kill -9`, a CI runner's timeout) gives the launcher no chance to stop
    its services: they must not outlive it holding its ports, or the next `make run` finds them
    busy. The kernel tells each of them (prctl(2), PR_SET_PDEATHSIG); they stop on that SIGTERM."""
    scoring, features = free_port(), free_port()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "apinode.local", "--scoring-port", str(scoring), "--features-port", str(features)],
        env=server_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line or "Ctrl-C stops both" in line:
                break
        with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children") as listing:
            children = [int(pid) for pid in listing.read().split()]
        assert len(children) == 2, children
        threading.Thread(target=lambda: [None for _ in launcher.stdout], daemon=True).start()  # keep the pipe read
        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 30
        alive = children
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in children if _running(pid)]
            time.sleep(0.1)
        assert not alive, f"services {alive} outlived their SIGKILLed launcher"
        for port in (scoring, features):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    finally:
        for pid in [launcher.pid, *children]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a service is its own launcher's child: once that is
    gone, init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
