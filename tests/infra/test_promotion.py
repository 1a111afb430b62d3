"""Build once, promote by digest: prod declares no build and deploys exactly the digests dev produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import SERVICE_IDS, ConfigError
from infra.mocks import MOCK_ORGANIZATION, StackRun, committed_stack_outputs, run_stack
from infra.promotion import COPY_SCRIPT, promoted_tag, stack_reference_name

COMMAND = "command:local:Command"
IMAGE = "docker:index/image:Image"
REFERENCE = "pulumi:pulumi:StackReference"
DEV_REFERENCE = f"{MOCK_ORGANIZATION}/data-mesh/dev"


def _digest(ref: str) -> str:
    return ref.split("@", 1)[1]


def _deployment_images(run: StackRun) -> dict[str, str]:
    return {d.get("metadata.name"): d.get("spec.template.spec.containers.0.image")
            for d in run.of_type("kubernetes:apps/v1:Deployment")}


def _copies(run: StackRun) -> dict[str, dict]:
    return {c.name.removeprefix("promotion-").removesuffix("-copy"): c for c in run.of_type(COMMAND)}


def test_prod_reads_dev_through_one_stack_reference(prod: StackRun) -> None:
    (reference,) = prod.of_type(REFERENCE)
    assert reference.inputs["name"] == DEV_REFERENCE
    assert stack_reference_name("dev", "acme", "data-mesh") == "acme/data-mesh/dev"
    assert stack_reference_name("acme/data-mesh/dev", "other", "data-mesh") == "acme/data-mesh/dev"


def test_prod_deploys_exactly_the_digests_dev_produced(dev: StackRun, prod: StackRun) -> None:
    dev_refs, prod_refs = dev.outputs["imageRefs"], prod.outputs["imageRefs"]
    urls = prod.outputs["ecrRepositoryUrls"]
    for service_id in SERVICE_IDS:
        assert _digest(prod_refs[service_id]) == _digest(dev_refs[service_id])
        # ...from prod's own repository, not dev's (which dev may delete or expire).
        assert prod_refs[service_id] == f"{urls[service_id]}@{_digest(dev_refs[service_id])}"
        assert "/data-mesh-prod/" in prod_refs[service_id]
    assert _deployment_images(prod) == prod_refs


def test_each_image_is_copied_by_digest_into_prods_repository(dev: StackRun, prod: StackRun) -> None:
    copies = _copies(prod)
    assert sorted(copies) == sorted(SERVICE_IDS)
    urls = prod.outputs["ecrRepositoryUrls"]
    for service_id, copy in copies.items():
        env = copy.inputs["environment"]
        digest = _digest(dev.outputs["imageRefs"][service_id])
        assert env["SOURCE"] == dev.outputs["imageRefs"][service_id]
        assert env["DIGEST"] == digest
        assert env["TARGET"] == f"{urls[service_id]}:{promoted_tag(digest)}"
        assert copy.inputs["create"] == COPY_SCRIPT
        assert copy.inputs["triggers"] == [digest]
        # No registry password in the copy's inputs (so none in prod's state): the script logs in
        # with the deploy role's credentials at run time.
        assert not copy.secret_inputs
    assert "imageRefs" not in prod.secret_outputs


def test_each_deployment_waits_for_its_image_copy(prod: StackRun) -> None:
    """The image ref is derived from the copy's output, so Kubernetes never gets a ref whose image is
    not in prod's repository yet (ImagePullBackOff on the first promotion)."""
    copies = _copies(prod)
    for deployment in prod.of_type("kubernetes:apps/v1:Deployment"):
        service_id = deployment.get("metadata.name")
        assert copies[service_id].urn in deployment.dependencies, service_id


def test_pinned_refs_win_over_the_stack_reference(dev: StackRun) -> None:
    """How the pipeline promotes what this run's dev update produced, and how a rollback pins an
    earlier digest for one service while the other keeps following dev."""
    earlier = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/data-mesh-prod/customer-scoring@sha256:" + "e" * 64
    run = run_stack("prod", overrides={"data-mesh:promotedImageRefs": json.dumps({"customer-scoring": earlier})})
    refs = run.outputs["imageRefs"]
    assert _digest(refs["customer-scoring"]) == "sha256:" + "e" * 64
    assert _digest(refs["customer-features"]) == _digest(dev.outputs["imageRefs"]["customer-features"])
    assert _copies(run)["customer-scoring"].inputs["environment"]["SOURCE"] == earlier


def test_a_fully_pinned_prod_reads_no_other_stack(dev: StackRun) -> None:
    """A StackReference decrypts the whole referenced state, secrets included, with that stack's key
    (pulumi/pulumi#21436, "Stack Reference requires complete Decryption for non-secret Outputs"): with
    one, prod's roles would need dev's KMS key. The pipeline pins every service, so prod reads no stack."""
    pins = dev.outputs["imageRefs"]
    run = run_stack("prod", overrides={"data-mesh:promotedImageRefs": json.dumps(pins)}, stack_outputs={})
    assert run.of_type(REFERENCE) == []
    assert {sid: _digest(ref) for sid, ref in run.outputs["imageRefs"].items()} == \
        {sid: _digest(ref) for sid, ref in pins.items()}
    assert run.of_type(IMAGE) == []


