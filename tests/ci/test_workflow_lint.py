"""Every GitHub workflow passes the workflow JSON schema and zizmor's security audits (auditor persona), offline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
ZIZMOR = Path(sys.executable).with_name("zizmor")
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"

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

# What issue 13 found: a container by tag, a secret handed to a job outside any environment.
BAD_CREDENTIALS = """\
name: bad
on: push
permissions: {}
jobs:
  up:
    runs-on: ubuntu-24.04
    permissions: {}
    container:
      image: python:3.11-bookworm
    steps:
      - run: make deploy
        env:
          PULUMI_ACCESS_TOKEN: ${{ secrets.PULUMI_ACCESS_TOKEN }}
"""


def check_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120)


def zizmor(path: Path) -> tuple[list[dict], subprocess.CompletedProcess]:
    if not ZIZMOR.exists():
        pytest.fail(f"zizmor is not installed next to {sys.executable}: pip install -r tests/requirements.txt")
    # Offline: no token, no network; only the audits that read the files themselves. The auditor
    # persona reports everything, false positives included; the ignores (each with its reason)
    # are in .github/zizmor.yml, never inline.
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN")}
    result = subprocess.run([str(ZIZMOR), "--offline", "--persona", "auditor", "--config", str(ZIZMOR_CONFIG),
                             "--format", "json", str(path)],
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


def test_no_finding_is_ignored_inline():
    for workflow in WORKFLOWS:
        assert "zizmor: ignore" not in workflow.read_text(), f"{workflow.name}: move the ignore to .github/zizmor.yml"


def test_every_ignore_in_the_zizmor_config_carries_its_reason():
    import yaml

    config = yaml.safe_load(ZIZMOR_CONFIG.read_text())
    assert set(config) <= {"rules"}
    lines = ZIZMOR_CONFIG.read_text().splitlines()
    for audit, rule in (config.get("rules") or {}).items():
        for entry in rule.get("ignore", []):
            (line,) = [text for text in lines if text.strip().startswith(f"- {entry}")]
            reason = line.partition("#")[2].strip()
            assert len(reason) > 10, f"{audit}: ignore of {entry} without a reason"


def test_the_linters_catch_a_bad_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    schema = check_schema(bad)
    assert schema.returncode != 0 and "timeout" in schema.stdout
    findings, _ = zizmor(bad)
    assert {"unpinned-uses", "template-injection", "excessive-permissions"} <= {f["ident"] for f in findings}


def test_the_auditor_persona_catches_an_unpinned_container_and_secrets_outside_an_environment(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_CREDENTIALS)
    findings, _ = zizmor(bad)
    assert {"unpinned-images", "secrets-outside-env"} <= {f["ident"] for f in findings}, describe(findings)
