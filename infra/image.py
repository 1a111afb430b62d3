"""One service's image: built from the shared Dockerfile, tagged by version and content, pushed to ECR."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "images/Dockerfile"
# Per-service build contexts, relative to the project directory (gitignored).
CONTEXTS = "build/image-contexts"
PLATFORM = "linux/amd64"
_SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def build_inputs(service_id: str, root: Path = ROOT) -> list[Path]:
    """Every file that ends up in the service's image: the Dockerfile, the runtime, the service itself."""
    files = [root / DOCKERFILE]
    for folder in (root / "services" / "apinode", root / "services" / service_id):
        files.extend(sorted(
            path for path in folder.rglob("*")
            if path.is_file() and not _SKIPPED_PARTS.intersection(path.parts)
            and path.suffix not in _SKIPPED_SUFFIXES
        ))
    return files


def content_hash(service_id: str, root: Path = ROOT) -> str:
    """SHA-256 over the service's build inputs (relative paths and bytes; a missing file counts as such).

    It only changes when something inside the image changes, so an untouched service keeps its
    tag and digest: Pulumi neither rebuilds nor redeploys it.
    """
    digest = hashlib.sha256()
    for path in build_inputs(service_id, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


def stage_context(service_id: str, root: Path = ROOT) -> str:
    """Copy exactly the service's build inputs into a build context of its own; returns its relative path.

    The Docker provider rebuilds an image whenever its build context changes. With the repository
    root as context, a change to one service would rebuild (and, in prod, fail to re-push under its
    immutable tag) the other one too; a context holding only the service's own inputs cannot.
    """
    relative = f"{CONTEXTS}/{service_id}"
    target = root / relative
    shutil.rmtree(target, ignore_errors=True)
    for path in build_inputs(service_id, root):
        if path.exists():
            destination = target / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    # The Dockerfile copies a wheelhouse for offline builds; real builds install from the index.
    (target / "images" / "wheels").mkdir(parents=True, exist_ok=True)
    return relative


def image_tag(version: str, service_id: str, root: Path = ROOT) -> str:
    """``<version>-<12 hex of the content hash>``: readable, and new whenever the content changes."""
    return f"{version}-{content_hash(service_id, root)[:12]}"


@dataclass(frozen=True, kw_only=True)
class ServiceImageArgs:
    """Which service, at which version, into which ECR repository."""

    service_id: str
    version: str
    repository_url: pulumi.Input[str]
    registry_id: pulumi.Input[str] | None = None
    source: str | None = None  # repository URL for the OCI source label


class ServiceImage(pulumi.ComponentResource):
    """Builds ``images/Dockerfile`` for one service and pushes it; ``repo_digest`` is what gets deployed."""

    image_name: pulumi.Output[str]
    repo_digest: pulumi.Output[str]

    def __init__(self, name: str, args: ServiceImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:ServiceImage", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        revision = content_hash(args.service_id)
        context = stage_context(args.service_id)
        tag = f"{args.version}-{revision[:12]}"
        token = aws.ecr.get_authorization_token_output(
            registry_id=args.registry_id, opts=pulumi.InvokeOutputOptions(parent=self))
        image = docker.Image(
            f"{name}-image",
            image_name=pulumi.Output.concat(args.repository_url, ":", tag),
            # Paths relative to the project directory (where Pulumi runs the program), so the
            # resource's inputs are the same on every machine.
            build=docker.DockerBuildArgs(
                context=context,
                dockerfile=f"{context}/{DOCKERFILE}",
                platform=PLATFORM,
                args={"SERVICE": args.service_id, "VERSION": args.version, "REVISION": revision,
                      **({"SOURCE": args.source} if args.source else {})},
            ),
            registry=docker.RegistryArgs(
                server=token.proxy_endpoint,
                username=token.user_name,
                password=pulumi.Output.secret(token.password),
            ),
            skip_push=False,
            opts=child,
        )
        self.image_name = image.image_name
        self.repo_digest = image.repo_digest
        self.register_outputs({"image_name": self.image_name, "repo_digest": self.repo_digest})
