"""One service's image: built from the shared Dockerfile, tagged by everything that goes into it, pushed to ECR."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

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


def normalised_mode(path: Path) -> int:
    """0755 for a file anyone may execute, else 0644: what a checkout's umask (022 or 002) must not change."""
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def _go_mode_string(mode: int) -> str:
    """Go's ``fs.FileMode.String()`` of a regular file (``-rw-r--r--``), as pulumi-docker hashes it."""
    bits = "".join(char if mode & (1 << (8 - index)) else "-" for index, char in enumerate("rwxrwxrwx"))
    return "-" + bits


def _accumulate(entries: Iterable[tuple[str, int, bytes]]) -> str:
    """pulumi-docker's ``contextHashAccumulator``: per file its slash path, mode string, SHA-256 of the
    bytes and a NUL byte, all hashed once more (provider/provider.go, ``hashPath`` and ``hexSumContext``)."""
    accumulated = hashlib.sha256()
    for relative, mode, data in entries:
        accumulated.update(relative.encode() + _go_mode_string(mode).encode()
                           + hashlib.sha256(data).digest() + b"\0")
    return accumulated.hexdigest()


def _walk(folder: Path, base: Path) -> Iterable[tuple[str, int, bytes]]:
    # fsutil.Walk visits each directory's entries in lexical order, files and folders interleaved.
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk(entry, base)
        elif entry.is_file():
            yield entry.relative_to(base).as_posix(), entry.stat().st_mode & 0o7777, entry.read_bytes()


def context_digest(context: Path, dockerfile: Path) -> str:
    """The ``contextDigest`` pulumi-docker computes for a build, and on whose change it rebuilds.

    As ``hashContext`` in pulumi/pulumi-docker provider/provider.go: the Dockerfile first, under the
    name ``Dockerfile`` and mode 0, then every file of the context (file modes included). Staged
    contexts have no .dockerignore, so nothing is excluded.
    """
    head = [("Dockerfile", 0, dockerfile.read_bytes())]
    return _accumulate([*head, *_walk(context, context)])


def content_hash(service_id: str, root: Path = ROOT) -> str:
    """The context digest the staged context of this service will have, computed from the sources.

    Paths, normalised modes and bytes only, so a checkout under umask 002 gets the digest one under
    022 gets; the ``REVISION`` label and the tag derive from it. A missing input counts as missing.
    """
    inputs = [path for path in build_inputs(service_id, root) if path.exists()]
    entries = sorted(((path.relative_to(root).as_posix(), normalised_mode(path), path.read_bytes())
                      for path in inputs), key=lambda entry: entry[0].split("/"))
    return _accumulate([("Dockerfile", 0, (root / DOCKERFILE).read_bytes()), *entries])


def stage_context(service_id: str, root: Path = ROOT) -> str:
    """Copy exactly the service's build inputs into a build context of its own; returns its relative path.

    The Docker provider rebuilds an image whenever its build context changes. With the repository
    root as context, a change to one service would rebuild (and, in prod, fail to re-push under its
    immutable tag) the other one too; a context holding only the service's own inputs cannot.
    Every copy gets its normalised mode (0644, or 0755 if executable), whatever the umask: the
    provider's context digest covers modes, so a umask must not change it.
    """
    relative = f"{CONTEXTS}/{service_id}"
    target = root / relative
    shutil.rmtree(target, ignore_errors=True)
    for path in build_inputs(service_id, root):
        if path.exists():
            destination = target / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
            os.chmod(destination, normalised_mode(path))
    # The Dockerfile copies a wheelhouse for offline builds; real builds install from the index.
    (target / "images" / "wheels").mkdir(parents=True, exist_ok=True)
    return relative


def build_args(service_id: str, version: str, revision: str, base_image: str | None = None,
               source: str | None = None) -> dict[str, str]:
    """The build arguments of a service image: each ends up in the image (base, labels)."""
    return {"SERVICE": service_id, "VERSION": version, "REVISION": revision,
            **({"BASE_IMAGE": base_image} if base_image else {}),
            **({"SOURCE": source} if source else {})}


def image_tag(version: str, service_id: str, root: Path = ROOT, args: Mapping[str, str] | None = None) -> str:
    """``<version>-<12 hex>`` over the context digest and the build arguments (the base image's digest
    among them): a new tag whenever anything that goes into the image changes, the same one otherwise.
    Immutable repositories refuse a second push under a tag, so a tag must never name two images."""
    revision = content_hash(service_id, root)
    arguments = dict(args) if args is not None else build_args(service_id, version, revision)
    fingerprint = hashlib.sha256(json.dumps({"context": revision, "args": arguments}, sort_keys=True).encode())
    return f"{version}-{fingerprint.hexdigest()[:12]}"


@dataclass(frozen=True, kw_only=True)
class ServiceImageArgs:
    """Which service, at which version, into which ECR repository."""

    service_id: str
    version: str
    repository_url: pulumi.Input[str]
    registry_id: pulumi.Input[str] | None = None
    source: str | None = None  # repository URL for the OCI source label
    base_image: str | None = None  # <name>@sha256:<digest>; None: the Dockerfile's pinned default


class ServiceImage(pulumi.ComponentResource):
    """Builds ``images/Dockerfile`` for one service and pushes it; ``repo_digest`` is what gets deployed."""

    image_name: pulumi.Output[str]
    repo_digest: pulumi.Output[str]

    def __init__(self, name: str, args: ServiceImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:ServiceImage", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        revision = content_hash(args.service_id)
        context = stage_context(args.service_id)
        arguments = build_args(args.service_id, args.version, revision, args.base_image, args.source)
        tag = image_tag(args.version, args.service_id, args=arguments)
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
                args=arguments,
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
