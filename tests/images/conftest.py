"""Session fixtures for the image tests: a private Docker engine, the offline base image and
wheelhouse, and both service images built for real."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest
from image_harness import (
    REPO,
    SERVICES,
    BuiltImage,
    CommandFailed,
    Docker,
    build_dependencies,
    build_image,
    fill_wheels_in_context,
    run,
)

from infra.image import stage_context

SCRIPTS = REPO / "scripts"
# What the tests pass as OCI label build arguments, and assert back from the images.
LABEL_ARGS = {"VERSION": "1.4.2-test", "SOURCE": "https://example.invalid/mesh.git"}

_built: dict[str, BuiltImage] = {}


@pytest.fixture(scope="session")
def docker():
    """The private engine, shared by every test session on the machine that wants it.

    A session holds a shared lock on the engine while it runs. The engine is started by whichever
    session finds it stopped, and stopped (by its PID) by the last session to leave, unless a person
    started it by hand (scripts/dockerd start), in which case it is left running."""
    dockerd = str(SCRIPTS / "dockerd")
    host = run([dockerd, "host"]).strip()
    run_dir = Path(host.removeprefix("unix://")).parent
    run_dir.mkdir(parents=True, exist_ok=True)
    started_by_tests = run_dir / "started-by-tests"
    with open(run_dir / "test-sessions.lock", "a") as sessions:
        fcntl.flock(sessions, fcntl.LOCK_SH)
        with open(run_dir / "start.lock", "a") as starting:
            fcntl.flock(starting, fcntl.LOCK_EX)
            if subprocess.run([dockerd, "status"], capture_output=True, check=False).returncode != 0:
                try:
                    run([dockerd, "start"], timeout=120)
                except CommandFailed as error:
                    pytest.fail(
                        f"cannot start the private Docker engine (did scripts/system-deps run?):\n{error}"
                    )
                started_by_tests.touch()
        engine = Docker(host)
        yield engine
        try:
            fcntl.flock(sessions, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session still builds or runs containers here: it cleans up
        # Only dangling layers: tagged images and the base stay for the next run's build cache.
        engine.attempt("image", "prune", "--force")
        if started_by_tests.exists():
            run([dockerd, "stop"], timeout=120)
            started_by_tests.unlink()


@pytest.fixture(scope="session")
def base_image(docker: Docker) -> str:
    """The debootstrap-made stand-in for python:3.11-slim-bookworm (cached after the first run)."""
    return run([str(SCRIPTS / "base-image")], env=docker.env, timeout=900).strip()


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The runtime's wheels for the image's Python, downloaded once per requirements hash."""
    return Path(run([str(SCRIPTS / "wheelhouse")], timeout=600).strip())


@pytest.fixture(scope="session")
def images(docker: Docker, base_image: str, wheelhouse: Path) -> dict[str, BuiltImage]:
    """Both service images, each built offline from the staged context the Pulumi program builds from."""
    fill_wheels_in_context(wheelhouse)
    revision = run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).strip()
    build_dependencies(docker, base_image)
    for service in SERVICES:
        context = REPO / stage_context(service)
        fill_wheels_in_context(wheelhouse, context)
        _built[service] = build_image(docker, service, base_image, {**LABEL_ARGS, "REVISION": revision},
                                      context=context)
    return dict(_built)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what the images measured, so every CI log carries the numbers."""
    if not _built:
        return
    terminalreporter.section("service images")
    for image in _built.values():
        terminalreporter.write_line(
            f"{image.service}: own layers {image.own_layers_bytes / 2**20:.1f} MiB above {image.base_ref}, "
            f"built in {image.build_seconds:.1f} s"
        )
