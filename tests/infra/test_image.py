"""Service images: one per service, built (in dev only) for linux/amd64, pushed to its own repository,
deployed by digest, under a tag that covers everything that goes into the image."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from infra.config import SERVICE_IDS
from infra.image import ROOT, build_args, build_inputs, content_hash, context_digest, image_tag, stage_context
from infra.mocks import StackRun, run_stack

IMAGE = "docker:index/image:Image"


def _images(run: StackRun) -> dict[str, object]:
    return {image.inputs["build"]["args"]["SERVICE"]: image for image in run.of_type(IMAGE)}


def _base_image(stack: str) -> str:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["data-mesh:baseImage"]


def test_one_image_per_service_pushed_to_its_own_repository(dev: StackRun) -> None:
    images = _images(dev)
    assert sorted(images) == sorted(SERVICE_IDS)
    urls = dev.outputs["ecrRepositoryUrls"]
    for service_id, image in images.items():
        repository, tag = image.inputs["imageName"].rsplit(":", 1)
        assert repository == urls[service_id]
        assert repository.endswith(f"/data-mesh-dev/{service_id}")
        assert tag == image_tag("1.0.0", service_id, args=image.inputs["build"]["args"])
        assert image.inputs["skipPush"] is False


def test_build_uses_the_shared_dockerfile_for_amd64_with_service_args(dev: StackRun) -> None:
    for service_id, image in _images(dev).items():
        build = image.inputs["build"]
        assert build["context"] == f"build/image-contexts/{service_id}"
        assert build["dockerfile"] == f"build/image-contexts/{service_id}/images/Dockerfile"
        assert build["platform"] == "linux/amd64"
        assert build["args"] == {"SERVICE": service_id, "VERSION": "1.0.0", "REVISION": content_hash(service_id),
                                 "BASE_IMAGE": _base_image("dev")}


def test_registry_credentials_come_from_ecr_and_stay_secret(dev: StackRun) -> None:
    tokens = [i for i in dev.invocations if i.token.startswith("aws:ecr/getAuthorizationToken")]
    assert len(tokens) == len(SERVICE_IDS)
    for image in dev.of_type(IMAGE):
        assert image.inputs["registry"]["server"].endswith(".dkr.ecr.eu-west-1.amazonaws.com")
        assert image.inputs["registry"]["username"] == "AWS"
        assert "registry" in image.secret_inputs


def test_exported_image_refs_are_the_pushed_digests(dev: StackRun) -> None:
    refs = dev.outputs["imageRefs"]
    assert sorted(refs) == sorted(SERVICE_IDS)
    for service_id, image in _images(dev).items():
        repository = image.inputs["imageName"].rsplit(":", 1)[0]
        assert re.fullmatch(re.escape(repository) + r"@sha256:[0-9a-f]{64}", refs[service_id])
    assert refs["customer-features"] != refs["customer-scoring"]


def test_only_the_building_stack_declares_image_builds(dev: StackRun, prod: StackRun) -> None:
    assert len(dev.of_type(IMAGE)) == len(SERVICE_IDS)
    assert prod.of_type(IMAGE) == [], "prod promotes dev's digests and never builds"


def test_base_image_is_pinned_by_digest_in_the_dockerfile_and_the_building_stack() -> None:
    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", default), default
    # One pin: the stack passes the same base the Dockerfile defaults to, so a hand build matches.
    assert _base_image("dev") == default
    assert "data-mesh:baseImage" not in yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]


SOURCES = {
    "images/Dockerfile": "FROM scratch\n",
    "services/apinode/apinode/app.py": "app = 1\n",
    "services/apinode/requirements.txt": "httpx==0.28.1\n",
    "services/customer-features/service.yaml": "id: customer-features\n",
    "services/customer-scoring/service.yaml": "id: customer-scoring\n",
}


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    for relative, text in SOURCES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    return tmp_path


def test_content_hash_changes_only_with_the_service_own_inputs(source_tree: Path) -> None:
    before = {sid: content_hash(sid, source_tree) for sid in SERVICE_IDS}
    (source_tree / "services/customer-scoring/service.yaml").write_text("id: customer-scoring\nv: 2\n")
    after = {sid: content_hash(sid, source_tree) for sid in SERVICE_IDS}
    assert after["customer-features"] == before["customer-features"]
    assert after["customer-scoring"] != before["customer-scoring"]


@pytest.mark.parametrize("changed", ["images/Dockerfile", "services/apinode/apinode/app.py",
                                     "services/apinode/requirements.txt"])
def test_content_hash_changes_for_both_when_shared_inputs_change(source_tree: Path, changed: str) -> None:
    before = {sid: content_hash(sid, source_tree) for sid in SERVICE_IDS}
    (source_tree / changed).write_text((source_tree / changed).read_text() + "# changed\n")
    assert all(content_hash(sid, source_tree) != before[sid] for sid in SERVICE_IDS)


def test_content_hash_ignores_bytecode_caches(source_tree: Path) -> None:
    before = content_hash("customer-features", source_tree)
    cache = source_tree / "services/apinode/apinode/__pycache__"
    cache.mkdir()
    (cache / "app.cpython-311.pyc").write_bytes(b"\0junk")
    assert content_hash("customer-features", source_tree) == before


def test_tag_is_version_then_content(source_tree: Path) -> None:
    tag = image_tag("2.3.4", "customer-features", source_tree)
    assert re.fullmatch(r"2\.3\.4-[0-9a-f]{12}", tag)
    (source_tree / "services/customer-features/service.yaml").write_text("id: customer-features\nv: 2\n")
    assert image_tag("2.3.4", "customer-features", source_tree) != tag


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_each_image_builds_from_a_context_holding_only_its_own_inputs(source_tree: Path) -> None:
    contexts = {sid: source_tree / stage_context(sid, source_tree) for sid in SERVICE_IDS}
    features = _tree(contexts["customer-features"])
    assert set(features) == {p.relative_to(source_tree).as_posix() for p in build_inputs("customer-features",
                                                                                          source_tree)}
    assert not any("customer-scoring" in path for path in features)
    assert (contexts["customer-features"] / "images" / "wheels").is_dir()
    # A change to the other service leaves this context byte for byte as it was: no rebuild, no re-push.
    (source_tree / "services/customer-scoring/service.yaml").write_text("id: customer-scoring\nv: 2\n")
    (source_tree / "services/customer-scoring/model.onnx").write_bytes(b"new")
    assert _tree(source_tree / stage_context("customer-features", source_tree)) == features
    assert "services/customer-scoring/model.onnx" in _tree(source_tree / stage_context("customer-scoring",
                                                                                      source_tree))


def test_staging_again_drops_files_deleted_from_the_service(source_tree: Path) -> None:
    extra = source_tree / "services/customer-features/data.npz"
    extra.write_bytes(b"rows")
    assert "services/customer-features/data.npz" in _tree(source_tree / stage_context("customer-features",
                                                                                     source_tree))
    extra.unlink()
    assert "services/customer-features/data.npz" not in _tree(
        source_tree / stage_context("customer-features", source_tree))


def test_source_label_comes_from_the_stack_setting_and_is_absent_by_default(dev: StackRun) -> None:
    assert all("SOURCE" not in image.inputs["build"]["args"] for image in dev.of_type(IMAGE))
    url = "https://github.com/acme/data-mesh"
    run = run_stack("dev", overrides={"data-mesh:sourceRepository": url})
    assert {sid: image.inputs["build"]["args"]["SOURCE"] for sid, image in _images(run).items()} == \
        {sid: url for sid in SERVICE_IDS}


def _checkout(root: Path, umask: int) -> tuple[str, str, str, dict[str, int]]:
    """Write the sources and stage the context as a checkout and a `pulumi up` under ``umask`` would."""
    previous = os.umask(umask)
    try:
        for relative, text in SOURCES.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        context = root / stage_context("customer-features", root)
    finally:
        os.umask(previous)
    modes = {p.relative_to(context).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in context.rglob("*") if p.is_file()}
    args = build_args("customer-features", "1.0.0", content_hash("customer-features", root), "base@sha256:" + "0" * 64)
    return (context_digest(context, context / "images" / "Dockerfile"), content_hash("customer-features", root),
            image_tag("1.0.0", "customer-features", root, args), modes)


def test_staging_under_umask_022_or_002_gives_the_same_context_digest_and_tag(tmp_path: Path) -> None:
    """The umask-dependent copy modes (0644 vs 0664) changed pulumi-docker's context digest, which hashes
    each file's mode (pulumi/pulumi-docker provider/provider.go, hashContext/hashPath): a rebuild under
    the same tag, refused by an immutable repository. Staged files get 0644 whatever the umask."""
    strict = _checkout(tmp_path / "umask-022", 0o022)
    shared = _checkout(tmp_path / "umask-002", 0o002)
    assert set(strict[3].values()) == {0o644}
    assert shared[3] == strict[3]
    assert shared[0] == strict[0], "context digest depends on the umask"
    assert shared[1:3] == strict[1:3]
    # The digest the tag is computed from is the digest the provider will compute on the staged context.
    assert strict[0] == strict[1]


def test_an_executable_input_stays_executable_but_normalised(source_tree: Path) -> None:
    script = source_tree / "services/customer-features/run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o775)
    context = source_tree / stage_context("customer-features", source_tree)
    assert stat.S_IMODE((context / "services/customer-features/run.sh").stat().st_mode) == 0o755
    before = content_hash("customer-features", source_tree)
    script.chmod(0o644)
    assert content_hash("customer-features", source_tree) != before, "a mode change reaches the image"


def test_context_digest_is_pulumi_dockers_algorithm(tmp_path: Path) -> None:
    """Byte layout of hashContext (pulumi/pulumi-docker provider/provider.go): the Dockerfile first as
    "Dockerfile" with mode 0, then each file in walk order: slash path, Go mode string, SHA-256, NUL."""
    (tmp_path / "b").mkdir()
    (tmp_path / "Dockerfile").write_bytes(b"FROM scratch\n")
    (tmp_path / "b" / "x").write_bytes(b"x")
    (tmp_path / "a-b").write_bytes(b"y")
    for path in (tmp_path / "Dockerfile", tmp_path / "b" / "x", tmp_path / "a-b"):
        path.chmod(0o644)
    (tmp_path / "b" / "x").chmod(0o755)

    def entry(name: str, mode: str, data: bytes) -> bytes:
        return name.encode() + mode.encode() + hashlib.sha256(data).digest() + b"\0"

    expected = hashlib.sha256(
        entry("Dockerfile", "----------", b"FROM scratch\n") + entry("Dockerfile", "-rw-r--r--", b"FROM scratch\n")
        + entry("a-b", "-rw-r--r--", b"y") + entry("b/x", "-rwxr-xr-x", b"x")).hexdigest()
    assert context_digest(tmp_path, tmp_path / "Dockerfile") == expected
    # As the provider's TestHashFilemodeMatters: a chmod alone changes the digest.
    (tmp_path / "a-b").chmod(0o664)
    assert context_digest(tmp_path, tmp_path / "Dockerfile") != expected


def test_a_changed_build_argument_changes_the_tag(source_tree: Path) -> None:
    revision = content_hash("customer-features", source_tree)
    base = build_args("customer-features", "1.0.0", revision, "python@sha256:" + "1" * 64)
    tag = image_tag("1.0.0", "customer-features", source_tree, base)
    assert image_tag("1.0.0", "customer-features", source_tree, dict(base)) == tag
    for changed in ({"SOURCE": "https://github.com/acme/data-mesh"}, {"BASE_IMAGE": "python@sha256:" + "2" * 64}):
        assert image_tag("1.0.0", "customer-features", source_tree, {**base, **changed}) != tag, changed
    assert image_tag("1.0.1", "customer-features", source_tree, base).startswith("1.0.1-")


def test_the_committed_contexts_digest_equals_the_revision_label(dev: StackRun) -> None:
    for service_id, image in _images(dev).items():
        context = ROOT / image.inputs["build"]["context"]
        assert context_digest(context, ROOT / image.inputs["build"]["dockerfile"]) == \
            image.inputs["build"]["args"]["REVISION"]


def test_a_base_image_by_tag_alone_is_refused() -> None:
    from infra.config import ConfigError

    with pytest.raises(ConfigError, match=r"config key 'data-mesh:baseImage': 'python:3.11-slim-bookworm' is not "
                                          r"pinned by digest.*pulumi config set --path 'data-mesh:baseImage'"):
        run_stack("dev", overrides={"data-mesh:baseImage": "python:3.11-slim-bookworm"})
    with pytest.raises(ConfigError, match="config key 'data-mesh:baseImage': is required"):
        run_stack("dev", overrides={"data-mesh:baseImage": None})
