"""Promotion by digest: a stack that never builds deploys exactly the images another stack built and tested.

The promoting stack (prod) deploys the refs pinned in ``data-mesh:promotedImageRefs`` (the
pipeline writes there what this run's dev update exported; an operator pins an earlier digest to
roll back) and, for any service not pinned, the building stack's ``imageRefs`` output read through
a ``pulumi.StackReference``. Each image is then copied, by digest, into the promoting stack's own ECR repository with
``crane copy``, which keeps the manifest bytes and so the digest; the Deployments reference
``<prod repository>@<the same digest>``. Prod's images then live under prod's rules (immutable
tags, no force delete, its own lifecycle), not dev's: a ``pulumi destroy`` of dev or dev's
lifecycle policy can never delete what prod runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_command as command

from infra.settings import StackSettings

_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")

# Runs during `pulumi up` on the deploy runner (crane and the AWS CLI on PATH, the deploy role's
# credentials in the environment). Idempotent: a target that already holds the digest is left
# alone (ECR refuses a second push under an immutable tag). Prints the target's digest and
# nothing else on stdout; fails if that is not the source's digest.
COPY_SCRIPT = r"""set -euo pipefail
DOCKER_CONFIG="$(mktemp -d)"
export DOCKER_CONFIG
trap 'rm -rf "$DOCKER_CONFIG"' EXIT
for registry in "${TARGET%%/*}" "${SOURCE%%/*}"; do
  case "$registry" in
    *.dkr.ecr.*.amazonaws.com)
      region="$(printf '%s' "$registry" | cut -d. -f4)"
      aws ecr get-login-password --region "$region" \
        | crane auth login "$registry" --username AWS --password-stdin >&2 ;;
  esac
done
if [ "$(crane digest "$TARGET" 2>/dev/null || true)" != "$DIGEST" ]; then
  crane copy "$SOURCE" "$TARGET" >&2
fi
copied="$(crane digest "$TARGET")"
if [ "$copied" != "$DIGEST" ]; then
  echo "copy of $SOURCE to $TARGET has digest $copied, not $DIGEST: not promoting it" >&2
  exit 1
fi
printf '%s' "$copied"
"""


class PromotionError(ValueError):
    """The building stack does not provide a usable image reference for a service."""


def digest_of(ref: str, what: str) -> str:
    """``sha256:<hex>`` of ``<repository>@sha256:<hex>``; ``what`` says where the ref came from."""
    match = _DIGEST.search(ref) if isinstance(ref, str) else None
    if not match:
        raise PromotionError(f"{what}: {ref!r} is not an image reference by digest (<repository>@sha256:<64 hex>)")
    return match.group(1)


def promoted_tag(digest: str) -> str:
    """The tag a promoted image gets in the promoting stack's repository: its digest, so it never moves.

    A tag is still needed: the lifecycle policy expires untagged images after a day.
    """
    return digest.replace(":", "-")


def stack_reference_name(source: str, organization: str, project: str) -> str:
    """``dev`` -> ``<organization>/<project>/dev``; a fully qualified name stays as it is."""
    return source if "/" in source else f"{organization}/{project}/{source}"


def source_ref(outputs: dict[str, Any] | None, service_id: str, source: str, stack: str) -> str:
    """The building stack's ref of one service, or an error that says how to get one."""
    ref = (outputs or {}).get("imageRefs", {}) or {}
    ref = ref.get(service_id) if isinstance(ref, dict) else None
    if ref is None:
        raise PromotionError(
            f"stack '{source}' exports no imageRefs['{service_id}'] (config key 'data-mesh:promotion.fromStack'). "
            f"Fix: pulumi up --stack {source} first, or pin one: pulumi config set --path "
            f"'data-mesh:promotedImageRefs.{service_id}' <repository>@sha256:<digest> --stack {stack}")
    digest_of(ref, f"stack '{source}' output imageRefs['{service_id}']")
    return ref


@dataclass(frozen=True, kw_only=True)
class ImagePromotionArgs:
    """The promoting stack's settings and its own ECR repositories (service id -> URL)."""

    settings: StackSettings
    repository_urls: dict[str, pulumi.Input[str]]


class ImagePromotion(pulumi.ComponentResource):
    """Copies the building stack's images by digest into this stack's repositories; declares no build."""

    image_refs: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ImagePromotionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:ImagePromotion", name, None, opts)
        settings, images = args.settings, args.settings.images
        if images.promote_from is None:
            raise PromotionError("ImagePromotion needs a stack with data-mesh:promotion.fromStack set")
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        source = images.promote_from
        # Only for services not pinned: reading a stack decrypts its whole state (pulumi/pulumi#21436),
        # so a fully pinned run (the pipeline's) never needs the building stack's key.
        reference = None
        if any(service.id not in images.pinned_refs for service in settings.services):
            reference = pulumi.StackReference(
                f"{name}-source", stack_reference_name(source, pulumi.get_organization(), settings.project),
                opts=child)
        self.image_refs = {}
        for service in settings.services:
            sid = service.id
            if sid in images.pinned_refs:
                ref: pulumi.Output[str] = pulumi.Output.from_input(images.pinned_refs[sid])
            else:
                assert reference is not None
                ref = reference.outputs.apply(
                    lambda outputs, sid=sid: source_ref(outputs, sid, source, settings.stack))
            digest = ref.apply(lambda r, sid=sid: digest_of(r, f"image ref of {sid}"))
            target = pulumi.Output.concat(args.repository_urls[sid], ":", digest.apply(promoted_tag))
            copy = command.local.Command(
                f"{name}-{sid}-copy",
                create=COPY_SCRIPT,
                interpreter=["/bin/bash", "-c"],
                environment={"SOURCE": ref, "TARGET": target, "DIGEST": digest},
                # A new digest is a new copy; the same digest again is a no-op.
                triggers=[digest],
                opts=child,
            )
            self.image_refs[sid] = pulumi.Output.all(args.repository_urls[sid], copy.stdout, digest).apply(
                lambda parts: _deployed_ref(*parts))
        self.register_outputs({"image_refs": self.image_refs})


def _deployed_ref(repository_url: str, copied: str, digest: str) -> str:
    if copied.strip() != digest:
        raise PromotionError(f"the copy into {repository_url} reported {copied.strip()!r}, not {digest}")
    return f"{repository_url}@{digest}"
