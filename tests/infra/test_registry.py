"""ECR repositories per service: scanning, encryption, tag mutability, deletion and lifecycle per stack."""

from __future__ import annotations

import json

from infra.config import SERVICE_IDS
from infra.mocks import StackRun

REPOSITORY = "aws:ecr/repository:Repository"
EXPECTED = {"dev": {"mutability": "MUTABLE", "force_delete": True, "keep": 10},
            "prod": {"mutability": "IMMUTABLE", "force_delete": False, "keep": 30}}


def test_one_repository_per_service_named_by_project_and_stack(stack_run: StackRun) -> None:
    names = sorted(r.inputs["name"] for r in stack_run.of_type(REPOSITORY))
    assert names == [f"data-mesh-{stack_run.stack}/{sid}" for sid in sorted(SERVICE_IDS)]


def test_repositories_scan_on_push_and_are_kms_encrypted(stack_run: StackRun) -> None:
    for repository in stack_run.of_type(REPOSITORY):
        assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repository.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS"}]


def test_tag_mutability_and_force_delete_follow_the_stack(stack_run: StackRun) -> None:
    expected = EXPECTED[stack_run.stack]
    for repository in stack_run.of_type(REPOSITORY):
        assert repository.inputs["imageTagMutability"] == expected["mutability"]
        assert repository.inputs["forceDelete"] is expected["force_delete"]


def test_lifecycle_keeps_the_configured_number_and_expires_untagged(stack_run: StackRun) -> None:
    policies = stack_run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert sorted(p.inputs["repository"] for p in policies) == sorted(
        r.inputs["name"] for r in stack_run.of_type(REPOSITORY))
    for policy in policies:
        rules = {rule["selection"]["tagStatus"]: rule for rule in json.loads(policy.inputs["policy"])["rules"]}
        assert rules["untagged"]["selection"]["countType"] == "sinceImagePushed"
        assert rules["any"]["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan",
                                             "countNumber": EXPECTED[stack_run.stack]["keep"]}
        # ECR requires the catch-all rule to have the lowest priority (highest number)
        assert rules["any"]["rulePriority"] > rules["untagged"]["rulePriority"]
