"""Every GitHub workflow passes the workflow JSON schema and zizmor's security audits, offline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
ZIZMOR = Path(sys.executable).with_name("zizmor")

# A workflow with the mistakes the linters exist for: a schema error, an unpinned action,
# a template injection from a pull request title, no permissions block.
BAD_WORKFLOW = """\
name: bad
on: pull_request
jobs:
  build:
    runs-on: ubuntu-24.04
    timeout: 10
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


def check_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120)


def zizmor(path: Path) -> tuple[list[dict], subprocess.CompletedProcess]:
    if not ZIZMOR.exists():
        pytest.fail(f"zizmor is not installed next to {sys.executable}: pip install -r tests/requirements.txt")
    # Offline: no token, no network; only the audits that read the files themselves.
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN")}
    result = subprocess.run([str(ZIZMOR), "--offline", "--no-ignores", "--format", "json", str(path)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=path.parent)
    try:
        findings = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"zizmor printed no JSON (exit {result.returncode}): {result.stderr}")
    return findings, result


def describe(findings: list[dict]) -> str:
    return "\n".join(f"{f['ident']} ({f['determinations']['severity']}): {f['desc']} at "
                     f"{f['locations'][0]['concrete']['feature']!r}" for f in findings)


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} >= {"test.yml", "preview.yml", "deploy.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(workflow):
    result = check_schema(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_finds_nothing(workflow):
    findings, result = zizmor(workflow)
    assert findings == [], describe(findings)
    assert result.returncode == 0, result.stderr


def test_the_linters_catch_a_bad_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    schema = check_schema(bad)
    assert schema.returncode != 0 and "timeout" in schema.stdout
    findings, _ = zizmor(bad)
    assert {"unpinned-uses", "template-injection", "excessive-permissions"} <= {f["ident"] for f in findings}
