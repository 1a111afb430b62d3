"""ECR: one repository per service, scanned on push, encrypted, with a lifecycle that bounds its size."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings

UNTAGGED_DAYS = 1


def lifecycle_policy(keep_images: int) -> str:
    """Expire untagged layers after a day; keep the newest ``keep_images`` images (rollback depth)."""
    return json.dumps({"rules": [
        {"rulePriority": 1, "description": "drop untagged images after a day",
         "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                       "countNumber": UNTAGGED_DAYS},
         "action": {"type": "expire"}},
        {"rulePriority": 2, "description": f"keep the newest {keep_images} images",
         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
         "action": {"type": "expire"}},
    ]}, sort_keys=True)


def repository_name(settings: StackSettings, service_id: str) -> str:
    return f"{settings.name}/{service_id}"


@dataclass(frozen=True, kw_only=True)
class RegistryArgs:
    """The stack settings (service ids, tag mutability, deletion, lifecycle)."""

    settings: StackSettings


class Registry(pulumi.ComponentResource):
    """One ECR repository per service, so each is versioned and rolled back on its own."""

    repository_urls: pulumi.Output[dict[str, str]]
    registry_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Registry", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        registry = settings.registry
        urls: dict[str, pulumi.Output[str]] = {}
        self.registry_ids = {}
        for service in settings.services:
            repository = aws.ecr.Repository(
                f"{name}-{service.id}",
                name=repository_name(settings, service.id),
                image_tag_mutability="IMMUTABLE" if registry.immutable_tags else "MUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")],
                force_delete=registry.force_delete,
                tags={**settings.tags, "service": service.id},
                # prod: `pulumi destroy` or a replacement must not take the images (and rollbacks) with it.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=settings.protect)),
            )
            aws.ecr.LifecyclePolicy(f"{name}-{service.id}", repository=repository.name,
                                    policy=lifecycle_policy(registry.keep_images), opts=child)
            urls[service.id] = repository.repository_url
            self.registry_ids[service.id] = repository.registry_id
        self.repository_urls = pulumi.Output.all(**urls)
        self.register_outputs({"repository_urls": self.repository_urls})
