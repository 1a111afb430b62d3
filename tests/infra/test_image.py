"""Service images: one per service, built for linux/amd64, pushed to its own repository, deployed by digest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.config import SERVICE_IDS
from infra.image import build_inputs, content_hash, image_tag, stage_context
from infra.mocks import StackRun, run_stack

IMAGE = "docker:index/image:Image"


def _images(run: StackRun) -> dict[str, object]:
    return {image.inputs["build"]["args"]["SERVICE"]: image for image in run.of_type(IMAGE)}


def test_one_image_per_service_pushed_to_its_own_repository(stack_run: StackRun) -> None:
    images = _images(stack_run)
    assert sorted(images) == sorted(SERVICE_IDS)
    urls = stack_run.outputs["ecrRepositoryUrls"]
    for service_id, image in images.items():
        repository, tag = image.inputs["imageName"].rsplit(":", 1)
        assert repository == urls[service_id]
        assert repository.endswith(f"/data-mesh-{stack_run.stack}/{service_id}")
        assert tag == image_tag("1.0.0", service_id)
        assert image.inputs["skipPush"] is False


def test_build_uses_the_shared_dockerfile_for_amd64_with_service_args(stack_run: StackRun) -> None:
    for service_id, image in _images(stack_run).items():
        build = image.inputs["build"]
        assert build["context"] == f"build/image-contexts/{service_id}"
        assert build["dockerfile"] == f"build/image-contexts/{service_id}/images/Dockerfile"
        assert build["platform"] == "linux/amd64"
        assert build["args"] == {"SERVICE": service_id, "VERSION": "1.0.0", "REVISION": content_hash(service_id)}


def test_registry_credentials_come_from_ecr_and_stay_secret(stack_run: StackRun) -> None:
    tokens = [i for i in stack_run.invocations if i.token.startswith("aws:ecr/getAuthorizationToken")]
    assert len(tokens) == len(SERVICE_IDS)
    for image in stack_run.of_type(IMAGE):
        assert image.inputs["registry"]["server"].endswith(".dkr.ecr.eu-west-1.amazonaws.com")
        assert image.inputs["registry"]["username"] == "AWS"
        assert "registry" in image.secret_inputs


def test_exported_image_refs_are_the_pushed_digests(stack_run: StackRun) -> None:
    refs = stack_run.outputs["imageRefs"]
    assert sorted(refs) == sorted(SERVICE_IDS)
    for service_id, image in _images(stack_run).items():
        repository = image.inputs["imageName"].rsplit(":", 1)[0]
        assert re.fullmatch(re.escape(repository) + r"@sha256:[0-9a-f]{64}", refs[service_id])
    assert refs["customer-features"] != refs["customer-scoring"]


def test_image_tags_differ_between_services_but_not_between_stacks(dev: StackRun, prod: StackRun) -> None:
    tags = {run.stack: {sid: img.inputs["imageName"].rsplit(":", 1)[1] for sid, img in _images(run).items()}
            for run in (dev, prod)}
    assert tags["dev"] == tags["prod"], "the same sources must give the same tag in every stack"


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    for relative, text in {
        "images/Dockerfile": "FROM scratch\n",
        "services/apinode/apinode/app.py": "app = 1\n",
        "services/apinode/requirements.txt": "httpx==0.28.1\n",
        "services/customer-features/service.yaml": "id: customer-features\n",
        "services/customer-scoring/service.yaml": "id: customer-scoring\n",
    }.items():
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
    assert image_tag("2.3.4", "customer-features", source_tree) == \
        f"2.3.4-{content_hash('customer-features', source_tree)[:12]}"


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
