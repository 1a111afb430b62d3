"""Helpers for the image tests: the Docker CLI bound to the private engine, builds and containers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("customer-features", "customer-scoring")
DOCKERFILE = REPO / "images" / "Dockerfile"
WHEELS_IN_CONTEXT = REPO / "images" / "wheels"
# Where images/Dockerfile puts the service folder and the runtime with its dependencies.
IMAGE_APP_DIR = "/opt/apinode"
IMAGE_SERVICE_DIR = f"{IMAGE_APP_DIR}/service"
NON_ROOT = "10001:10001"
# docker run flags matching the Deployment's pod: host network (the server binds 127.0.0.1),
# numeric non-root user, read-only root with a tmpfs /tmp, no capabilities, no privilege gain.
POD_LIKE = (
    "--network=host",
    f"--user={NON_ROOT}",
    "--read-only",
    "--tmpfs=/tmp",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
MIB = 1024 * 1024


class CommandFailed(AssertionError):
    """A docker or helper-script command exited non-zero; carries its output for the report."""


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a command, return its stdout; raise with stdout and stderr when it fails."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}"
            f"\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class Docker:
    """The docker client talking to one engine, with the classic builder (no buildx on these machines)."""

    host: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def __call__(self, *args: str, timeout: float = 900) -> str:
        return run(["docker", *args], env=self.env, timeout=timeout)

    def attempt(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run docker and hand back the outcome, success or not (cleanup, expected failures)."""
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def inspect(self, ref: str) -> dict:
        return json.loads(self("inspect", ref))[0]


@dataclass(frozen=True)
class BuiltImage:
    """One service image as the tests built it, with what went in and what it measured."""

    service: str
    ref: str
    base_ref: str
    build_args: dict[str, str]
    build_seconds: float
    own_layers_bytes: int


@dataclass
class Container:
    """A service container started the way Kubernetes will run it."""

    name: str
    id: str
    port: int
    api_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_container(
    docker: Docker,
    image_ref: str,
    name: str,
    port: int,
    env: dict[str, str],
    api_key: str,
    mounts: tuple[str, ...] = (),
) -> Container:
    """A container run the way the Deployment runs the pod (POD_LIKE), on 127.0.0.1:port.
    mounts are docker --volume specifications (read-only Secret files, say)."""
    argv = ["run", "--detach", *POD_LIKE]
    for variable, value in {"APINODE_HOST": "127.0.0.1", "APINODE_PORT": str(port), **env}.items():
        argv += ["--env", f"{variable}={value}"]
    for mount in mounts:
        argv += ["--volume", mount]
    return Container(name, docker(*argv, image_ref).strip(), port, api_key)


def fill_wheels_in_context(wheelhouse: Path, context: Path = REPO) -> None:
    """Make <context>/images/wheels/ hold exactly the cached wheelhouse, where the Dockerfile picks it up.
    Only differences are touched, so a concurrent test session's build context stays intact."""
    wheels_dir = context / WHEELS_IN_CONTEXT.relative_to(REPO)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wanted = {wheel.name: wheel for wheel in wheelhouse.glob("*.whl")}
    for present in wheels_dir.glob("*.whl"):
        if present.name not in wanted:
            present.unlink()
    for name, wheel in wanted.items():
        target = wheels_dir / name
        if target.exists():
            continue
        try:
            os.link(wheel, target)
        except OSError:  # the cache may be on another filesystem than the checkout
            target.write_bytes(wheel.read_bytes())


def build(docker: Docker, ref: str, args: dict[str, str], *extra: str, context: Path = REPO) -> float:
    """Build offline (no network in the build, wheels only from the context); return the seconds taken.
    --force-rm: a failed step leaves no container behind in the engine."""
    dockerfile = context / DOCKERFILE.relative_to(REPO)
    argv = ["build", "--network", "none", "--force-rm", "--file", str(dockerfile), "--tag", ref, *extra]
    for name, value in args.items():
        argv += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    docker(*argv, str(context), timeout=1200)
    return time.monotonic() - started


def build_dependencies(docker: Docker, base_ref: str) -> None:
    """The dependency stage alone, tagged so that pruning dangling images keeps it as build cache."""
    build(
        docker,
        "mesh/apinode-dependencies:test",
        {"BASE_IMAGE": base_ref, "PIP_NO_INDEX": "1"},
        "--target",
        "dependencies",
    )


def build_image(docker: Docker, service: str | None, base_ref: str, build_args: dict[str, str],
                context: Path = REPO) -> BuiltImage:
    """One service image from ``context``; service=None leaves out the SERVICE build argument."""
    ref = f"mesh/{service or 'no-service'}:test"
    args = {"BASE_IMAGE": base_ref, "PIP_NO_INDEX": "1", **build_args}
    if service is not None:
        args["SERVICE"] = service
    seconds = build(docker, ref, args, context=context)
    own = docker.inspect(ref)["Size"] - docker.inspect(base_ref)["Size"]
    return BuiltImage(service or "", ref, base_ref, args, seconds, own)


def wait_ready(docker: Docker, container: Container, deadline_s: float = 120) -> None:
    """Poll /readyz until 200; fail with the container's logs if it exits or never gets ready."""
    last = "no answer"
    end = time.monotonic() + deadline_s
    with httpx.Client(trust_env=False, timeout=5) as client:
        while time.monotonic() < end:
            state = docker.inspect(container.id)["State"]
            if not state["Running"]:
                raise AssertionError(
                    f"{container.name} exited with {state['ExitCode']} before it was ready:\n"
                    + logs(docker, container)
                )
            try:
                answer = client.get(f"{container.url}/readyz")
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.TransportError as error:
                last = repr(error)
            time.sleep(0.5)
    raise AssertionError(
        f"{container.name} not ready after {deadline_s} s (last: {last}):\n" + logs(docker, container)
    )


def logs(docker: Docker, container: Container) -> str:
    done = docker.attempt("logs", "--tail", "60", container.id)
    return done.stdout + done.stderr
