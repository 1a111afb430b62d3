"""Image settings: a stack either builds its images from a digest-pinned base or promotes another stack's.

Called from ``infra/config.py`` with its key reader, so errors name the key and the fix the same way.
"""

from __future__ import annotations

import re
from typing import Any

from infra.settings import ImageSettings

IMAGE_KEYS = {"baseImage", "promotion", "promotedImageRefs"}
BASE_IMAGE_EXAMPLE = "python:3.11.15-slim-bookworm@sha256:<64 hex digits>"
PROMOTION_EXAMPLE = "'{\"fromStack\": \"dev\"}'"
REF_EXAMPLE = "<account>.dkr.ecr.<region>.amazonaws.com/data-mesh-dev/<service>@sha256:<64 hex digits>"
# <image>[:tag]@sha256:<digest>: the tag is documentation, the digest is what gets pulled.
_BASE_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
# <registry host>[:port]/<repository>@sha256:<digest>, as a stack's imageRefs output holds them.
_IMAGE_REF = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?(/[a-z0-9][a-z0-9._-]*)+@sha256:[0-9a-f]{64}$")
# A stack name, optionally qualified as <organization>/<project>/<stack>.
_STACK_NAME = re.compile(r"^(?:[\w.-]+/[\w.-]+/)?[\w.-]+$")


def image_settings(top: Any, stack: str, service_ids: tuple[str, ...]) -> ImageSettings:
    """Parse baseImage (building stacks), promotion and promotedImageRefs (promoting stacks)."""
    if top.has("promotion"):
        return _promoting(top, stack, service_ids)
    if top.has("promotedImageRefs"):
        raise top.remove("promotedImageRefs", "only applies to a stack that promotes its images "
                         "(data-mesh:promotion.fromStack); this stack builds them")
    base = top.string("baseImage", BASE_IMAGE_EXAMPLE)
    if not _BASE_IMAGE.match(base):
        raise top.fail("baseImage", f"'{base}' is not pinned by digest (<image>:<tag>@sha256:<64 hex>); a tag "
                       "moves, and a rebuild would then give another image under the same image tag",
                       BASE_IMAGE_EXAMPLE)
    return ImageSettings(base_image=base, promote_from=None)


def _promoting(top: Any, stack: str, service_ids: tuple[str, ...]) -> ImageSettings:
    promotion = top.child("promotion", PROMOTION_EXAMPLE)
    promotion.only({"fromStack"})
    source = promotion.string("fromStack", "dev")
    if not _STACK_NAME.match(source):
        raise promotion.fail("fromStack", f"'{source}' is not a stack name (dev, or <org>/<project>/<stack>)",
                             "dev")
    if source.rsplit("/", 1)[-1] == stack:
        raise promotion.fail("fromStack", f"stack '{stack}' cannot promote images from itself", "dev")
    if top.has("baseImage"):
        raise top.remove("baseImage", f"this stack promotes the images of '{source}' and never builds; "
                         "the base image is a setting of the stack that builds")
    pins: dict[str, str] = {}
    if top.has("promotedImageRefs"):
        refs = top.child("promotedImageRefs", f"'{{\"customer-scoring\": \"{REF_EXAMPLE}\"}}'")
        refs.only(set(service_ids))
        for service_id in service_ids:
            if refs.has(service_id):
                ref = refs.string(service_id, REF_EXAMPLE)
                if not _IMAGE_REF.match(ref):
                    raise refs.fail(service_id, f"'{ref}' is not an image reference by digest "
                                    "(<registry>/<repository>@sha256:<64 hex>)", REF_EXAMPLE)
                pins[service_id] = ref
    return ImageSettings(base_image=None, promote_from=source, pinned_refs=pins)
