"""The pipeline does what the docs promise: who runs what, when, with which rights."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*\s*$")


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def all_jobs() -> list[tuple[str, str, dict]]:
    return [(path.name, job_id, job) for path in sorted(WORKFLOW_DIR.glob("*.y*ml"))
            for job_id, job in load(path.name)["jobs"].items()]


def steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job.get("steps", []) if s.get("uses", "").split("@")[0] == action]


def pulumi_step(job: dict) -> dict:
    (step,) = steps_using(job, "pulumi/actions")
    return step


def up_jobs() -> dict[str, tuple[str, dict]]:
    """Stack name -> (job id, job) of the deploy job that runs `pulumi up` on it."""
    jobs = load("deploy.yml")["jobs"]
    return {pulumi_step(job)["with"]["stack-name"]: (job_id, job) for job_id, job in jobs.items()
            if steps_using(job, "pulumi/actions") and pulumi_step(job)["with"]["command"] == "up"}


JOBS = all_jobs()
PULUMI_JOBS = [entry for entry in JOBS if steps_using(entry[2], "pulumi/actions")]


def job_ids(entries: list) -> list[str]:
    return [f"{workflow}:{job_id}" for workflow, job_id, _ in entries]


@pytest.mark.parametrize("workflow", sorted(p.name for p in WORKFLOW_DIR.glob("*.y*ml")))
def test_workflow_grants_nothing_by_default(workflow):
    assert load(workflow)["permissions"] == {}


@pytest.mark.parametrize("workflow, job_id, job", JOBS, ids=job_ids(JOBS))
def test_every_job_states_its_permissions(workflow, job_id, job):
    assert "permissions" in job, f"{workflow}:{job_id} has no explicit permissions"
    assert job["permissions"].get("contents") in ("read", None)
    # Only jobs that assume an AWS role may mint an OIDC token.
    assumes_role = bool(steps_using(job, "aws-actions/configure-aws-credentials"))
    assert (job["permissions"].get("id-token") == "write") == assumes_role


def test_every_action_is_pinned_by_commit_with_its_version():
    for path in sorted(WORKFLOW_DIR.glob("*.y*ml")):
        for line in path.read_text().splitlines():
            if re.match(r"^\s*(-\s+)?uses:", line):
                assert PINNED.match(line), f"{path.name}: {line.strip()}"


def test_tests_run_on_every_pull_request_and_push():
    triggers = load("test.yml")["on"]
    assert "pull_request" in triggers and "push" in triggers
    # main is not skipped silently: deploy.yml tests it before deploying.
    assert triggers["push"] == {"branches-ignore": ["main"]}
    assert load("deploy.yml")["jobs"]["test"] == load("test.yml")["jobs"]["test"]
    assert load("test.yml")["jobs"]["test"]["steps"][-1]["run"] == "make test"


def test_preview_runs_on_pull_requests_per_stack_with_the_policy_pack():
    workflow = load("preview.yml")
    assert set(workflow["on"]) == {"pull_request"}
    job = workflow["jobs"]["preview"]
    assert [entry["stack"] for entry in job["strategy"]["matrix"]["include"]] == ["dev", "prod"]
    step = pulumi_step(job)
    assert step["with"]["command"] == "preview"
    assert step["with"]["stack-name"] == "${{ matrix.stack }}"
    assert step["with"]["policyPacks"] == "policy"
    assert step["with"]["comment-on-pr"] is True
    assert job["permissions"]["pull-requests"] == "write"


def test_deploys_run_only_on_pushes_to_main():
    assert load("deploy.yml")["on"] == {"push": {"branches": ["main"]}}


def test_up_goes_to_dev_then_prod_behind_the_prod_environment():
    jobs = up_jobs()
    assert set(jobs) == {"dev", "prod"}
    (dev_id, dev), (_, prod) = jobs["dev"], jobs["prod"]
    assert prod["environment"] == "prod"
    assert prod["needs"] == dev_id
    assert dev["needs"] == "test"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_up_uses_the_policy_pack_and_one_non_cancelling_group_per_stack(stack):
    _, job = up_jobs()[stack]
    assert pulumi_step(job)["with"]["policyPacks"] == "policy"
    assert job["concurrency"] == {"group": f"pulumi-{stack}", "cancel-in-progress": False}


@pytest.mark.parametrize("workflow, job_id, job", PULUMI_JOBS, ids=job_ids(PULUMI_JOBS))
def test_credentials_come_from_oidc_and_repository_settings(workflow, job_id, job):
    (aws,) = steps_using(job, "aws-actions/configure-aws-credentials")
    assert set(aws["with"]) == {"role-to-assume", "aws-region", "role-session-name"}
    assert re.fullmatch(r"\$\{\{ vars\.AWS_\w*ROLE_ARN \}\}", aws["with"]["role-to-assume"])
    assert aws["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
    assert pulumi_step(job)["env"] == {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}
    # The AWS role must be assumed before Pulumi runs.
    assert job["steps"].index(aws) < job["steps"].index(pulumi_step(job))
