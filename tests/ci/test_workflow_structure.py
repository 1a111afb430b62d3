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


def test_pull_requests_preview_dev_only_with_the_policy_pack():
    workflow = load("preview.yml")
    assert set(workflow["on"]) == {"pull_request"}
    (job,) = workflow["jobs"].values()
    assert "strategy" not in job
    step = pulumi_step(job)
    assert step["with"]["command"] == "preview"
    assert step["with"]["stack-name"] == "dev"
    assert step["with"]["policyPacks"] == "policy"
    assert step["with"]["comment-on-pr"] is True
    assert job["permissions"]["pull-requests"] == "write"
    assert job["environment"] == "preview-dev"
    assert job["runs-on"] == "ubuntu-24.04"


def test_deploys_run_only_on_pushes_to_main():
    assert load("deploy.yml")["on"] == {"push": {"branches": ["main"]}}


def test_up_goes_to_dev_then_a_prod_preview_then_prod_behind_the_prod_environment():
    jobs = up_jobs()
    assert set(jobs) == {"dev", "prod"}
    (dev_id, dev), (_, prod) = jobs["dev"], jobs["prod"]
    assert prod["environment"] == "prod"
    assert dev["needs"] == "test"
    preview = load("deploy.yml")["jobs"]["preview-prod"]
    assert pulumi_step(preview)["with"]["command"] == "preview"
    assert pulumi_step(preview)["with"]["stack-name"] == "prod"
    assert preview["needs"] == dev_id and preview["environment"] == "prod-preview"
    # The reviewer approving prod has the prod preview of exactly this run in front of them.
    assert sorted(prod["needs"]) == sorted([dev_id, "preview-prod"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_up_uses_the_policy_pack_and_one_non_cancelling_group_per_stack(stack):
    _, job = up_jobs()[stack]
    assert pulumi_step(job)["with"]["policyPacks"] == "policy"
    assert job["concurrency"] == {"group": f"pulumi-{stack}", "cancel-in-progress": False}


@pytest.mark.parametrize("workflow, job_id, job", PULUMI_JOBS, ids=job_ids(PULUMI_JOBS))
def test_credentials_come_from_oidc_and_repository_settings(workflow, job_id, job):
    (aws,) = steps_using(job, "aws-actions/configure-aws-credentials")
    assert set(aws["with"]) == {"role-to-assume", "aws-region", "role-session-name"}
    # The role is the job's environment's variable: each environment names its own role.
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert job.get("environment"), f"{workflow}:{job_id} assumes a role outside an environment"
    assert aws["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
    assert pulumi_step(job)["env"] == {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}
    # The AWS role must be assumed before Pulumi runs.
    assert job["steps"].index(aws) < job["steps"].index(pulumi_step(job))


# --- issue 13: previews that cannot leak prod, build once and promote by digest, pinned inputs ---

UNTRUSTED_TRIGGERS = {"pull_request", "pull_request_target", "issue_comment", "workflow_run",
                      "pull_request_review", "pull_request_review_comment"}
PROD_ENVIRONMENTS = {"prod", "prod-preview"}
ENVIRONMENT_STACK = {"preview-dev": "dev", "dev": "dev", "prod-preview": "prod", "prod": "prod"}


def triggers(workflow: str) -> set[str]:
    on = load(workflow)["on"]
    return {on} if isinstance(on, str) else set(on)


def holds_credentials(job: dict) -> bool:
    text = yaml.safe_dump(job)
    return "secrets." in text or job.get("permissions", {}).get("id-token") == "write"


def test_no_workflow_runs_pull_request_code_with_the_base_repositorys_rights():
    for path in sorted(WORKFLOW_DIR.glob("*.y*ml")):
        assert "pull_request_target" not in triggers(path.name) and "workflow_run" not in triggers(path.name)


@pytest.mark.parametrize("workflow, job_id, job", JOBS, ids=job_ids(JOBS))
def test_no_pull_request_job_runs_on_the_prod_runner_or_reaches_prod(workflow, job_id, job):
    """Issue 13: the prod preview leg ran PR code on PROD_RUNNER (the runner that later runs `up` on prod
    with the cluster-admin role) and handed it the token that reads prod's secrets."""
    if not triggers(workflow) & UNTRUSTED_TRIGGERS:
        return
    assert "PROD_RUNNER" not in str(job.get("runs-on")), f"{workflow}:{job_id} runs PR code on the prod runner"
    assert "prod" not in str(job.get("strategy", "")), f"{workflow}:{job_id} has a prod matrix leg"
    assert job.get("environment") not in PROD_ENVIRONMENTS
    for step in steps_using(job, "pulumi/actions"):
        assert step["with"]["stack-name"] == "dev", f"{workflow}:{job_id} previews {step['with']['stack-name']}"


@pytest.mark.parametrize("workflow, job_id, job", JOBS, ids=job_ids(JOBS))
def test_every_credential_comes_from_an_environment_of_the_jobs_stack(workflow, job_id, job):
    """A repository secret reaches any workflow anyone with push access writes on a branch; an
    environment secret only reaches jobs its protection rules admit (docs/cicd.md)."""
    if not holds_credentials(job):
        return
    environment = job.get("environment")
    assert environment in ENVIRONMENT_STACK, f"{workflow}:{job_id} holds credentials outside an environment"
    for step in steps_using(job, "pulumi/actions"):
        assert step["with"]["stack-name"] == ENVIRONMENT_STACK[environment]
    if environment in PROD_ENVIRONMENTS:
        # Protected environments admit main only: nothing but pushes to main and manual dispatch.
        assert triggers(workflow) <= {"push", "workflow_dispatch"}, workflow
        if "push" in triggers(workflow):
            assert load(workflow)["on"]["push"] == {"branches": ["main"]}


def test_workflow_containers_are_pinned_by_digest():
    images = [(path.name, job_id, image)
              for path in sorted(WORKFLOW_DIR.glob("*.y*ml"))
              for job_id, job in load(path.name)["jobs"].items()
              for image in [(job.get("container") or {}).get("image"),
                            *[(svc or {}).get("image") for svc in (job.get("services") or {}).values()]]
              if image]
    assert images, "the test jobs run in a container"
    for workflow, job_id, image in images:
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}", image), f"{workflow}:{job_id}: {image}"


def pip_installs(job: dict) -> list[str]:
    return [line.strip() for step in job.get("steps", []) for line in str(step.get("run", "")).splitlines()
            if re.search(r"\bpip install\b", line)]


HASHED_FILES = {"requirements.hashes.txt": "requirements.txt",
                "policy/requirements.hashes.txt": "policy/requirements.txt"}


@pytest.mark.parametrize("workflow, job_id, job", JOBS, ids=job_ids(JOBS))
def test_credentialed_jobs_install_only_hash_pinned_requirements(workflow, job_id, job):
    if not holds_credentials(job):
        return
    installs = pip_installs(job)
    assert installs, f"{workflow}:{job_id} installs the program somehow"
    for line in installs:
        assert "--require-hashes" in line and "--no-deps" in line, line
        (requirement_file,) = re.findall(r"-r\s+(\S+)", line)
        assert requirement_file in HASHED_FILES, line


def requirement_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip requirements file with continuation lines."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.strip().startswith("--hash") else line.strip()
        if not line:
            continue
        assert not line.startswith("-") and "://" not in line, f"{path.name}: {line!r} (no options, no URLs)"
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"{path.name}: {line!r} is not an == pin with sha256 hashes"
        hashes = re.findall(r"sha256:[0-9a-f]{64}", match.group(3))
        entries[match.group(1).lower().replace("_", "-")] = (match.group(2), hashes)
    return entries


@pytest.mark.parametrize("hashed, source", sorted(HASHED_FILES.items()))
def test_hashed_requirements_pin_everything_with_hashes_and_agree_with_the_pins(hashed, source):
    entries = requirement_entries(ROOT / hashed)
    assert all(hashes for _, hashes in entries.values()), "every package needs its hashes"
    for line in (ROOT / source).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            key = name.lower().replace("_", "-")
            assert entries.get(key, (None,))[0] == version, f"{hashed}: {name} is not {version}; run " \
                                                             "scripts/hash-requirements"


def test_the_pipeline_deploys_to_prod_exactly_the_digests_its_dev_update_exported():
    """prod's update and preview get this run's dev imageRefs pinned into prod's config (the action's
    config-map: pulumi/actions src/main.ts sets each stack output as a step output and applies
    config-map with setAllConfig), not whatever dev holds when a reviewer approves."""
    import json

    from infra.mocks import run_stack

    jobs = load("deploy.yml")["jobs"]
    up_dev = jobs["up-dev"]
    assert pulumi_step(up_dev)["id"] == "up"
    assert up_dev["outputs"] == {"image-refs": "${{ steps.up.outputs.imageRefs }}"}
    dev_refs = {"customer-features": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/data-mesh-dev/customer-features"
                                     "@sha256:" + "1" * 64,
                "customer-scoring": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/data-mesh-dev/customer-scoring"
                                    "@sha256:" + "2" * 64}
    for job_id in ("preview-prod", "up-prod"):
        template = pulumi_step(jobs[job_id])["with"]["config-map"]
        # What GitHub substitutes: toJSON() of the job output, itself the JSON text of the stack output.
        rendered = template.replace("${{ toJSON(needs.up-dev.outputs.image-refs) }}",
                                    json.dumps(json.dumps(dev_refs)))
        config = yaml.safe_load(rendered)
        assert set(config) == {"data-mesh:promotedImageRefs"}
        assert config["data-mesh:promotedImageRefs"]["secret"] is False
        run = run_stack("prod", overrides={"data-mesh:promotedImageRefs": config["data-mesh:promotedImageRefs"]
                                           ["value"]}, stack_outputs={})
        assert {sid: ref.split("@")[1] for sid, ref in run.outputs["imageRefs"].items()} == \
            {sid: ref.split("@")[1] for sid, ref in dev_refs.items()}, job_id


def test_prod_update_installs_a_pinned_crane_before_pulumi_runs():
    for workflow, job_id in (("deploy.yml", "up-prod"), ("rollback.yml", "rollback-prod")):
        steps = load(workflow)["jobs"][job_id]["steps"]
        (install,) = [s for s in steps if "crane" in str(s.get("run", ""))]
        assert re.search(r"go install github\.com/google/go-containerregistry/cmd/crane@v\d+\.\d+\.\d+\b",
                         install["run"])
        assert steps.index(install) < steps.index(pulumi_step({"steps": steps}))


def test_rollback_is_a_reviewed_manual_update_of_prod_with_pinned_digests():
    workflow = load("rollback.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "prod"
    assert job["concurrency"] == {"group": "pulumi-prod", "cancel-in-progress": False}
    step = pulumi_step(job)
    assert step["with"]["command"] == "up" and step["with"]["stack-name"] == "prod"
    assert "toJSON(inputs.image-refs)" in step["with"]["config-map"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_stack_encrypts_its_secrets_with_its_own_kms_key(stack):
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    region = document["config"]["aws:region"]
    assert document["secretsprovider"] == f"awskms://alias/data-mesh-{stack}-secrets?region={region}"