@pytest.mark.parametrize("overrides, message", [
    ({"data-mesh:promotedImageRefs": json.dumps({"customer-scoring": "repo/customer-scoring:1.0.0"})},
     r"config key 'data-mesh:promotedImageRefs.customer-scoring': 'repo/customer-scoring:1.0.0' is not an image "
     r"reference by digest"),
    ({"data-mesh:promotedImageRefs": json.dumps({"customer-scorin": "x"})},
     r"config key 'data-mesh:promotedImageRefs.customer-scorin' is not a setting.*customer-scoring"),
    ({"data-mesh:promotion": json.dumps({"fromStack": "prod"})},
     r"config key 'data-mesh:promotion.fromStack': stack 'prod' cannot promote images from itself"),
    ({"data-mesh:promotion": json.dumps({"fromStack": "dev; rm -rf /"})},
     r"config key 'data-mesh:promotion.fromStack': 'dev; rm -rf /' is not a stack name"),
    ({"data-mesh:baseImage": "python@sha256:" + "0" * 64},
     r"config key 'data-mesh:baseImage': this stack promotes .* never builds.*pulumi config rm"),
])
def test_bad_promotion_settings_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_stack("prod", overrides=overrides, stack_outputs={})


def test_pinned_refs_are_refused_in_a_building_stack() -> None:
    with pytest.raises(ConfigError, match=r"config key 'data-mesh:promotedImageRefs': only applies to a stack that "
                                          r"promotes.*pulumi config rm"):
        run_stack("dev", overrides={"data-mesh:promotedImageRefs": json.dumps({"customer-scoring": "x"})})


PROBE = """
import json, sys
from infra.mocks import run_stack
from infra.promotion import PromotionError
try:
    run_stack("prod", stack_outputs={sys.argv[1]: json.loads(sys.argv[2])})
except Exception as exc:
    error = exc
    while not isinstance(error, PromotionError) and error.__cause__ is not None:
        error = error.__cause__
    print(type(error).__name__ + ": " + str(error))
    sys.exit(3)
"""


@pytest.mark.parametrize("outputs", [{}, {"imageRefs": {"customer-features": "x@sha256:" + "a" * 64}},
                                     {"imageRefs": {"customer-features": "a:1", "customer-scoring": "b:1"}}])
def test_a_dev_stack_without_usable_refs_stops_the_promotion(outputs: dict) -> None:
    # In a process of its own: a run that fails inside an apply leaves the SDK's mock runtime unable
    # to run another program in the same process (the next run waits forever).
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PROBE, DEV_REFERENCE, json.dumps(outputs)], cwd=root,
                          env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'services' / 'apinode'}"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stdout + done.stderr[-3000:]
    assert done.stdout.startswith("PromotionError: "), done.stdout
    assert "imageRefs" in done.stdout and ("promotedImageRefs" in done.stdout or "by digest" in done.stdout)


def test_the_mock_reference_is_devs_own_mocked_run(dev: StackRun) -> None:
    assert committed_stack_outputs("dev")["imageRefs"] == dev.outputs["imageRefs"]


# The copy script, run for real by bash against fake `crane` and `aws` commands that keep a
# registry in a folder. What it guards: ECR refuses a second push under an immutable tag
# (docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html), so re-promoting a
# digest prod already holds (a rollback) must not push; and a copy that changed the digest
# (a registry or tool that rewrites the manifest) must never be deployed.
FAKE_CRANE = r"""#!/bin/bash
set -eu
store="$FAKE_REGISTRY"
key() { printf '%s' "$1" | tr '/:@' '___'; }
case "$1" in
  auth) cat > /dev/null; echo "login $3" >> "$store/log" ;;
  digest) [ -f "$store/$(key "$2")" ] || { echo "MANIFEST_UNKNOWN" >&2; exit 1; }; cat "$store/$(key "$2")" ;;
  copy)
    echo "copy $2 $3" >> "$store/log"
    [ -f "$store/$(key "$3")" ] && { echo "ImageTagAlreadyExistsException" >&2; exit 1; }
    printf '%s' "${FAKE_REWRITE:-${2##*@}}" > "$store/$(key "$3")" ;;
esac
"""
FAKE_AWS = "#!/bin/bash\necho \"$*\" >> \"$FAKE_REGISTRY/aws\"\nprintf 'token'\n"
SOURCE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/data-mesh-dev/customer-scoring@sha256:" + "a" * 64
TARGET = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/data-mesh-prod/customer-scoring:sha256-" + "a" * 64


def _promote(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("crane", FAKE_CRANE), ("aws", FAKE_AWS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    store = tmp_path / "registry"
    store.mkdir(exist_ok=True)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_REGISTRY": str(store), "SOURCE": SOURCE,
           "TARGET": TARGET, "DIGEST": "sha256:" + "a" * 64, **extra}
    return subprocess.run(["/bin/bash", "-c", COPY_SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def _log(tmp_path: Path) -> list[str]:
    return (tmp_path / "registry" / "log").read_text().splitlines()


def test_copy_script_copies_by_digest_and_prints_only_the_digest(tmp_path: Path) -> None:
    done = _promote(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sha256:" + "a" * 64
    assert f"copy {SOURCE} {TARGET}" in _log(tmp_path)
    assert "ecr get-login-password --region eu-west-1" in (tmp_path / "registry" / "aws").read_text()


def test_copy_script_does_not_push_again_what_prod_already_holds(tmp_path: Path) -> None:
    assert _promote(tmp_path).returncode == 0
    again = _promote(tmp_path)
    assert again.returncode == 0, again.stderr
    assert [line for line in _log(tmp_path) if line.startswith("copy")] == [f"copy {SOURCE} {TARGET}"]


def test_copy_script_refuses_a_copy_whose_digest_changed(tmp_path: Path) -> None:
    done = _promote(tmp_path, FAKE_REWRITE="sha256:" + "b" * 64)
    assert done.returncode != 0
    assert done.stdout == ""
    assert "not promoting it" in done.stderr
